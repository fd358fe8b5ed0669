/// Recovery of a dirty image from its journal (docs/journal.md §2, "Recovery"): checks and
/// repairs only the L1 entries and L2 tables the committed records name, as the full check would,
/// and gives back every cluster allocated since the period's CHECKPOINT that nothing references,
/// so that no leak is left. Cost: the named tables plus the clusters allocated in the period.
///
/// Runs inside the exclusive ``Image/check(repair:)`` (no request runs). Returns nil, before it
/// writes anything, whenever the log does not allow it; the caller then runs the full check.
struct JournalRecovery {
    /// Where a referenced unit of clusters in `[H, EOF)` is referenced from.
    private enum Owner {
        /// An L2 table (`table_size` clusters), linked from this L1 entry.
        case l1(Int)
        /// A data cluster, mapped by entry `entry` of the L2 table linked from L1 entry `table`.
        case l2(table: Int, entry: Int)
    }

    /// Clusters at `offset` (bytes) referenced from `owner`.
    private struct Unit {
        var offset: UInt64
        var clusters: UInt64
        var owner: Owner
    }

    /// What the log says the period may have changed.
    struct Plan: Equatable {
        /// The allocation high-water mark at the period's start (bytes), nil for an empty log.
        var highWater: UInt64?
        /// The L1 indices named, ascending, without repeats.
        var indices: [Int]
    }

    /// The plan the committed records of `scan` give, or nil when the full check must run: the
    /// log stopped at damage with more log after it, holds OVERFLOW or a record this engine does
    /// not know, does not start with CHECKPOINT, or names an L1 index past `l1Entries`.
    static func plan(_ scan: JournalScan, l1Entries: Int) -> Plan? {
        guard !scan.continuesAfterStop else { return nil }
        let entries = scan.entries
        guard let first = entries.first else { return Plan(highWater: nil, indices: []) }
        guard let record = JournalRecord(first), case .checkpoint(let highWater) = record else { return nil }
        var indices = Set<Int>()
        for entry in entries.dropFirst() {
            switch JournalRecord(entry) {
            case .touched(let index)?:
                guard Int(index) < l1Entries else { return nil }
                indices.insert(Int(index))
            case .checkpoint?:
                continue  // a period start whose header update failed: the first H is the lower
            case .overflow?, nil:
                return nil
            }
        }
        return Plan(highWater: highWater, indices: indices.sorted())
    }

    let image: Image
    let plan: Plan

