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
        let limit = min(maxLength, geometry.bytesToL2Boundary(pos))
        let tableOffset = l1.entry(Int(geometry.l1Index(pos)))
        if tableOffset == TableEntry.unallocated { return Run(kind: .unallocated, length: limit) }
        let fileSize = allocator.fileSize
        guard geometry.isValidTableOffset(tableOffset, fileSize: fileSize) else {
            throw QEDError(.invalidTableOffset,
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
            while covered < limit && index + 1 < table.count && table.entry(index + 1) == first {
                index += 1
                covered += cs
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
                throw QEDError(.invalidClusterOffset,
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

    /// The L2 table at `offset`, pinned in the cache (balance with `cache.unpin`).
    func pinL2(at offset: UInt64) throws -> Table {
        try cache.pin(offset: offset) {
            try Table.load(from: file, at: offset, count: Int(geometry.entriesPerTable))
        }
    }
}
