import QED
import Synchronization

/// What a byte of a ``SparseDisk`` is.
enum SparseState: Hashable, Sendable {
    /// Never written, or zeroed with unmap: `base:allocation` HOLE|ZERO (3).
    case hole
    /// Zeroed without unmap: allocated, reads as zeroes, ZERO (2).
    case zero
    /// Written with this byte value: data, flags 0.
    case data(UInt8)

    /// The `base:allocation` status the server should report for it.
    var allocationFlags: UInt64 {
        switch self {
        case .hole: return 3
        case .zero: return 2
        case .data: return 0
        }
    }
}

/// A large `Disk` held as byte ranges, not bytes, so NBD tests can cover exports of many GiB: each range
/// is a hole, allocated zeroes, or data of one repeated byte value. Writes must be of one byte value (the
/// tests write uniform buffers). Extents are reported at byte granularity, one per stored range, so what
/// the server answers can be compared exactly with a model.
final class SparseDisk: Disk {
    let virtualSize: UInt64
    var isReadOnly: Bool { false }
    var format: DiskFormat { .raw }
    var path: String { "sparse-memory" }
    var clusterSize: UInt64? { nil }
    var isDirty: Bool { false }
    var backing: (any Disk)? { nil }
    var backingFile: BackingFileReference? { nil }

    /// Non-overlapping `[start, end)` ranges that are not holes, sorted by start; guarded by its lock
    /// (tests run executor work on their own thread).
    private let ranges = Mutex<[(start: UInt64, end: UInt64, state: SparseState)]>([])

    init(size: UInt64) { self.virtualSize = size }

    func check(repair: Bool) throws -> CheckReport {
        throw QEDError(.unsupported, "the sparse disk has no metadata to check")
    }

    private func bounds(_ offset: UInt64, _ length: UInt64) throws -> UInt64 {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= self.virtualSize else {
            throw QEDError(.outOfRange, "range past the end of the sparse disk", value: offset)
        }
        return end
    }

    /// Sets `[start, end)` to `state`.
    private func set(_ start: UInt64, _ end: UInt64, _ state: SparseState) {
        guard start < end else { return }
        self.ranges.withLock { ranges in
            var kept: [(start: UInt64, end: UInt64, state: SparseState)] = []
            for range in ranges {
                if range.end <= start || range.start >= end {
                    kept.append(range)
                    continue
                }
                if range.start < start { kept.append((range.start, start, range.state)) }
                if range.end > end { kept.append((end, range.end, range.state)) }
            }
            if state != .hole { kept.append((start, end, state)) }
            ranges = kept.sorted { $0.start < $1.start }
        }
    }

    /// The runs covering `[offset, offset + length)`, holes included, in order.
    func runs(at offset: UInt64, length: UInt64) -> [(start: UInt64, end: UInt64, state: SparseState)] {
        let end = offset + length
        var runs: [(start: UInt64, end: UInt64, state: SparseState)] = []
        var position = offset
        for range in self.ranges.withLock({ $0 }) where range.end > offset && range.start < end {
            let start = max(range.start, offset)
            if start > position { runs.append((position, start, .hole)) }
            let stop = min(range.end, end)
            runs.append((start, stop, range.state))
            position = stop
        }
        if position < end { runs.append((position, end, .hole)) }
        return runs
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        let end = try self.bounds(offset, UInt64(buffer.count))
        for run in self.runs(at: offset, length: end - offset) {
            let value: UInt8
            if case .data(let byte) = run.state { value = byte } else { value = 0 }
            let from = Int(run.start - offset)
            let to = Int(run.end - offset)
            UnsafeMutableRawBufferPointer(rebasing: buffer[from..<to]).initializeMemory(
                as: UInt8.self, repeating: value)
        }
    }

    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool { false }

    func write(_ source: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let end = try self.bounds(offset, UInt64(source.count))
        guard let first = source.first else { return }
        guard source.allSatisfy({ $0 == first }) else {
            throw QEDError(.unsupported, "the sparse disk stores only writes of one repeated byte")
        }
        self.set(offset, end, .data(first))
    }

    func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws {
        let end = try self.bounds(offset, length)
        self.set(offset, end, unmap ? .hole : .zero)
    }

    func discard(at offset: UInt64, length: UInt64) throws {
        let end = try self.bounds(offset, length)
        self.set(offset, end, .hole)
    }

    func flush() throws {}
    func resize(to newSize: UInt64) throws { throw QEDError(.unsupported, "the sparse disk cannot resize") }
    func allocatedBytes() -> UInt64? { nil }

    func extents(at offset: UInt64, length: UInt64) throws -> [Extent] {
        let end = try self.bounds(offset, length)
        return self.runs(at: offset, length: end - offset).map { run in
            let data: Bool
            if case .hole = run.state { data = false } else { data = true }
            let zero = run.state == .zero || run.state == .hole
            return Extent(
                offset: run.start, length: run.end - run.start, depth: 0, present: data, zero: zero, data: data,
                hostOffset: nil)
        }
    }

    func close() throws {}
}
