import Foundation
import QED
import Synchronization
import TestSupport

/// A ``BlockFile`` that models a disk with a volatile write cache, so tests can "pull the plug".
///
/// It keeps the durable bytes (what survives a power cut) and the list of operations issued since
/// the last ``sync()`` — writes, `setLength`, `punchHole`, in issue order. Reads see the volatile
/// view: durable bytes with every pending operation applied. `sync()` makes everything pending
/// durable. ``crash(mode:rng:)`` decides which pending operations reached the platter:
///
/// - ``CrashMode/loseAll``: none (the durable bytes as of the last sync);
/// - ``CrashMode/keepAll``: all (the volatile view);
/// - ``CrashMode/keepSubset(_:)``: each operation independently, with the given probability;
/// - ``CrashMode/torn(_:)``: like `keepSubset`, but a write is split at 512-byte file sector
///   boundaries and each piece is kept or lost on its own (a write inside one sector is atomic).
///
/// Kept operations are applied in their original order over the durable bytes, so a later write
/// wins over an earlier one to the same bytes only when both were kept. `setLength` and
/// `punchHole` are kept or lost as units.
///
/// After a crash (or an automatic cut, ``cut(afterMutations:)``) the file is frozen: every later
/// mutation throws an I/O error and changes nothing, so an image object dropped after the cut
/// (its deinit closes and syncs) cannot alter the result. Reads keep serving the volatile view.
///
/// ``writeDurably(_:at:)`` is a ranged sync: the write and the length become durable, other
/// pending operations stay pending.
///
/// Mutations are counted (write, durable write, sync, setLength, punchHole);
/// ``failMutation(after:)`` makes one future mutation throw without freezing, to inject a single
/// I/O error. ``failSyncs(_:)`` makes the next syncs fail the way a disk that cannot write back
/// does: each failed sync throws EIO and drops the pending operations (the kernel may drop the
/// dirty pages it could not write), so the volatile view falls back to the durable bytes.
final class FaultInjectingFile: BlockFile {
    enum CrashMode: Sendable, Equatable, CustomStringConvertible {
        case loseAll
        case keepAll
        case keepSubset(Double)
        case torn(Double)

        var description: String {
            switch self {
            case .loseAll: "lose-all"
            case .keepAll: "keep-all"
            case .keepSubset(let p): "subset(\(p))"
            case .torn(let p): "torn(\(p))"
            }
        }

        /// A random mode (with a random keep probability for the partial ones).
        static func random(using rng: inout ModelRNG) -> CrashMode {
            let p = [0.2, 0.5, 0.8][Int(rng.next() % 3)]
            switch rng.next() % 6 {
            case 0: return .loseAll
            case 1: return .keepAll
            case 2, 3: return .keepSubset(p)
            default: return .torn(p)
            }
        }
    }

    enum Operation: Sendable {
        case write(offset: UInt64, bytes: [UInt8])
        case setLength(UInt64)
        case punchHole(offset: UInt64, length: UInt64)
    }

    private struct State {
        var durable: [UInt8]
        var volatile: [UInt8]
        var pending: [Operation] = []
        var frozen = false
        var mutations = 0
        /// Freeze (and throw) when `mutations` reaches this value.
        var cutAt: Int?
        /// Throw once (without freezing) when `mutations` reaches this value.
        var failAt: Int?
        /// How many more syncs fail (dropping the pending operations).
        var failingSyncs = 0
        /// How many syncs were attempted, failed ones included.
        var syncs = 0
        /// How many durable (ranged-sync) writes were attempted, failed ones included.
        var durableWrites = 0
    }

    let path: String
    let isWritable = true
    private let state: Mutex<State>

    /// A file whose durable and volatile content is `contents`.
    init(_ contents: [UInt8] = [], path: String = "fault-injecting") {
        self.path = path
        self.state = Mutex(State(durable: contents, volatile: contents))
    }

    // MARK: Inspection and control

    /// How many mutating calls (write, durable write, sync, setLength, punchHole) have been made.
    var mutationCount: Int { state.withLock { $0.mutations } }
    /// Operations issued since the last sync.
    var pendingCount: Int { state.withLock { $0.pending.count } }
    var pendingOperations: [Operation] { state.withLock { $0.pending } }
    var durableBytes: [UInt8] { state.withLock { $0.durable } }
    var volatileBytes: [UInt8] { state.withLock { $0.volatile } }
    var isFrozen: Bool { state.withLock { $0.frozen } }