    /// Verifies and repairs what the plan names, gives back the unreferenced clusters in
    /// `[H, EOF)`, and syncs; returns the report (``CheckReport/method`` `.journal`), or nil before
    /// any write when the full check must run instead (`H` not a cluster offset past the L1 table
    /// or past the end of the file, or a cluster referenced twice). Does not clear NEED_CHECK.
    func run() throws -> CheckReport? {
        var report = CheckReport()
        report.method = .journal
        report.journalRecords = plan.indices.count + (plan.highWater == nil ? 0 : 1)
        guard let highWater = plan.highWater else { return report }
        let g = image.geometry
        let file = image.file
        let cs = g.clusterSize
        let fileSize = image.allocator.fileSize
        let l1End = image.currentHeader.l1TableOffset &+ g.tableBytes
        guard highWater % cs == 0, highWater >= max(g.headerBytes, l1End), highWater <= fileSize else { return nil }

        // Read-only pass: the named L1 entries and tables, the units above H.
        var l1Clears: [Int] = []
        var tableRewrites: [(offset: UInt64, entries: [UInt64])] = []
        var units: [Unit] = []
        var tableAt: [Int: UInt64] = [:]
        let count = Int(g.entriesPerTable)
        for i in plan.indices {
            let tableOffset = image.l1.entry(i)
            if tableOffset == TableEntry.unallocated { continue }
            guard g.isValidTableOffset(tableOffset, fileSize: fileSize) else {
                l1Clears.append(i)
                continue
            }
            tableAt[i] = tableOffset
            if tableOffset >= highWater {
                units.append(Unit(offset: tableOffset, clusters: g.tableSize, owner: .l1(i)))
            }
            var entries = [UInt64](repeating: 0, count: count)
            try entries.withUnsafeMutableBytes { try file.readFully(into: $0, at: tableOffset) }
            var changed = false
            for j in 0..<count {
                let entry = UInt64(littleEndian: entries[j])
                guard entry > TableEntry.zeroCluster else { continue }
                guard g.isValidClusterOffset(entry, fileSize: fileSize) else {
                    entries[j] = 0
                    changed = true
                    report.corruptionsFixed += 1
                    continue
                }
                if entry >= highWater { units.append(Unit(offset: entry, clusters: 1, owner: .l2(table: i, entry: j))) }
            }
            if changed { tableRewrites.append((tableOffset, entries)) }
        }
        report.corruptionsFixed += l1Clears.count

        // Two references to one cluster: the full check reports them (they cannot be repaired).
        units.sort { $0.offset < $1.offset }
        var reach = highWater
        for unit in units {
            guard unit.offset >= reach else { return nil }
            reach = unit.offset + unit.clusters * cs
        }

        // Repairs: invalid entries cleared, as the full check clears them.
        image.cache.invalidateAll()
        for i in l1Clears {
            try image.failure.recording {
                try image.l1.update(at: i, values: CollectionOfOne(TableEntry.unallocated), file: file)
            }
        }
        for rewrite in tableRewrites {
            try image.failure.recording {
                try rewrite.entries.withUnsafeBytes { try file.write($0, at: rewrite.offset) }
            }
        }
        if !l1Clears.isEmpty || !tableRewrites.isEmpty { try image.flusher.sync(file) }

        // Zero leaks: slide the referenced units down over the unreferenced clusters, lowest first.
        var destination = highWater
        for var unit in units {
            if unit.offset != destination {
                let bytes = unit.clusters * cs
                if destination + bytes > unit.offset {
                    // Overlapping its own source (a table sliding by less than its size): park it
                    // at the end of the file first, so no copy overwrites what an entry still maps.
                    let parked = try image.allocator.allocate(clusters: unit.clusters, in: file)
                    try move(&unit, to: parked, tableAt: &tableAt)
                }
                try move(&unit, to: destination, tableAt: &tableAt)
            }
            destination += unit.clusters * cs
        }
        let end = image.allocator.fileSize
        if destination < end {
            try file.setLength(destination)
            try image.flusher.sync(file)
            image.allocator.truncated(to: destination)
        }
        if fileSize > destination { report.leaksFixed = Int((fileSize - destination) / cs) }
        image.cache.invalidateAll()
        return report
    }

    /// Copies `unit` to `destination` (free clusters), syncs, points its one referring entry
    /// there, syncs. A crash leaves the entry at the old copy or at the new, durable one.
    private func move(_ unit: inout Unit, to destination: UInt64, tableAt: inout [Int: UInt64]) throws {
        let file = image.file
        let bytes = unit.clusters * image.geometry.clusterSize
        let chunk = min(bytes, 1 << 20)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(chunk), alignment: 4096)
        defer { buffer.deallocate() }
        var done: UInt64 = 0
        while done < bytes {
            let n = Int(min(chunk, bytes - done))
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
            try file.readFully(into: piece, at: unit.offset + done)
            try image.failure.recording { try file.write(UnsafeRawBufferPointer(piece), at: destination + done) }
            done += UInt64(n)
        }
        try image.flusher.sync(file)
        switch unit.owner {
        case .l1(let index):
            try image.failure.recording {
                try image.l1.update(at: index, values: CollectionOfOne(destination), file: file)
            }
            tableAt[index] = destination
        case .l2(let table, let entry):
            guard let tableOffset = tableAt[table] else {
                throw QEDError(.corrupt, "journal recovery lost track of L2 table \(table)", value: UInt64(table))
            }
            let le = destination.littleEndian
            try image.failure.recording {
                try withUnsafeBytes(of: le) { try file.write($0, at: tableOffset + UInt64(entry) * 8) }
            }
        }
        try image.flusher.sync(file)
        unit.offset = destination
    }
}
