import QED
import Synchronization

/// A `Disk` in memory for the server tests: every operation can be made to fail with a chosen error,
/// and ``cached`` says whether small reads are answered on the event loop (`readIfCached`) or go to
/// the executor.
final class MemoryDisk: Disk {
    let virtualSize: UInt64
    let isReadOnly: Bool
    let cached: Bool
    var format: DiskFormat { .raw }
    var path: String { "memory" }
    var clusterSize: UInt64? { nil }
    var isDirty: Bool { false }
    var backing: (any Disk)? { nil }
    var backingFile: BackingFileReference? { nil }

    func check(repair: Bool) throws -> CheckReport {
        throw QEDError(.unsupported, "the memory disk has no metadata to check")
    }

    /// Guest bytes; the lock makes the disk usable from any thread (tests run executor work on theirs).
    private let bytes: Mutex<[UInt8]>
    /// The error every operation throws while set; guarded by its lock.
    private let failure = Mutex<QEDError?>(nil)

    init(size: Int, readOnly: Bool = false, cached: Bool = false) {
        self.virtualSize = UInt64(size)
        self.isReadOnly = readOnly
        self.cached = cached
        self.bytes = Mutex([UInt8](repeating: 0, count: size))
    }

    /// Makes every operation fail with `error` (nil: succeed again).
    func fail(with error: QEDError?) { self.failure.withLock { $0 = error } }

    /// A copy of `count` guest bytes at `offset`.
    func contents(at offset: Int, count: Int) -> [UInt8] {
        self.bytes.withLock { Array($0[offset..<offset + count]) }
    }

    /// Fills `count` bytes at `offset` with `value`, bypassing the failure.
    func fill(_ value: UInt8, at offset: Int, count: Int) {
        self.bytes.withLock { bytes in
            for index in offset..<offset + count { bytes[index] = value }
        }
    }

    private func check() throws {
        if let error = self.failure.withLock({ $0 }) { throw error }
    }

    /// The guest range as array indices; requests are validated before they reach the disk.
    private func range(_ offset: UInt64, _ count: Int) throws -> Range<Int> {
        guard offset <= self.virtualSize, UInt64(count) <= self.virtualSize - offset else {
            throw QEDError(.outOfRange, "range past the end of the memory disk", value: offset)
        }
        return Int(offset)..<Int(offset) + count
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try self.check()
        let range = try self.range(offset, buffer.count)
        self.bytes.withLock { bytes in
            bytes[range].withUnsafeBytes { buffer.copyMemory(from: $0) }
        }
    }

    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        guard self.cached, (try? self.read(into: buffer, at: offset)) != nil else { return false }
        return true
    }

    func write(_ source: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try self.check()
        let range = try self.range(offset, source.count)
        self.bytes.withLock { bytes in
            bytes.replaceSubrange(range, with: source)
        }
    }

    func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws {
        try self.check()
        let range = try self.range(offset, Int(clamping: length))
        self.bytes.withLock { bytes in
            bytes.replaceSubrange(range, with: repeatElement(0, count: range.count))
        }
    }

    func discard(at offset: UInt64, length: UInt64) throws { try self.check() }
    func flush() throws { try self.check() }
    func resize(to newSize: UInt64) throws { throw QEDError(.unsupported, "the memory disk cannot resize") }
    func allocatedBytes() -> UInt64? { nil }

    func extents(at offset: UInt64, length: UInt64) throws -> [Extent] {
        try self.check()
        return [
            Extent(offset: offset, length: length, depth: 0, present: true, zero: false, data: true, hostOffset: offset)
        ]
    }

    func close() throws {}
}
