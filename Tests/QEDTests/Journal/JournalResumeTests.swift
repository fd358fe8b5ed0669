import Testing

@testable import QED

/// Resume after reopening at every position of a log, and recycling in place (stale clusters
/// from before a recycle are never read back).
@Suite("Journal resume and recycle")
struct JournalResumeTests {
    /// Records of varied sizes, so commits land at every kind of offset and cross clusters.
    private static let records: [JournalEntry] = (0..<40).map { JournalKit.entry($0, size: ($0 * 37) % 120) }

    @Test("resume after every commit continues the log; resume finds the commits made so far")
    func resumeEverywhere() throws {
        let layout = try JournalKit.layout(clusters: 8)
        for stopAfter in 0...Self.records.count {
            let file = JournalKit.surroundedFile(layout)
            let first = try Journal.format(file, layout: layout, clusterSequence: 100, commitSequence: 7)
            for entry in Self.records[..<stopAfter] {
                try JournalKit.append(entry, to: first)
                try first.commit()
            }
            try first.append(type: 3, payload: [0xEE])  // uncommitted: must not come back
            try first.flush()

            let (second, scan) = try Journal.resume(file, layout: layout)
            #expect(scan.entries == Array(Self.records[..<stopAfter]), "stopped after \(stopAfter)")
            #expect(scan.uncommittedEntries == 1)
            // An empty log knows no earlier number: its first COMMIT is 1 again.
            let base: UInt64 = stopAfter == 0 ? 1 : 7
            #expect(second.nextCommitSequence == base + UInt64(stopAfter))
            for entry in Self.records[stopAfter...] {
                try JournalKit.append(entry, to: second)
                try second.commit()
            }
            try second.flush()
            let final = try JournalReader.scan(file, layout: layout)
            #expect(final.entries == Self.records, "stopped after \(stopAfter)")
            #expect(final.commits.map(\.sequence) == (0..<UInt64(Self.records.count)).map { base + $0 })
            #expect(final.uncommittedEntries == 0 && final.stop == .none)
            #expect(JournalKit.outsideUntouched(file.durableBytes, layout))
        }
    }

    @Test("resume of a formatted, empty region starts at cluster 0")
    func resumeEmpty() throws {
        let layout = try JournalKit.layout(clusters: 2)
        let file = MemoryFile()
        _ = try Journal.format(file, layout: layout)
        let (journal, scan) = try Journal.resume(file, layout: layout)
        #expect(scan.commits.isEmpty && scan.stop == .none)
        #expect(journal.position == (0, 0))
        try journal.append(type: 9, payload: [1, 2])
        try journal.commit()
        try journal.flush()
        #expect(try JournalReader.scan(file, layout: layout).entries == [JournalEntry(type: 9, payload: [1, 2])])
    }

    @Test("recycle empties the log in place; a new log follows")
    func recycle() throws {
        let layout = try JournalKit.layout(clusters: 6)
        let file = JournalKit.surroundedFile(layout)
        let journal = try Journal.format(file, layout: layout)
        for entry in Self.records[..<20] {
            try JournalKit.append(entry, to: journal)
            try journal.commit()
        }
        try journal.flush()
        #expect(journal.position.cluster >= 2)
        try journal.recycle()
        #expect(file.pendingCount == 0, "recycle syncs")
        #expect(try JournalReader.scan(file, layout: layout).commits.isEmpty)
        let region = Int(layout.start)..<Int(layout.start + layout.size)
        #expect(file.durableBytes[region].allSatisfy { $0 == 0xFF })
        try JournalKit.append(Self.records[30], to: journal)
        let sequence = try journal.commit()
        try journal.flush()
        let scan = try JournalReader.scan(file, layout: layout)
        #expect(scan.entries == [Self.records[30]])
        #expect(scan.commits.map(\.sequence) == [sequence] && sequence == 21, "sequence numbers continue")
        #expect(JournalKit.outsideUntouched(file.durableBytes, layout))
    }

    @Test("a recycle after resuming a wholly reset region writes and syncs nothing")
    func recycleOfResetRegionWritesNothing() throws {
        let layout = try JournalKit.layout(clusters: 6)
        let file = JournalKit.surroundedFile(layout)
        _ = try Journal.format(file, layout: layout)
        let (journal, _) = try Journal.resume(file, layout: layout)
        let mutations = file.mutationCount
        let syncs = file.syncCount
        try journal.recycle()
        #expect(file.mutationCount == mutations && file.syncCount == syncs)
        // The next log still works, and the one after its recycle.
        try JournalKit.append(Self.records[5], to: journal)
        try journal.commit()
        try journal.flush()
        #expect(try JournalReader.scan(file, layout: layout).entries == [Self.records[5]])
        try journal.recycle()
        let region = Int(layout.start)..<Int(layout.start + layout.size)
        #expect(file.durableBytes[region].allSatisfy { $0 == 0xFF })
    }

    /// Non-reset bytes past an empty log (a recycle cut short, or stale bytes in any cluster): the
    /// first recycle after resume resets every cluster up to the last one holding such bytes.
    @Test("a recycle after resume resets every cluster found holding non-reset bytes")
    func recycleResetsWhatResumeFound() throws {
        let layout = try JournalKit.layout(clusters: 6)
        for dirtyCluster in 0..<layout.clusterCount {
            for byteInCluster in [0, 1, 511] {
                let file = JournalKit.surroundedFile(layout)
                _ = try Journal.format(file, layout: layout)
                let at = layout.offset(ofCluster: dirtyCluster) + UInt64(byteInCluster)
                try file.writeBytes([0x00], at: at)
                try file.sync()
                let (journal, scan) = try Journal.resume(file, layout: layout)
                #expect(scan.commits.isEmpty)
                try journal.recycle()
                let region = Int(layout.start)..<Int(layout.start + layout.size)
                #expect(
                    file.durableBytes[region].allSatisfy { $0 == 0xFF },
                    "cluster \(dirtyCluster) byte \(byteInCluster)")
                #expect(JournalKit.outsideUntouched(file.durableBytes, layout))
            }
        }
    }

    /// The reset of a recycle that never reached the disk: every old cluster from 1 on is put back
    /// after the new log was written. The old clusters continue another chain with older numbers.
    @Test("a stale cluster from before a recycle is never read as part of the new log")
    func staleAfterRecycle() throws {
        let layout = try JournalKit.layout(clusters: 6)
        for newRecords in [1, 3, 6, 10] {
            let file = JournalKit.surroundedFile(layout)
            let journal = try Journal.format(file, layout: layout)
            for entry in Self.records[..<30] {
                try JournalKit.append(entry, to: journal)
                try journal.commit()
            }
            try journal.flush()
            let old = file.durableBytes
            try journal.recycle()
            for entry in Self.records[30..<30 + newRecords] {
                try JournalKit.append(entry, to: journal)
                try journal.commit()
            }
            try journal.flush()
            let newClusters = journal.position.cluster + 1
            // Put back each old cluster the new log did not write, and the old tail of the last one.
            var mixed = file.durableBytes
            let size = layout.clusterSize
            let lastStart = Int(layout.offset(ofCluster: newClusters - 1))
            let newEnd = lastStart + journal.position.offset
            let tailStart = (newEnd + 511) / 512 * 512
            mixed.replaceSubrange(
                tailStart..<Int(layout.start + layout.size), with: old[tailStart..<Int(layout.start + layout.size)])
            let scan = try JournalReader.scan(MemoryFile(mixed), layout: layout)
            #expect(scan.entries == Array(Self.records[30..<30 + newRecords]), "new records \(newRecords)")
            #expect(size == 512)
        }
    }
}
