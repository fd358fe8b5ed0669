/// The consistency check (`qed_check`): walks L1 and every L2 table, marks each referenced
/// cluster in a bitmap, and reports invalid offsets, double references and leaks.
///
/// Counting follows QEMU (so `qemu-img check` and we agree) except for the cluster arithmetic,
/// which is exact here (QEMU divides by cluster_size − 1 and reports phantom leaks on big files).
struct Checker {
    let image: Image
    let repair: Bool
    private var used: [UInt64]
    private let clusterCount: UInt64
    private let fileSize: UInt64
    var report = CheckReport()

    init(image: Image, repair: Bool) {
        self.image = image
        self.repair = repair
        self.fileSize = image.allocator.fileSize
        self.clusterCount = fileSize >> image.geometry.clusterBits
        self.used = [UInt64](repeating: 0, count: Int((clusterCount + 63) / 64))
    }

    /// Marks `count` clusters from byte `offset`; returns false (and counts a corruption per
    /// cluster) where one was already marked.
    private mutating func mark(_ offset: UInt64, count: UInt64) -> Bool {
        var duplicates = 0
        let first = offset >> image.geometry.clusterBits
        for c in first..<(first + count) where c < clusterCount {
            let (word, bit) = (Int(c / 64), UInt64(1) << (c % 64))
            if used[word] & bit != 0 { duplicates += 1 }
            used[word] |= bit
        }
        report.corruptions += duplicates
        return duplicates == 0
    }

    private func isMarked(_ c: UInt64) -> Bool { used[Int(c / 64)] & (UInt64(1) << (c % 64)) != 0 }

    mutating func run() throws -> CheckReport {
        let g = image.geometry
        let file = image.file
        let header = image.currentHeader
        report.totalClusters = g.clusters(coveringBytes: header.imageSize)
        _ = mark(header.l1TableOffset, count: g.tableSize)

        var l1Changed = false
        for i in 0..<Int(g.entriesPerTable) {
            let tableOffset = image.l1.entry(i)
            if tableOffset == TableEntry.unallocated { continue }
            guard g.isValidTableOffset(tableOffset, fileSize: fileSize) else {
                if repair {
                    image.l1.withEntries { $0[i] = TableEntry.unallocated }
                    l1Changed = true
                    report.corruptionsFixed += 1
                } else {
                    report.corruptions += 1
                }
                continue
            }
            guard mark(tableOffset, count: g.tableSize) else { continue }
            let table: Table
            do {
                table = try Table.load(from: file, at: tableOffset, count: Int(g.entriesPerTable))
            } catch {
                report.checkErrors += 1
                continue
            }
            if try checkL2(table) > 0 && repair {
                do { try table.writeAll(to: file) } catch { report.checkErrors += 1 }
            }
        }
        if l1Changed {
            do { try image.l1.writeAll(to: file) } catch { report.checkErrors += 1 }
        }
        if repair { image.cache.invalidateAll() }

        guard report.checkErrors == 0 else { return report }
        var lastUsed = g.headerSize == 0 ? 0 : g.headerSize - 1
        for c in g.headerSize..<max(g.headerSize, clusterCount) {
            if isMarked(c) { lastUsed = c } else { report.leaks += 1 }
        }
        let trailing = clusterCount > lastUsed + 1 ? clusterCount - (lastUsed + 1) : 0
        if repair && trailing > 0 {
            let newSize = (lastUsed + 1) << g.clusterBits
            try file.setLength(newSize)
            try file.sync()
            image.allocator.truncated(to: newSize)
            report.leaks -= Int(trailing)
            report.leaksFixed = Int(trailing)
        }
        if repair && report.corruptions == 0 {
            try image.needCheck.clearAfterCheck(sync: image.file)
        }
        return report
    }

    /// Checks one L2 table; returns how many invalid entries it cleared (repair mode).
    private mutating func checkL2(_ table: Table) throws -> Int {
        let g = image.geometry
        var invalid = 0
        var previous: UInt64 = 0
        let entries = table.withEntries { Array($0) }
        for (j, entry) in entries.enumerated() {
            if entry == TableEntry.unallocated || entry == TableEntry.zeroCluster { continue }
            report.allocatedClusters += 1
            if previous != 0 && previous &+ g.clusterSize != entry { report.fragmentedClusters += 1 }
            previous = entry
            guard g.isValidClusterOffset(entry, fileSize: fileSize) else {
                if repair {
                    table.withEntries { $0[j] = TableEntry.unallocated }
                    report.corruptionsFixed += 1
                } else {
                    report.corruptions += 1
                }
                invalid += 1
                continue
            }
            _ = mark(entry, count: 1)
        }
        return invalid
    }
}

extension Image {
    /// Checks the image's metadata. With `repair`, invalid L1/L2 offsets are cleared, leaked
    /// clusters at the end of the file are truncated away, and NEED_CHECK is cleared if no
    /// corruption remains. Expects no other I/O in flight.
    public func check(repair: Bool = false) throws -> CheckReport {
        try ensureOpen()
        if repair { try ensureWritable() }
        var checker = Checker(image: self, repair: repair)
        return try checker.run()
    }
}
