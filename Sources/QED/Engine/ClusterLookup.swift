/// What a run of guest clusters maps to.
enum RunKind: Equatable {
    /// Stored in the image file; the host byte offset of the run's first guest byte.
    case data(host: UInt64)
    /// Zero clusters (L2 entry 1): read as zeroes, hide the backing file.
    case zero
    /// Not allocated here (L2 entry 0, or no L2 table): read the backing file or zeroes.
    case unallocated
}

/// A run found by ``Image/lookup(_:maxLength:)``: `length` bytes from the requested offset that
/// all map the same way (data runs are contiguous in the file). Never crosses an L2 table.
struct Run {
    var kind: RunKind
    var length: UInt64
}

extension Image {
    /// Finds how the guest bytes starting at `pos` are mapped, returning the longest run (up to
    /// `maxLength` bytes and the end of the L2 table) with one kind. Invalid table or cluster
    /// offsets throw, naming the bad value, and are never followed.
    func lookup(_ pos: UInt64, maxLength: UInt64) throws -> Run {
        let limit = min(maxLength, geometry.bytesToL2Boundary(pos))
        let tableOffset = l1.entry(Int(geometry.l1Index(pos)))
        if tableOffset == TableEntry.unallocated { return Run(kind: .unallocated, length: limit) }
        let fileSize = allocator.fileSize
        guard geometry.isValidTableOffset(tableOffset, fileSize: fileSize) else {
            throw QEDError(.invalidTableOffset,
                           "L1 entry for guest offset \(pos) points to an invalid L2 table offset \(tableOffset)",
                           value: tableOffset, path: path)
        }
        let table = try pinL2(at: tableOffset)
        defer { cache.unpin(table) }
        return try table.withEntries { entries in
            // Re-read the file size under the table lock: an entry that a concurrent allocation
            // wrote after this lookup began points past the size read above.
            try scanRun(entries, pos: pos, limit: limit, fileSize: allocator.fileSize)
        }
    }

    private func scanRun(_ entries: UnsafeMutableBufferPointer<UInt64>, pos: UInt64, limit: UInt64,
                         fileSize: UInt64) throws -> Run {
        let cs = geometry.clusterSize
        var index = Int(geometry.l2Index(pos))
        let first = entries[index]
        let inCluster = geometry.offsetInCluster(pos)
        let kind: RunKind
        switch first {
        case TableEntry.unallocated: kind = .unallocated
        case TableEntry.zeroCluster: kind = .zero
        default:
            guard geometry.isValidClusterOffset(first, fileSize: fileSize) else {
                throw QEDError(.invalidClusterOffset,
                               "L2 entry for guest offset \(pos) points to an invalid cluster offset \(first)",
                               value: first, path: path)
            }
            kind = .data(host: first + inCluster)
        }
        var covered = cs - inCluster
        var previous = first
        while covered < limit && index + 1 < entries.count {
            index += 1
            let next = entries[index]
            switch kind {
            case .unallocated: guard next == TableEntry.unallocated else { return Run(kind: kind, length: covered) }
            case .zero: guard next == TableEntry.zeroCluster else { return Run(kind: kind, length: covered) }
            case .data:
                guard next == previous &+ cs, geometry.isValidClusterOffset(next, fileSize: fileSize) else {
                    return Run(kind: kind, length: covered)
                }
            }
            previous = next
            covered += cs
        }
        return Run(kind: kind, length: min(covered, limit))
    }

    /// The L2 table at `offset`, pinned in the cache (balance with `cache.unpin`).
    func pinL2(at offset: UInt64) throws -> Table {
        try cache.pin(offset: offset) {
            try Table.load(from: file, at: offset, count: Int(geometry.entriesPerTable))
        }
    }
}
