import CQEDSys

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The consistency check (`qed_check`): walks L1 and every L2 table, marks each referenced
/// cluster in a bitmap, and reports invalid offsets, double references and leaks.
///
/// Counting follows QEMU (so `qemu-img check` and we agree) except for the cluster arithmetic,
/// which is exact here (QEMU divides by cluster_size − 1 and reports phantom leaks on big files).
final class Checker {
    let image: Image
    let repair: Bool
    private let clusterCount: UInt64
    private let fileSize: UInt64
    /// One bit per cluster of the file: set when something references it.
    private let used: UnsafeMutablePointer<UInt64>
    private let words: Int
    /// Scratch space for one L2 table, reused for every table.
    private let table: UnsafeMutableBufferPointer<UInt64>
    private var tableBuffer: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(table) }
    var report = CheckReport()

    /// Allocates the bitmap (one bit per cluster of the file) and the scratch table. The file length
    /// comes from the file system, so a sparse file can ask for more bitmap than memory holds: that
    /// is a typed ``QEDError/Code/io`` error (ENOMEM), as in QEMU, not a crash.
    init(image: Image, repair: Bool) throws(QEDError) {
        self.image = image
        self.repair = repair
        fileSize = image.allocator.fileSize
        clusterCount = fileSize >> image.geometry.clusterBits
        words = Int((clusterCount + 63) / 64)
        guard let bitmap = calloc(max(1, words), MemoryLayout<UInt64>.stride) else {
            throw QEDError(
                .io, "cannot allocate the check's bitmap of \(words * 8) bytes for a file of \(fileSize) bytes",
                value: fileSize, path: image.path, errno: ENOMEM)
        }
        let entries = Int(image.geometry.entriesPerTable)
        guard let scratch = malloc(entries * MemoryLayout<UInt64>.stride) else {
            free(bitmap)
            throw QEDError(
                .io, "cannot allocate the check's table buffer of \(entries * 8) bytes",
                value: UInt64(entries * 8), path: image.path, errno: ENOMEM)
        }
        self.used = bitmap.bindMemory(to: UInt64.self, capacity: max(1, words))
        table = UnsafeMutableBufferPointer(
            start: scratch.bindMemory(to: UInt64.self, capacity: entries), count: entries)
    }

    deinit {
        free(used)
        free(table.baseAddress)
    }

    /// Marks `count` clusters from byte `offset`; returns false (and counts a corruption per
    /// cluster) where one was already marked.
    private func mark(_ offset: UInt64, count: UInt64) -> Bool {
        var duplicates = 0
        let first = offset >> image.geometry.clusterBits
        for c in first..<(first + count) where c < clusterCount {
            let (word, bit) = (Int(c >> 6), UInt64(1) << (c & 63))
            if used[word] & bit != 0 { duplicates += 1 }
            used[word] |= bit
        }
        report.corruptions += duplicates
        return duplicates == 0
    }

    func run() throws -> CheckReport {
        let g = image.geometry
        let file = image.file
        let header = image.currentHeader
        report.totalClusters = g.clusters(coveringBytes: header.imageSize)
        _ = mark(header.l1TableOffset, count: g.tableSize)

        var l1Changed = false
        let l1Count = Int(g.entriesPerTable)
        var next = 0
        while next < l1Count {
            // Skip the empty entries in one scan (an L1 table can hold 2^27 entries).
            let i = image.l1.firstIndex(unequalTo: TableEntry.unallocated, from: next, to: l1Count)
            next = i + 1
            guard i < l1Count else { break }
            let tableOffset = image.l1.entry(i)
            guard g.isValidTableOffset(tableOffset, fileSize: fileSize) else {
                if repair {
                    image.l1.clear(at: i)
                    l1Changed = true
                    report.corruptionsFixed += 1
                } else {
                    report.corruptions += 1
                }
                continue
            }
            guard mark(tableOffset, count: g.tableSize) else { continue }
            do {
                if tableBuffer.count >= Table.sparseLoadThreshold {
                    try file.readSkippingHoles(into: tableBuffer, at: tableOffset, zeroed: false)
                } else {
                    try file.readFully(into: tableBuffer, at: tableOffset)
                }
            } catch {
                report.checkErrors += 1
                continue
            }
            if checkL2() > 0 && repair {
                do { try file.write(UnsafeRawBufferPointer(tableBuffer), at: tableOffset) } catch {
                    report.checkErrors += 1
                }
            }
        }
        if l1Changed {
            // L1 in memory already holds the repair: a failed write leaves memory and disk apart,
            // so the image is marked failed (and NEED_CHECK stays set).
            do { try image.failure.recording { try image.l1.writeAll(to: file) } } catch { report.checkErrors += 1 }
        }
        if repair { image.cache.invalidateAll() }

        guard report.checkErrors == 0 else { return report }
        let (leaks, lastUsed) = countLeaks(from: g.headerSize)
        report.leaks = leaks
        let trailing = clusterCount > lastUsed + 1 ? clusterCount - (lastUsed + 1) : 0
        // Only a consistent image gives space back: with a double reference left, a table was
        // skipped (its entries are not marked) and the "leaked" tail may be data it maps.
        if repair && trailing > 0 && report.corruptions == 0 {
            let newSize = (lastUsed + 1) << g.clusterBits
            try file.setLength(newSize)
            try image.flusher.sync(file)
            image.allocator.truncated(to: newSize)
            report.leaks -= Int(trailing)
            report.leaksFixed = Int(trailing)
        }
        if repair && report.corruptions == 0 {
            try image.needCheck.clearAfterCheck()
        }
        return report
    }

    /// Unmarked clusters in `[first, clusterCount)`, and the last marked cluster (or `first − 1`).
    private func countLeaks(from first: UInt64) -> (leaks: Int, lastUsed: UInt64) {
        var leaks = 0
        var lastUsed = first &- 1
        guard first < clusterCount else { return (0, lastUsed) }
        for w in Int(first >> 6)..<words {
            var bits = used[w]
            let base = UInt64(w) << 6
            if base < first { bits |= (UInt64(1) << (first - base)) &- 1 }  // below `first`: not counted
            let valid = min(64, clusterCount - base)
            let mask = valid == 64 ? UInt64.max : (UInt64(1) << valid) &- 1
            let marked = bits & mask
            leaks += Int(valid) - marked.nonzeroBitCount
            if marked != 0 { lastUsed = max(lastUsed, base + UInt64(63 - marked.leadingZeroBitCount)) }
        }
        return (leaks, lastUsed)
    }

    /// Checks the L2 table in `tableBuffer`; returns how many invalid entries it found (cleared to
    /// zero in the buffer when repairing). Counting follows QEMU: every entry other than 0 and 1 is
    /// allocated; fragmentation is counted within the table, the first entry never counts, and
    /// invalid entries still move the "previous" position.
    private func checkL2() -> Int {
        let g = image.geometry
        let tally = Checker.scanL2(
            table, used: used, clusterSize: g.clusterSize, lowest: g.headerBytes,
            end: fileSize, clusterBits: g.clusterBits, clearInvalid: repair)
        report.allocatedClusters += tally.allocated
        report.fragmentedClusters += tally.fragmented
        report.corruptions += tally.duplicates
        if repair { report.corruptionsFixed += tally.invalid } else { report.corruptions += tally.invalid }
        return tally.invalid
    }

    /// Sets `count` bits from bit `first`; returns how many were already set.
    @inline(__always)
    static func markRange(_ used: UnsafeMutablePointer<UInt64>, first: UInt64, count: UInt64) -> Int {
        var duplicates = 0
        var c = first
        let stop = first &+ count
        while c < stop {
            let word = Int(truncatingIfNeeded: c &>> 6)
            let low = c & 63
            let n = min(64 &- low, stop &- c)
            let mask = (n == 64 ? UInt64.max : ((UInt64(1) &<< n) &- 1)) &<< low
            let old = used[word]
            duplicates &+= (old & mask).nonzeroBitCount
            used[word] = old | mask
            c &+= n
        }
        return duplicates
    }

    /// What one L2 table held.
    struct L2Tally {
        var invalid = 0
        var duplicates = 0
        var allocated: UInt64 = 0
        var fragmented: UInt64 = 0
    }

    /// The hot loop of the check, over plain pointers so nothing in it touches reference counts or
    /// exclusivity checks. Entries are little-endian; invalid ones are zeroed when `clearInvalid`.
    @inline(never)
    static func scanL2(
        _ entries: UnsafeMutableBufferPointer<UInt64>, used: UnsafeMutablePointer<UInt64>,
        clusterSize cs: UInt64, lowest: UInt64, end: UInt64, clusterBits bits: UInt64,
        clearInvalid: Bool
    ) -> L2Tally {
        var tally = L2Tally()
        let misaligned = cs &- 1
        var previous: UInt64 = 0
        let count = entries.count
        var j = 0
        while j < count {
            let entry = UInt64(littleEndian: entries[j])
            if entry <= TableEntry.zeroCluster {
                j = qedsys_find_allocated_le64(entries.baseAddress!, j &+ 1, count)
                continue
            }
            tally.allocated &+= 1
            if previous != 0 && previous &+ cs != entry { tally.fragmented &+= 1 }
            previous = entry
            guard entry & misaligned == 0, entry >= lowest, entry < end else {
                if clearInvalid { entries[j] = 0 }
                tally.invalid &+= 1
                j &+= 1
                continue
            }
            // Extend over the run of entries that continue this one in the file (the usual case):
            // they are valid, not fragmented, and marked together below.
            var k = j &+ 1
            var last = entry
            while k < count {
                let next = UInt64(littleEndian: entries[k])
                guard next == last &+ cs, next < end else { break }
                last = next
                k &+= 1
            }
            let run = UInt64(k &- j)
            tally.allocated &+= run &- 1
            previous = last
            tally.duplicates &+= markRange(used, first: entry &>> bits, count: run)
            j = k
        }
        return tally
    }
}

