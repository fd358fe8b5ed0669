/// What a run of guest clusters maps to.
enum RunKind: Equatable {
    /// Stored in the image file; the host byte offset of the run's first guest byte.
    case data(host: UInt64)
    /// Zero clusters (L2 entry 1): read as zeroes, hide the backing file.
    case zero
    /// Not allocated here (L2 entry 0, or no L2 table): read the backing file or zeroes.
    case unallocated
}

/// Thrown by the cached-only paths (``Image/readIfCached(into:at:)``) where they would have to wait
/// for the disk; the caller then takes the blocking path.
struct NotCached: Error {}

/// A run found by ``Image/lookup(_:maxLength:cachedOnly:)``: `length` bytes from the requested offset that
/// all map the same way (data runs are contiguous in the file). Never crosses an L2 table.
struct Run {
    var kind: RunKind
    var length: UInt64
}

extension Image {
    /// Finds how the guest bytes starting at `pos` are mapped, returning the longest run (up to
    /// `maxLength` bytes and the end of the L2 table) with one kind. Invalid table or cluster
    /// offsets throw, naming the bad value, and are never followed. With `cachedOnly`, an L2 table
    /// that is not in the cache is not loaded: ``NotCached`` is thrown instead.
    func lookup(_ pos: UInt64, maxLength: UInt64, cachedOnly: Bool = false) throws -> Run {
        let l1Index = geometry.l1Index(pos)
        guard l1Index < UInt64(l1.count) else {
            throw QEDError(.outOfRange, "guest offset \(pos) lies past what the L1 table maps", value: pos, path: path)
        }
        let limit = min(maxLength, geometry.bytesToL2Boundary(pos))
        let tableOffset = l1.entry(Int(l1Index))
        if tableOffset == TableEntry.unallocated { return Run(kind: .unallocated, length: limit) }
        let fileSize = allocator.fileSize
        guard geometry.isValidTableOffset(tableOffset, fileSize: fileSize) else {
            throw QEDError(
                .invalidTableOffset,
                "L1 entry for guest offset \(pos) points to an invalid L2 table offset \(tableOffset)",
                value: tableOffset, path: path)
        }
        let table: Table
        if cachedOnly {
            guard let cached = cache.pinIfCached(offset: tableOffset) else { throw NotCached() }
            table = cached
        } else {
            table = try pinL2(at: tableOffset)
        }
        defer { cache.unpin(table) }
        return try scanRun(table, pos: pos, limit: limit)
    }

    /// Reads the entries without the table lock (``Table/entry(_:)``). The file size a data run is
    /// validated against is read after its entries: an allocation publishes the grown size before
    /// it writes the entries pointing there, so an entry seen implies a size that covers it.
    private func scanRun(_ table: Table, pos: UInt64, limit: UInt64) throws -> Run {
        let cs = geometry.clusterSize
        var index = Int(geometry.l2Index(pos))
        let first = table.entry(index)
        let inCluster = geometry.offsetInCluster(pos)
        var covered = cs - inCluster
        switch first {
        case TableEntry.unallocated, TableEntry.zeroCluster:
            if covered < limit {
                // Take the following equal entries, as many as `limit` needs, in one scan.
                let wanted = (limit - covered + cs - 1) / cs
                let end = index + 1 + Int(min(wanted, UInt64(table.count - index - 1)))
                covered += UInt64(table.firstIndex(unequalTo: first, from: index + 1, to: end) - index - 1) * cs
            }
            return Run(kind: first == TableEntry.zeroCluster ? .zero : .unallocated, length: min(covered, limit))
        default:
            var last = first
            while covered < limit && index + 1 < table.count {
                let next = table.entry(index + 1)
                guard next == last &+ cs else { break }
                last = next
                index += 1
                covered += cs
            }
            let fileSize = allocator.fileSize
            guard geometry.isValidClusterOffset(first, fileSize: fileSize) else {
                throw QEDError(
                    .invalidClusterOffset,
                    "L2 entry for guest offset \(pos) points to an invalid cluster offset \(first)",
                    value: first, path: path)
            }
            if last >= fileSize {
                // The run runs past the end of the file: stop before the first invalid entry (the
                // lookup that starts there reports it).
                covered = (fileSize - first) / cs * cs - inCluster
            }
            return Run(kind: .data(host: first + inCluster), length: min(covered, limit))
        }
    }

    /// Guest bytes from `pos` (the start of an L2 table's range) up to `limit` whose L1 entries are
    /// all empty: a stretch that maps nothing, whatever its size, found without a lookup per table.
    func unmappedTablesSpan(from pos: UInt64, limit: UInt64) -> UInt64 {
        let first = geometry.l1Index(pos)
        guard first < UInt64(l1.count) else { return 0 }
        let tables = min(UInt64(l1.count) - first, (limit + geometry.bytesPerL2 - 1) >> geometry.l1Shift)
        let end = l1.firstIndex(unequalTo: TableEntry.unallocated, from: Int(first), to: Int(first + tables))
        // (end − first) tables of at most 2^53 bytes each, at most limit + 2^53 ≤ 2^63 + 2^53 bytes.
        return min(UInt64(end - Int(first)) << geometry.l1Shift, limit)
    }

    /// The L2 table at `offset`, pinned in the cache (balance with `cache.unpin`).
    func pinL2(at offset: UInt64) throws -> Table {
        try cache.pin(offset: offset) {
            try Table.load(from: file, at: offset, count: Int(geometry.entriesPerTable))
        }
    }
}
