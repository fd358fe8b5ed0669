import Testing

@testable import QED

/// The journal's framing: entries, COMMIT and END at every boundary of a journal cluster, the
/// full journal, and what the writer refuses.
@Suite("Journal framing")
struct JournalFramingTests {
    @Test("layouts that are not whole journal clusters are refused with the value")
    func layoutValidation() throws {
        #expect(throws: QEDError.self) { try JournalLayout(start: 0, size: 4096, clusterSize: 256) }
        #expect(throws: QEDError.self) { try JournalLayout(start: 0, size: 4096, clusterSize: 1536) }
        #expect(throws: QEDError.self) { try JournalLayout(start: 100, size: 4096, clusterSize: 512) }
        #expect(throws: QEDError.self) { try JournalLayout(start: 0, size: 0, clusterSize: 512) }
        #expect(throws: QEDError.self) { try JournalLayout(start: 0, size: 1000, clusterSize: 512) }
        #expect(throws: QEDError.self) { try JournalLayout(start: UInt64.max - 511, size: 1024, clusterSize: 512) }
        let layout = try JournalLayout(start: 65536, size: 3 * 4096, clusterSize: 4096)
        #expect(layout.clusterCount == 3 && layout.offset(ofCluster: 2) == 65536 + 8192)
        #expect(try JournalLayout.roundedSize(5000, eraseBlock: 4096) == 8192)
        #expect(try JournalLayout.roundedSize(8192, eraseBlock: 4096) == 8192)
    }

    @Test("reserved types and payloads over 252 bytes are refused")
    func refusedEntries() throws {
        let layout = try JournalKit.layout(clusters: 2)
        let journal = try Journal.format(MemoryFile(), layout: layout)
        for type: UInt8 in [0, 1, 2, 0xFF] {
            #expect(throws: QEDError.self) { try journal.append(type: type, payload: []) }
        }
        #expect(throws: QEDError.self) { try journal.append(type: 3, payload: [UInt8](repeating: 0, count: 253)) }
        try journal.append(type: 3, payload: [UInt8](repeating: 0xFF, count: 252))
        try journal.append(type: 0xFE, payload: [])
        try journal.commit()
        try journal.flush()
        let scan = try JournalReader.scan(journal.file, layout: layout)
        #expect(scan.entries.map(\.payload.count) == [252, 0])
    }

    /// For each slack 0...30 left in cluster 0 by a first entry, a second entry either fits (it leaves
    /// room for COMMIT + END) or moves to cluster 1 — and the log reads back either way.
    @Test("an entry that exactly fits stays; one byte more moves to the next cluster")
    func boundary() throws {
        let size = 512
        for payload in 224...252 {
            let layout = try JournalKit.layout(clusters: 3, clusterSize: size)
            let file = JournalKit.surroundedFile(layout)
            let journal = try Journal.format(file, layout: layout)
            // After the header (12) and a 232-byte first entry, 268 bytes remain: a 246-byte entry
            // (payload 244) and the 22 bytes of COMMIT + END fit exactly.
            let first = JournalEntry(type: 3, payload: [UInt8](repeating: 1, count: 230))
            let big = JournalEntry(type: 4, payload: [UInt8](repeating: 2, count: payload))
            try JournalKit.append(first, to: journal)
            let fits = payload <= 244
            try JournalKit.append(big, to: journal)
            #expect(journal.position.cluster == (fits ? 0 : 1), "second payload \(payload)")
            try journal.commit()
            try journal.flush()
            let scan = try JournalReader.scan(file, layout: layout)
            #expect(scan.entries == [first, big])
            #expect(scan.stop == .none)
            if !fits {
                // cluster 0 ends with an END right after the first entry, skipping to the end.
                let bytes = file.durableBytes
                let end = Int(layout.start) + 12 + 232
                #expect(bytes[end] == 8 && bytes[end + 1] == JournalFormat.endType)
                #expect(Int(bytes[end + 2]) << 8 | Int(bytes[end + 3]) == size - (12 + 232) - 8)
            }
            #expect(JournalKit.outsideUntouched(file.durableBytes, layout))
        }
    }

