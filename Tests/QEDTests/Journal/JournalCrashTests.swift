import Testing

@testable import QED

/// Power cuts: torn write-outs at every 512-byte sector of a 4 KiB journal cluster, and a random
/// append / crash / resume fuzz against a model of the commits.
@Suite("Journal crashes")
struct JournalCrashTests {
    /// Every commit flushed before the cut is read back; after that, a prefix of the later commits
    /// and nothing else; and a writer resumed on the survivor continues a log that reads back whole.
    private func checkSurvivor(
        _ bytes: [UInt8], layout: JournalLayout, flushed: [JournalCommit], issued: [JournalCommit], _ what: String
    ) throws {
        let file = FaultInjectingFile(bytes)
        let (journal, scan) = try Journal.resume(file, layout: layout)
        let read = scan.commits
        #expect(read.count >= flushed.count && read.count <= issued.count, "\(what): \(read.count) commits")
        #expect(read == Array(issued.prefix(read.count)), "\(what): not a prefix of the commits made")
        let extra = JournalEntry(type: 0x42, payload: Array("after the cut".utf8))
        var before = read
        do {
            try journal.append(type: extra.type, payload: extra.payload)
        } catch let error as QEDError where error.code == .noSpace {
            // A full log: a checkpoint recycles it (the whole region, the first time after resume).
            try journal.recycle()
            before = []
            try journal.append(type: extra.type, payload: extra.payload)
        }
        let sequence = try journal.commit()
        try journal.flush()
        let again = try JournalReader.scan(file, layout: layout)
        #expect(again.commits == before + [JournalCommit(sequence: sequence, entries: [extra])], "\(what): resumed log")
    }

    /// The commits `journal` made, as the model of the log: records and sequence numbers.
    private struct Model {
        var issued: [JournalCommit] = []
        var flushedCount = 0
        var pending: [JournalEntry] = []

        mutating func append(_ entry: JournalEntry, to journal: Journal) throws {
            try JournalKit.append(entry, to: journal)
            pending.append(entry)
        }

        mutating func commit(_ journal: Journal) throws {
            let sequence = try journal.commit()
            if !pending.isEmpty { issued.append(JournalCommit(sequence: sequence, entries: pending)) }
            pending = []
        }
    }

    @Test("torn write-outs at every sector of a journal cluster replay no torn or uncommitted record")
    func tornSectors() throws {
        let layout = try JournalLayout(start: 65536, size: 4 * 4096, clusterSize: 4096)
        for durableRecords in [0, 5, 40] {
            let file = FaultInjectingFile([UInt8](repeating: 0, count: 65536))
            let journal = try Journal.format(file, layout: layout)
            var model = Model()
            for n in 0..<durableRecords {
                try model.append(JournalKit.entry(n, size: 60), to: journal)
                try model.commit(journal)
            }
            try journal.flush()
            model.flushedCount = model.issued.count
            // Unflushed: enough records to rewrite the rest of cluster 0 and start cluster 1,
            // committed in groups, the last group left uncommitted.
            for n in durableRecords..<durableRecords + 80 {
                try model.append(JournalKit.entry(n, size: 70 + n % 11), to: journal)
                if n % 3 == 0 { try model.commit(journal) }
            }
            try model.append(JournalKit.entry(999, size: 5), to: journal)  // left uncommitted
            try journal.writeOut()
            let pending = file.pendingOperations
            let durable = file.durableBytes
            let pieces = JournalKit.pieceCount(pending)
            #expect(pieces >= 8, "the write-out spans at least a journal cluster of sectors")
            let flushed = Array(model.issued.prefix(model.flushedCount))
            for piece in 0..<pieces {
                let variants: [(String, (Int) -> Bool)] = [
                    ("only sector \(piece) lost", { $0 != piece }),
                    ("only sector \(piece) kept", { $0 == piece }),
                    ("sectors through \(piece) kept", { $0 <= piece }),
                    ("sectors from \(piece) kept", { $0 >= piece }),
                ]
                for (what, keep) in variants {
                    let bytes = JournalKit.survivor(durable: durable, pending: pending, keep: keep)
                    try checkSurvivor(
                        bytes, layout: layout, flushed: flushed, issued: model.issued,
                        "\(durableRecords) durable, \(what)")
                }
            }
            // Everything kept: every commit made is read, the uncommitted group is not.
            let all = JournalKit.survivor(durable: durable, pending: pending) { _ in true }
            let scan = try JournalReader.scan(MemoryFile(all), layout: layout)
            #expect(scan.commits == model.issued)
            #expect(scan.uncommittedEntries == model.pending.count && !model.pending.isEmpty)
        }
    }

    @Test("random appends, commits, flushes, recycles and power cuts against a model")
    func fuzz() throws {
        let seed = ModelRNG.seed(0x10C4_11A1)
        var rng = ModelRNG(seed: seed)
        let layout = try JournalKit.layout(clusters: 6, clusterSize: 512)
        var file = FaultInjectingFile([UInt8](repeating: 0, count: 4096))
        var journal = try Journal.format(file, layout: layout)
        var model = Model()
        var number = 0
        var cuts = 0
        for round in 0..<400 {
            let steps = Int(rng.next() % 40)
            var recycling = false
            if rng.chance(0.3) { file.cut(afterMutations: Int(rng.next() % 6)) }
            do {
                for _ in 0..<steps {
                    switch rng.next() % 20 {
                    case 0..<11:
                        let entry = JournalKit.entry(number, size: Int(rng.next() % 100))
                        number += 1
                        do {
                            try model.append(entry, to: journal)
                        } catch let error as QEDError where error.code == .noSpace {
                            try model.commit(journal)
                            try journal.flush()
                            model.flushedCount = model.issued.count
                            recycling = true
                            try journal.recycle()
                            recycling = false
                            model = Model()
                        }
                    case 11..<16:
                        try model.commit(journal)
                    case 16, 17:
                        try journal.writeOut()
                    default:
                        try journal.flush()
                        model.flushedCount = model.issued.count
                    }
                }
            } catch let error as QEDError where error.code == .io {
                // the cut: the file refuses every mutation from here on
            }
            // The power goes out.
            let mode = FaultInjectingFile.CrashMode.random(using: &rng)
            let bytes = file.crash(mode: mode, rng: &rng)
            cuts += 1
            // A cut inside a recycle may leave any prefix of the old log (a checkpoint made it moot).
            let flushed = recycling ? [] : Array(model.issued.prefix(model.flushedCount))
            try checkSurvivor(
                bytes, layout: layout, flushed: flushed, issued: model.issued, "seed \(seed) round \(round) \(mode)")
            // Reopen the survivor (without the check's extra record) and go on from what it holds.
            file = FaultInjectingFile(bytes)
            let resumed = try Journal.resume(file, layout: layout)
            journal = resumed.0
            model = Model(issued: resumed.1.commits, flushedCount: resumed.1.commits.count, pending: [])
        }
        #expect(cuts == 400)
    }
}