    /// How many syncs were attempted (failed ones included).
    var syncCount: Int { state.withLock { $0.syncs } }
    /// How many durable writes (``writeDurably(_:at:)``) were attempted (failed ones included).
    var durableWriteCount: Int { state.withLock { $0.durableWrites } }

    /// Makes the next `count` syncs fail with EIO, each dropping the pending operations (the
    /// volatile view becomes the durable bytes again). Later syncs succeed.
    func failSyncs(_ count: Int) {
        state.withLock { $0.failingSyncs = count }
    }

    /// Lets `count` more mutations through, then freezes the file at the next one (which throws
    /// and is not performed). The pending list at that moment is what ``crash(mode:rng:)`` sees.
    func cut(afterMutations count: Int) {
        state.withLock { $0.cutAt = $0.mutations + count }
    }

    /// Makes the mutation after `count` more throw an I/O error (it is not performed); the file
    /// keeps working afterwards.
    func failMutation(after count: Int) {
        state.withLock { $0.failAt = $0.mutations + count }
    }

    /// Freezes the file and returns the bytes that survive a power cut now, under `mode`.
    func crash(mode: CrashMode, rng: inout ModelRNG) -> [UInt8] {
        let (durable, pending) = state.withLock { s -> ([UInt8], [Operation]) in
            s.frozen = true
            return (s.durable, s.pending)
        }
        return Self.survivor(durable: durable, pending: pending, mode: mode, rng: &rng)
    }

    /// The bytes after applying the operations `mode` keeps from `pending` to `durable`.
    static func survivor(
        durable: [UInt8], pending: [Operation], mode: CrashMode,
        rng: inout ModelRNG
    ) -> [UInt8] {
        var out = durable
        for op in pending {
            switch mode {
            case .loseAll:
                return durable
            case .keepAll:
                apply(op, to: &out)
            case .keepSubset(let p):
                if rng.chance(p) { apply(op, to: &out) }
            case .torn(let p):
                guard case .write(let offset, let bytes) = op else {
                    if rng.chance(p) { apply(op, to: &out) }
                    continue
                }
                var start = 0
                while start < bytes.count {
                    let sectorEnd = (offset + UInt64(start)) / 512 * 512 + 512
                    let n = min(bytes.count - start, Int(sectorEnd - (offset + UInt64(start))))
                    if rng.chance(p) {
                        writeBytes(bytes, from: start, count: n, at: offset + UInt64(start), to: &out)
                    }
                    start += n
                }
            }
        }
        return out
    }

    static func apply(_ op: Operation, to bytes: inout [UInt8]) {
        switch op {
        case .write(let offset, let data):
            writeBytes(data, from: 0, count: data.count, at: offset, to: &bytes)
        case .setLength(let length):
            ModelKit.resize(&bytes, to: Int(length))
        case .punchHole(let offset, let length):
            let start = min(Int(clamping: offset), bytes.count)
            let end = min(Int(clamping: offset &+ length), bytes.count)
            if start < end {
                bytes.withUnsafeMutableBytes { raw in
                    _ = memset(raw.baseAddress! + start, 0, end - start)
                }
            }
        }
    }