    @Test("entries, COMMIT and a minimum END that fill a cluster to its last byte")
    func exactFill() throws {
        let size = 512
        let layout = try JournalKit.layout(clusters: 2, clusterSize: size)
        let file = JournalKit.surroundedFile(layout)
        let journal = try Journal.format(file, layout: layout)
        // Two entries of 478 bytes in all: 512 − 12 (header) − 22 (COMMIT + END).
        let a = JournalEntry(type: 5, payload: [UInt8](repeating: 9, count: 252))  // 254 bytes
        let b = JournalEntry(type: 6, payload: [UInt8](repeating: 8, count: 222))  // 224 bytes
        try JournalKit.append(a, to: journal)
        try JournalKit.append(b, to: journal)
        #expect(journal.position == (0, size - JournalFormat.reserve))
        try journal.commit()
        #expect(journal.position == (0, size - JournalFormat.endSize))
        let c = JournalEntry(type: 7, payload: [])
        try JournalKit.append(c, to: journal)  // closes cluster 0 with an END of skip 0
        #expect(journal.position == (1, 12 + 2))
        try journal.commit()
        try journal.flush()
        let bytes = file.durableBytes
        let end = Int(layout.start) + size - 8
        #expect(Array(bytes[end..<end + 4]) == [8, JournalFormat.endType, 0, 0])
        let scan = try JournalReader.scan(file, layout: layout)
        #expect(scan.commits.map(\.entries) == [[a, b], [c]])
        #expect(scan.commits.map(\.sequence) == [1, 2])
    }

    @Test("a full journal refuses the entry that does not fit and keeps its log")
    func full() throws {
        let layout = try JournalKit.layout(clusters: 3, clusterSize: 512)
        let file = JournalKit.surroundedFile(layout)
        let journal = try Journal.format(file, layout: layout)
        var written: [JournalEntry] = []
        var number = 0
        while true {
            let entry = JournalKit.entry(number, size: 40 + number % 50)
            do {
                try JournalKit.append(entry, to: journal)
            } catch let error as QEDError {
                #expect(error.code == .noSpace)
                break
            }
            written.append(entry)
            try journal.commit()
            number += 1
            try #require(number < 1000)
        }
        #expect(journal.position.cluster == 2)
        try journal.flush()
        let scan = try JournalReader.scan(file, layout: layout)
        #expect(scan.entries == written)
        #expect(scan.stop == .none)
        #expect(written.count > 10)
        // A small entry may still fit in the last cluster after the refusal.
        try journal.append(type: 3, payload: [])
        try journal.commit()
        try journal.flush()
        #expect(try JournalReader.scan(file, layout: layout).entries.count == written.count + 1)
        #expect(JournalKit.outsideUntouched(file.durableBytes, layout))
    }

    @Test("commits carry consecutive sequence numbers; an empty commit writes nothing")
    func sequences() throws {
        let layout = try JournalKit.layout(clusters: 4)
        let file = MemoryFile()
        let journal = try Journal.format(file, layout: layout, commitSequence: 41)
        #expect(try journal.commit() == 40)
        try journal.append(type: 3, payload: [1])
        #expect(try journal.commit() == 41)
        #expect(try journal.commit() == 41)
        try journal.append(type: 3, payload: [2])
        try journal.append(type: 3, payload: [3])
        #expect(try journal.commit() == 42)
        try journal.append(type: 3, payload: [4])  // never committed
        try journal.flush()
        let scan = try JournalReader.scan(file, layout: layout)
        #expect(scan.commits.map(\.sequence) == [41, 42])
        #expect(scan.entries.map(\.payload) == [[1], [2], [3]])
        #expect(scan.uncommittedEntries == 1)
        #expect(scan.nextCommitSequence == 43)
    }

    @Test("a COMMIT with a wrong sequence number or checksum ends the log")
    func corruptCommit() throws {
        let layout = try JournalKit.layout(clusters: 2)
        let file = MemoryFile()
        let journal = try Journal.format(file, layout: layout)
        for n in 0..<3 {
            try journal.append(type: 3, payload: [UInt8(n)])
            try journal.commit()
        }
        try journal.flush()
        // header 12, entry 3, COMMIT 14, entry 3, then the second COMMIT
        let secondEntry = Int(layout.start) + 12 + 3 + 14
        let secondCommit = secondEntry + 3
        #expect(file.contents[secondCommit + 1] == JournalFormat.commitType)
        var badSequence = file.contents
        badSequence[secondCommit + 9] ^= 1  // the sequence's last byte
        #expect(try JournalReader.scan(MemoryFile(badSequence), layout: layout).stop == .badSequence)
        var badPayload = file.contents
        badPayload[secondEntry + 2] ^= 0x10  // the second entry's payload
        let scan = try JournalReader.scan(MemoryFile(badPayload), layout: layout)
        #expect(scan.stop == .badChecksum)
        #expect(scan.entries.map(\.payload) == [[0]])
    }

    @Test("stop flushes and refuses later appends")
    func stop() throws {
        let layout = try JournalKit.layout(clusters: 2)
        let file = FaultInjectingFile()
        let journal = try Journal.format(file, layout: layout)
        try journal.append(type: 3, payload: [7])
        try journal.commit()
        try journal.stop()
        #expect(file.pendingCount == 0)
        #expect(throws: QEDError.self) { try journal.append(type: 3, payload: []) }
        #expect(try JournalReader.scan(file, layout: layout).entries.map(\.payload) == [[7]])
    }
}
