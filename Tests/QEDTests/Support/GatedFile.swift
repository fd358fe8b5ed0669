import Foundation
import QED

/// A ``BlockFile`` over another one that holds the first write to one byte offset until the test
/// releases it, so a test can freeze a request in the middle of a metadata update (say, just as it
/// writes an L1 or L2 sector) while other requests run. Every other call goes straight through.
final class GatedFile: BlockFile, @unchecked Sendable {
    let base: any BlockFile
    var path: String { base.path }
    var isWritable: Bool { base.isWritable }
    /// Guards `gatedOffset`, `holding` and `released`.
    private let cond = NSCondition()
    /// The file offset (bytes) of the next write to hold; nil when not armed.
    private var gatedOffset: UInt64?
    private var holding = false
    private var released = false

    /// Passes everything to `base` until ``arm(holdingWriteAt:)`` is called.
    init(_ base: any BlockFile) {
        self.base = base
    }

    /// From now on, the next write at file offset `offset` (bytes) waits for ``release()``.
    func arm(holdingWriteAt offset: UInt64) {
        cond.lock()
        gatedOffset = offset
        cond.unlock()
    }

    /// Whether a write is being held now (it has not reached `base` yet).
    var isHolding: Bool {
        cond.lock()
        defer { cond.unlock() }
        return holding
    }

    /// Lets the held write (and any later one) through.
    func release() {
        cond.lock()
        released = true
        cond.broadcast()
        cond.unlock()
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        cond.lock()
        if offset == gatedOffset && !released {
            gatedOffset = nil
            holding = true
            // Bounded: a test that never releases fails instead of hanging.
            let deadline = Date().addingTimeInterval(60)
            while !released && cond.wait(until: deadline) {}
            holding = false
        }
        cond.unlock()
        try base.write(bytes, at: offset)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        try base.read(into: buffer, at: offset)
    }
    func sync() throws { try base.sync() }
    func length() throws -> UInt64 { try base.length() }
    func setLength(_ length: UInt64) throws { try base.setLength(length) }
    func punchHole(at offset: UInt64, length: UInt64) throws { try base.punchHole(at: offset, length: length) }
}