    private static func writeBytes(_ data: [UInt8], from: Int, count: Int, at offset: UInt64, to bytes: inout [UInt8]) {
        let start = Int(offset)
        let end = start + count
        if bytes.count < end { ModelKit.resize(&bytes, to: end) }
        bytes.withUnsafeMutableBytes { dst in
            data.withUnsafeBytes { src in
                UnsafeMutableRawBufferPointer(rebasing: dst[start..<end])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: src[from..<from + count]))
            }
        }
    }

    // MARK: BlockFile

    /// Counts a mutation; throws when frozen, at the cut, or at an injected failure.
    private func admit(_ s: inout State, _ what: String) throws {
        if s.frozen { throw QEDError(.io, "\(what) after the crash: the device is gone", path: path, errno: 5) }
        defer { s.mutations += 1 }
        if let cut = s.cutAt, s.mutations >= cut {
            s.frozen = true
            throw QEDError(.io, "\(what) at the cut: the power went out", path: path, errno: 5)
        }
        if let fail = s.failAt, s.mutations == fail {
            s.failAt = nil
            throw QEDError(.io, "\(what): injected I/O error", path: path, errno: 5)
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        state.withLock { s in
            guard offset < UInt64(s.volatile.count) else { return 0 }
            let start = Int(offset)
            let n = min(buffer.count, s.volatile.count - start)
            s.volatile.withUnsafeBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[start..<start + n]))
            }
            return n
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let data = [UInt8](unsafeUninitializedCapacity: bytes.count) { buffer, initialized in
            if !bytes.isEmpty { memcpy(buffer.baseAddress!, bytes.baseAddress!, bytes.count) }
            initialized = bytes.count
        }
        try state.withLock { s in
            try admit(&s, "write")
            let op = Operation.write(offset: offset, bytes: data)
            Self.apply(op, to: &s.volatile)
            s.pending.append(op)
        }
    }

    /// While ``failSyncs(_:)`` is in effect: uses up one failure, drops the pending operations (the
    /// volatile view falls back to the durable bytes) and throws EIO.
    private func failWriteBackIfInjected(_ s: inout State, _ what: String) throws {
        guard s.failingSyncs > 0 else { return }
        s.failingSyncs -= 1
        s.pending.removeAll()
        s.volatile = s.durable
        throw QEDError(.io, "\(what): injected write-back failure", path: path, errno: 5)
    }

    func sync() throws {
        try state.withLock { s in
            try admit(&s, "sync")
            s.syncs += 1
            try failWriteBackIfInjected(&s, "sync")
            for op in s.pending { Self.apply(op, to: &s.durable) }
            s.pending.removeAll()
        }
    }

    /// A ranged `fdatasync` (`RWF_DSYNC`): the write and the file's current length become durable;
    /// the other pending operations stay pending, so a crash can still lose them. What a disk could
    /// not keep apart from it is settled first: a pending punched hole or shrinking `setLength`, and
    /// everything issued before it, becomes durable (replayed after the write, in issue order, it
    /// would undo the write); the remaining `setLength`s only grow the file, which the durable
    /// length now covers; and the written range is cut out of the pending writes, which are older.
    /// Fails like ``sync()`` while ``failSyncs(_:)`` is in effect (the write is lost with the rest).
    func writeDurably(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let data = [UInt8](bytes)
        try state.withLock { s in
            try admit(&s, "durable write")
            s.durableWrites += 1
            try failWriteBackIfInjected(&s, "durable write")
            let op = Operation.write(offset: offset, bytes: data)
            Self.apply(op, to: &s.volatile)
            if let last = Self.lastUnseparable(s.pending, durableLength: s.durable.count) {
                for earlier in s.pending[...last] { Self.apply(earlier, to: &s.durable) }
                s.pending.removeFirst(last + 1)
            }
            s.pending.removeAll { if case .setLength = $0 { true } else { false } }
            ModelKit.resize(&s.durable, to: s.volatile.count)
            Self.apply(op, to: &s.durable)
            let range = offset..<(offset + UInt64(data.count))
            s.pending = s.pending.flatMap { Self.excluding(range, from: $0) }
        }
    }

    /// The index of the last pending punched hole or shrinking `setLength`, or nil.
    private static func lastUnseparable(_ pending: [Operation], durableLength: Int) -> Int? {
        var length = durableLength
        var last: Int?
        for (i, op) in pending.enumerated() {
            switch op {
            case .write(let offset, let bytes):
                length = max(length, Int(offset) + bytes.count)
            case .setLength(let newLength):
                if Int(newLength) < length { last = i }
                length = Int(newLength)
            case .punchHole:
                last = i
            }
        }
        return last
    }

    /// `op` without the bytes it writes inside `range` (zero, one or two writes); other kinds as
    /// they are.
    private static func excluding(_ range: Range<UInt64>, from op: Operation) -> [Operation] {
        guard case .write(let offset, let bytes) = op else { return [op] }
        let end = offset + UInt64(bytes.count)
        guard range.lowerBound < end, offset < range.upperBound else { return [op] }
        var out: [Operation] = []
        if offset < range.lowerBound {
            out.append(.write(offset: offset, bytes: Array(bytes[..<Int(range.lowerBound - offset)])))
        }
        if range.upperBound < end {
            out.append(.write(offset: range.upperBound, bytes: Array(bytes[Int(range.upperBound - offset)...])))
        }
        return out
    }

    func length() throws -> UInt64 { state.withLock { UInt64($0.volatile.count) } }

    func setLength(_ length: UInt64) throws {
        guard length <= 1 << 34 else {
            throw QEDError(.noSpace, "fault-injecting file cannot hold \(length) bytes", value: length, path: path)
        }
        try state.withLock { s in
            try admit(&s, "setLength")
            let op = Operation.setLength(length)
            Self.apply(op, to: &s.volatile)
            s.pending.append(op)
        }
    }

    func punchHole(at offset: UInt64, length: UInt64) throws {
        try state.withLock { s in
            try admit(&s, "punchHole")
            let op = Operation.punchHole(offset: offset, length: length)
            Self.apply(op, to: &s.volatile)
            s.pending.append(op)
        }
    }
}