extension Image {
    /// Checks the image's metadata. With `repair`, invalid L1/L2 offsets are cleared, and if no
    /// corruption remains (double references cannot be repaired), leaked clusters at the end of the
    /// file are truncated away and NEED_CHECK is cleared. Exclusive: waits for running requests to
    /// finish and holds new ones back until it returns.
    ///
    /// A repairing check of a dirty image whose journal holds the log of the crash recovers from
    /// the journal instead (``CheckMethod/journal``): it checks and repairs only the tables the
    /// log names, gives back every cluster allocated since the last checkpoint that nothing
    /// references, and clears NEED_CHECK. When the log does not allow that, the full check runs.
    /// A repairing full check that leaves corruption turns the journal off (its next recovery
    /// could not see that corruption).
    public func check(repair: Bool = false) throws -> CheckReport {
        try gate.exclusive {
            try ensureOpen()
            if repair { try ensureWritable() }
            if repair { journal.beginRepair() }
            if repair, isDirty, let scan = journal.logAwaitingRecovery,
                let plan = JournalRecovery.plan(scan, l1Entries: l1.count),
                let report = try JournalRecovery(image: self, plan: plan).run()
            {
                try needCheck.clearAfterCheck()
                return report
            }
            let report = try Checker(image: self, repair: repair).run()
            if repair && report.corruptions > 0 && journal.mode != .off {
                try turnJournalOff()
            }
            return report
        }
    }
}
