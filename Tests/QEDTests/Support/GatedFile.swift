import Foundation
import QED

/// A ``BlockFile`` over another one that holds one chosen call until the test releases it, so a
/// test can freeze a request at a known point (say, just as it writes an L1 or L2 sector, or reads
/// guest data) while other requests or exclusive operations run. It also counts `close` calls.
/// Every other call goes straight through.
final class GatedFile: BlockFile, @unchecked Sendable {
    /// The call to hold.
    enum Gate {
        /// The next write at this file offset (bytes).
        case writeAt(UInt64)
        /// The next read at or after this file offset (bytes).
        case readAtOrAfter(UInt64)
    }

    let base: any BlockFile
    var path: String { base.path }
    var isWritable: Bool { base.isWritable }
    /// Guards `armed`, `holding`, `released` and `closes`.
    private let cond = NSCondition()
    private var armed: Gate?
    private var holding = false
    private var released = false
    private var closes = 0

    /// Passes everything to `base` until ``arm(_:)`` is called.
    init(_ base: any BlockFile) {
        self.base = base
    }

    /// From now on, the call `gate` names waits for ``release()``.
    func arm(_ gate: Gate) {
        cond.lock()
        armed = gate
        cond.unlock()
    }

    /// From now on, the next write at file offset `offset` (bytes) waits for ``release()``.
    func arm(holdingWriteAt offset: UInt64) { arm(.writeAt(offset)) }

    /// Whether a call is being held now (it has not reached `base` yet).
    var isHolding: Bool {
        cond.lock()
        defer { cond.unlock() }
        return holding
    }

    /// How many times `close` was called.
    var closeCount: Int {
        cond.lock()
        defer { cond.unlock() }
        return closes
    }

    /// Lets the held call (and any later one) through.
    func release() {
        cond.lock()
        released = true
        cond.broadcast()
        cond.unlock()
    }

    /// Holds the caller if the armed gate matches (`matches` is asked under the lock).
    private func pass(_ matches: (Gate) -> Bool) {
        cond.lock()
        if let gate = armed, matches(gate), !released {
            armed = nil
            holding = true
            // Bounded: a test that never releases fails instead of hanging.
            let deadline = Date().addingTimeInterval(60)
            while !released && cond.wait(until: deadline) {}
            holding = false
        }
        cond.unlock()
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        pass {
            if case .writeAt(let gated) = $0 { return gated == offset }
            return false
        }
        try base.write(bytes, at: offset)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        pass {
            if case .readAtOrAfter(let from) = $0 { return offset >= from }
            return false
        }
        return try base.read(into: buffer, at: offset)
    }

    func sync() throws { try base.sync() }
    func length() throws -> UInt64 { try base.length() }
    func setLength(_ length: UInt64) throws { try base.setLength(length) }
    func punchHole(at offset: UInt64, length: UInt64) throws { try base.punchHole(at: offset, length: length) }
    func close() {
        cond.lock()
        closes += 1
        cond.unlock()
        base.close()
    }
}
