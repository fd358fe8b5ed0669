import CQEDSys
import Synchronization

/// One L1 or L2 table in memory: `entriesPerTable` host-endian offsets, guarded by ``lock``.
///
/// Write-through: every change is written to the file (the 512-byte sectors holding the changed
/// entries) while the lock is held, so the disk copy is never older than a released table.
/// Lookups read single entries without the lock (``entry(_:)``: an atomic acquire load, paired
/// with the release stores of ``update(at:values:file:)``), so the I/O path never waits for it.
/// `@unchecked Sendable`: `entries` is written only inside `lock.withLock`, and read either there
/// or atomically.
final class Table: @unchecked Sendable {
    /// Byte offset of the table in the image file.
    let fileOffset: UInt64
    /// Guards `entries`.
    let lock = Mutex(())
    /// The entries; touch only with `lock` held.
    private let entries: UnsafeMutableBufferPointer<UInt64>

    /// A table of `count` zero entries at `fileOffset`.
    init(fileOffset: UInt64, count: Int) {
        self.fileOffset = fileOffset
        entries = .allocate(capacity: count)
        entries.initialize(repeating: 0)
    }

    /// Reads a table of `count` entries from `file` at `fileOffset`.
    static func load(from file: any BlockFile, at fileOffset: UInt64, count: Int) throws -> Table {
        let table = Table(fileOffset: fileOffset, count: count)
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: count * 8, alignment: 8)
        defer { raw.deallocate() }
        try file.readFully(into: raw, at: fileOffset)
        table.lock.withLock { _ in TableEntry.decode(UnsafeRawBufferPointer(raw), into: table.entries) }
        return table
    }

    deinit { entries.deallocate() }

    /// Number of entries.
    var count: Int { entries.count }

    /// Runs `body` with the entries, under the lock.
    func withEntries<T>(_ body: (UnsafeMutableBufferPointer<UInt64>) throws -> T) rethrows -> T {
        try lock.withLock { _ in try body(entries) }
    }

    /// One entry, read without the lock (atomically: the old or the new value of a concurrent
    /// ``update(at:values:file:)``, and everything written before that update when the new).
    @inline(__always)
    func entry(_ index: Int) -> UInt64 {
        precondition(index >= 0 && index < entries.count)
        return qedsys_load_acquire_u64(entries.baseAddress! + index)
    }

    /// Sets `values` starting at `index` and writes the sectors that hold them, all under the lock.
    func update(at index: Int, values: some Collection<UInt64>, file: any BlockFile) throws {
        try lock.withLock { _ in
            var i = index
            for v in values { qedsys_store_release_u64(entries.baseAddress! + i, v); i += 1 }
            try writeSectorsLocked(entries: index..<i, file: file)
        }
    }

    /// Writes the whole table (all sectors) under the lock.
    func writeAll(to file: any BlockFile) throws {
        try lock.withLock { _ in try writeSectorsLocked(entries: 0..<entries.count, file: file) }
    }

    /// Writes the 512-byte sectors covering entry range `range`. Call with the lock held.
    private func writeSectorsLocked(entries range: Range<Int>, file: any BlockFile) throws {
        guard !range.isEmpty else { return }
        let perSector = 64  // 512 / 8
        let first = (range.lowerBound / perSector) * perSector
        let end = min(((range.upperBound + perSector - 1) / perSector) * perSector, entries.count)
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: (end - first) * 8, alignment: 8)
        defer { raw.deallocate() }
        TableEntry.encode(UnsafeBufferPointer(rebasing: entries[first..<end]), into: raw)
        try file.write(UnsafeRawBufferPointer(raw), at: fileOffset + UInt64(first * 8))
    }
}
