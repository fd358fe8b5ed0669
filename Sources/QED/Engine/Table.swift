import CQEDSys
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One L1 or L2 table in memory: `entriesPerTable` host-endian offsets, guarded by ``lock``.
///
/// Write-through, and written before published: ``update(at:values:file:)`` writes the 512-byte
/// sectors holding the changed entries (new values over the current ones) while the lock is held,
/// and stores the new values in memory only once that write has returned. So the disk copy is
/// never older than a released table, and an entry a lookup can see has been issued to the file:
/// a request that acts on it (writes into the cluster it maps, or allocates in the L2 table it
/// links) and completes before a flush starts has that entry covered by the flush's sync.
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

    /// Tables at least this big (bytes) are read around the file's holes (``load(from:at:count:)``).
    static let sparseLoadThreshold = 4 << 20

    /// A table of `count` zero entries at `fileOffset`. The memory comes from `calloc`, so the
    /// untouched part of a big table (up to 1 GiB) costs no resident memory. Throws
    /// ``QEDError/Code/io`` (ENOMEM) when the memory cannot be had.
    init(fileOffset: UInt64, count: Int) throws(QEDError) {
        self.fileOffset = fileOffset
        guard let memory = calloc(max(1, count), MemoryLayout<UInt64>.stride) else {
            throw QEDError(
                .io, "cannot allocate \(count * 8) bytes for the table at \(fileOffset)",
                value: fileOffset, errno: ENOMEM)
        }
        entries = UnsafeMutableBufferPointer(start: memory.bindMemory(to: UInt64.self, capacity: count), count: count)
    }

    /// Reads a table of `count` entries from `file` at `fileOffset`, straight into the table's
    /// memory. Big tables skip the file's holes (they are zero entries already), so opening an
    /// image whose 1 GiB L1 table is a hole neither reads nor touches 1 GiB.
    static func load(from file: any BlockFile, at fileOffset: UInt64, count: Int) throws -> Table {
        let table = try Table(fileOffset: fileOffset, count: count)
        try table.lock.withLock { _ in
            let raw = UnsafeMutableRawBufferPointer(table.entries)
            if raw.count >= sparseLoadThreshold {
                try file.readSkippingHoles(into: raw, at: fileOffset, zeroed: true)
            } else {
                try file.readFully(into: raw, at: fileOffset)
            }
            #if !_endian(little)
            for i in table.entries.indices { table.entries[i] = UInt64(littleEndian: table.entries[i]) }
            #endif
        }
        return table
    }

    deinit { free(entries.baseAddress) }

    /// Number of entries.
    var count: Int { entries.count }

    /// Marks entry `index` unallocated in memory only (check's repair writes the table afterwards
    /// with ``writeAll(to:)``); a release store under the lock, like ``update(at:values:file:)``.
    func clear(at index: Int) {
        precondition(index >= 0 && index < entries.count)
        lock.withLock { _ in qedsys_store_release_u64(entries.baseAddress! + index, TableEntry.unallocated) }
    }

    /// Marks every entry unallocated and writes the whole table, under the lock.
    func clearAll(writingTo file: any BlockFile) throws {
        try lock.withLock { _ in
            for i in entries.indices { qedsys_store_release_u64(entries.baseAddress! + i, TableEntry.unallocated) }
            try writeSectorsLocked(entries: 0..<entries.count, file: file)
        }
    }

    /// One entry, read without the lock (atomically: the old or the new value of a concurrent
    /// ``update(at:values:file:)``, and everything written before that update when the new).
    @inline(__always)
    func entry(_ index: Int) -> UInt64 {
        precondition(index >= 0 && index < entries.count)
        return qedsys_load_acquire_u64(entries.baseAddress! + index)
    }

    /// The first index in `from..<end` whose entry is not `value`, or `end`; entries are read
    /// without the lock, as ``entry(_:)`` reads them.
    func firstIndex(unequalTo value: UInt64, from: Int, to end: Int) -> Int {
        precondition(from >= 0 && from <= end && end <= entries.count)
        return qedsys_find_unequal_u64(entries.baseAddress!, from, end, value)
    }

    /// Sets `values` starting at `index`, all under the lock: first writes the sectors that hold
    /// them (the current entries with `values` laid over), then, once the write has returned,
    /// stores them for lock-free readers. A failed write throws and leaves memory unchanged.
    ///
    /// The order matters for durability under concurrency. Were the entries stored first, another
    /// request could see one (say a new L1 link) before its sector write was issued, complete its
    /// own write through it, and have a flush that started afterwards sync the file without that
    /// sector — its flushed data would then be unreachable after a crash.
    func update(at index: Int, values: some Collection<UInt64>, file: any BlockFile) throws {
        guard index >= 0, values.count <= entries.count - min(index, entries.count) else {
            throw QEDError(
                .corrupt,
                "table update of \(values.count) entries at index \(index) overruns the \(entries.count)-entry table at \(fileOffset)",
                value: UInt64(truncatingIfNeeded: index), path: file.path)
        }
        guard !values.isEmpty else { return }
        try lock.withLock { _ in
            let changed = index..<(index + values.count)
            let sectors = sectorRange(covering: changed)
            let staged = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: sectors.count)
            defer { staged.deallocate() }
            _ = staged.initialize(from: entries[sectors])
            var i = index - sectors.lowerBound
            for v in values {
                staged[i] = v
                i += 1
            }
            try writeSectors(UnsafeBufferPointer(staged), firstEntry: sectors.lowerBound, file: file)
            i = index
            for v in values {
                qedsys_store_release_u64(entries.baseAddress! + i, v)
                i += 1
            }
        }
    }

    /// Writes the whole table (all sectors) under the lock.
    func writeAll(to file: any BlockFile) throws {
        try lock.withLock { _ in try writeSectorsLocked(entries: 0..<entries.count, file: file) }
    }

    /// Writes the 512-byte sectors covering entry range `range`. Call with the lock held.
    private func writeSectorsLocked(entries range: Range<Int>, file: any BlockFile) throws {
        guard !range.isEmpty else { return }
        let sectors = sectorRange(covering: range)
        try writeSectors(UnsafeBufferPointer(rebasing: entries[sectors]), firstEntry: sectors.lowerBound, file: file)
    }

    /// The entries of the whole 512-byte sectors (64 entries each; the last may be short) that
    /// hold `range`.
    private func sectorRange(covering range: Range<Int>) -> Range<Int> {
        let perSector = 64  // 512 / 8
        let first = (range.lowerBound / perSector) * perSector
        let end = min(((range.upperBound + perSector - 1) / perSector) * perSector, entries.count)
        return first..<end
    }

    /// Writes `values` (host-endian) as the on-disk entries starting at entry `firstEntry`.
    private func writeSectors(_ values: UnsafeBufferPointer<UInt64>, firstEntry: Int, file: any BlockFile) throws {
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: values.count * 8, alignment: 8)
        defer { raw.deallocate() }
        TableEntry.encode(values, into: raw)
        try file.write(UnsafeRawBufferPointer(raw), at: fileOffset + UInt64(firstEntry * 8))
    }
}
