import Foundation
import QED

/// A ``BlockFile`` whose syncs follow a script, for the flush coordinator's tests: it counts
/// syncs, can hold the first one until ``releaseFirstSync()``, and fails the syncs whose 1-based
/// numbers are in `failing`. Data calls are not used by those tests and do nothing.
final class ScriptedSyncFile: BlockFile, @unchecked Sendable {
    let path = "scripted"
    let isWritable = true
    private let holdFirst: Bool
    private let failing: Set<Int>
    /// Guards `syncs` and `released`.
    private let cond = NSCondition()
    private var syncs = 0
    private var released = false

    /// Syncs numbered in `failing` throw EIO; with `holdFirst`, sync 1 waits for the release.
    init(holdFirst: Bool = false, failing: Set<Int> = []) {
        self.holdFirst = holdFirst
        self.failing = failing
    }

    /// Syncs started so far.
    var syncCount: Int {
        cond.lock()
        defer { cond.unlock() }
        return syncs
    }

    /// Lets the held first sync return.
    func releaseFirstSync() {
        cond.lock()
        released = true
        cond.broadcast()
        cond.unlock()
    }

    func sync() throws {
        cond.lock()
        syncs += 1
        let number = syncs
        if number == 1 && holdFirst {
            // Bounded: a test that forgot to release fails instead of hanging.
            let deadline = Date().addingTimeInterval(60)
            while !released && cond.wait(until: deadline) {}
        }
        cond.unlock()
        if failing.contains(number) {
            throw QEDError(.io, "sync \(number): injected failure", path: path, errno: 5)
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int { 0 }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {}
    func length() throws -> UInt64 { 0 }
    func setLength(_ length: UInt64) throws {}
    func punchHole(at offset: UInt64, length: UInt64) throws {}
}
