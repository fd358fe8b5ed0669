import Foundation
import Synchronization
import TestSupport
import Testing

@testable import QED

// Concurrent power cuts for add-cow: three writers on interleaved two-cluster blocks (writes, zero
// writes, discards, flushes, reads compared with the model) and, in half of the rounds, a fourth
// thread streaming the backing file in, on the two fault-injecting files of one ``PowerSwitch``.
// The switch trips at a random mutation; each file keeps a random part of what it had not synced;
// the image is reopened from the survivors. Asserted: the bitmap checks clean, every byte no
// operation touched after the last completed flush reads its flushed value (a bit set without its
// data would show the image file's stale 0xEE bytes instead of the backing data), every other byte
// reads its flushed value or one written since, and the recovered image keeps working.

@Suite("add-cow concurrent crash")
struct AddCOWConcurrentCrashTests {
    /// Rounds per case (two cases); `QED_CRASH_CUTS` / 6 overrides.
    static var rounds: Int {
        ProcessInfo.processInfo.environment["QED_CRASH_CUTS"].flatMap { Int($0) }.map { max(1, $0 / 6) } ?? 100
    }

    @Test("concurrent writers (and a stream) cut at random", arguments: AddCOWCrashCase.all)
    func concurrentCuts(_ c: AddCOWCrashCase) throws {
        let dir = try TemporaryDirectory(prefix: "acow-conc-crash")
        let seedBase = ModelRNG.seed(0xAC0C_0000 &+ c.clusterSize, salt: 12)
        var rng = ModelRNG(seed: seedBase)
        let base = try ModelKit.makeRawBacking(in: dir.path, size: c.backingSize, rng: &rng)
        let metaPath = dir.file("c.add-cow")
        try AddCOWImage.create(
            path: metaPath,
            options: AddCOWCreateOptions(
                imageFile: "c.raw", size: c.diskSize, backingFile: "base.raw", backingFormat: .raw,
                clusterSize: c.clusterSize))
        let freshMeta = try Files.read(metaPath)
        var failed = 0, tripped = 0, lost = 0, streamed = 0
        for round in 0..<Self.rounds {
            let seed = seedBase &+ UInt64(round)
            let outcome = try cut(
                c, seed: seed, stream: round % 2 == 1, base: base.bytes, freshMeta: freshMeta, metaPath: metaPath,
                imagePath: dir.file("c.raw"))
            if outcome.tripped { tripped += 1 }
            if outcome.lostSomething { lost += 1 }
            streamed += outcome.clustersStreamed > 0 ? 1 : 0
            if !outcome.failures.isEmpty {
                failed += 1
                if failed <= 3 { Issue.record("\(c) round \(round) seed \(seed): \(outcome.failures.prefix(3))") }
            }
        }
        print(
            "add-cow concurrent crash \(c): \(Self.rounds) rounds, \(tripped) cut, \(lost) lost unflushed data, \(streamed) streamed, \(failed) failed"
        )
        #expect(failed == 0, "\(c): \(failed) of \(Self.rounds) rounds failed (base seed \(seedBase))")
        #expect(tripped > Self.rounds / 3, "\(c): only \(tripped) rounds were cut before their end")
        #expect(lost > 0, "\(c): no cut lost anything, so none tested recovery")
        #expect(streamed > 0, "\(c): no round streamed a cluster before its cut")
    }

    struct Outcome {
        var tripped = false
        var lostSomething = false
        var clustersStreamed: UInt64 = 0
        var failures: [String] = []
    }

    private func cut(
        _ c: AddCOWCrashCase, seed: UInt64, stream: Bool, base: [UInt8], freshMeta: [UInt8], metaPath: String,
        imagePath: String
    ) throws -> Outcome {
        var rng = ModelRNG(seed: seed)
        let cs = c.clusterSize
        let workers = 3
        let opsPerWorker = 2 + Int(rng.next() % 8)
        let budget = workers * opsPerWorker * (stream ? 8 : 3)
        let power = PowerSwitch(mutations: Int(rng.next() % UInt64(budget + 1)))
        let meta = FaultInjectingFile(freshMeta, path: metaPath)
        // Stale bytes everywhere in the image file: never visible under a clear bit.
        let data = FaultInjectingFile([UInt8](repeating: 0xEE, count: Int(c.diskSize)), path: imagePath)
        let image = try AddCOWImage.open(
            metadata: SwitchedFile(meta, power: power), options: OpenOptions(), seen: [],
            imageFile: SwitchedFile(data, power: power))
        let initial = ReferenceDisk(size: c.diskSize, clusterSize: cs, backing: base)
        let shared = SharedModel(initial)
        let log = ConcurrentLog()
        let failures = FailureLog()
        let pulled = Mutex<UInt64>(0)
        let blockBytes = 2 * cs
        let blocks = (c.diskSize + blockBytes - 1) / blockBytes
        ModelKit.runThreads(workers + (stream ? 1 : 0)) { w in
            var rng = ModelRNG(seed: seed &+ UInt64(w + 1) &* 0x9E37_79B9)
            if w == workers {
                // The streamer: random cluster-aligned runs, until the cut or 3 passes' worth.
                for _ in 0..<(3 * Int(blocks)) {
                    let at = rng.next() % blocks * blockBytes
                    do {
                        let n = try image.pullFromBacking(at: at, length: min(blockBytes * 2, c.diskSize - at))
                        pulled.withLock { $0 += n }
                    } catch let error as QEDError where error.code == .io && power.tripped {
                        return
                    } catch {
                        failures.add("streamer: \(error)")
                        return
                    }
                }
                return
            }
            for _ in 0..<opsPerWorker {
                var j = rng.next() % blocks
                j = j - j % UInt64(workers) + UInt64(w)
                if j >= blocks { j -= UInt64(workers) }
                let block = (j * blockBytes)..<min(c.diskSize, (j + 1) * blockBytes)
                var start = block.lowerBound + rng.next() % UInt64(block.count)
                if rng.chance(0.5) { start = start / 512 * 512 }
                var length = 1 + rng.next() % (block.upperBound - start)
                if rng.chance(0.3) { (start, length) = (block.lowerBound, UInt64(block.count)) }
                let roll = rng.next() % 100
                do {
                    if roll < 10 {
                        let got = try image.readBytes(at: start, count: Int(length))
                        if !power.tripped,
                            let d = ModelKit.firstDifference(got, shared.read(at: start, count: Int(length)))
                        {
                            failures.add("worker \(w): read before the cut differs at \(start + UInt64(d))")
                        }
                        continue
                    }
                    if roll >= 85 {
                        let t = log.ticket()
                        try image.flush()
                        log.flushCompleted(startedAt: t)
                        continue
                    }
                    var op: LoggedOperation
                    // Discards only without a stream: whether one punches a cluster depends on
                    // whether the stream set its bit first, which the model cannot know.
                    if roll < 55 || (stream && roll >= 72) {
                        let bytes = rng.bytes(Int(length))
                        op = LoggedOperation(
                            worker: w, kind: .write(start, bytes),
                            changes: [PendingChange(offset: start, length: bytes.count, bytes: bytes)])
                    } else if roll < 72 {
                        op = LoggedOperation(
                            worker: w, kind: .zero(start, length),
                            changes: [PendingChange(offset: start, length: Int(length), bytes: nil)])
                    } else {
                        var copy = shared.value
                        let zeroed = copy.discard(at: start, length: length)
                        op = LoggedOperation(
                            worker: w, kind: .discard(start, length),
                            changes: zeroed.map {
                                PendingChange(offset: $0.lowerBound, length: Int($0.count), bytes: nil)
                            })
                    }
                    op.start = log.ticket()
                    do {
                        switch op.kind {
                        case .write(let at, let bytes): try bytes.withUnsafeBytes { try image.write($0, at: at) }
                        case .zero(let at, let n): try image.writeZeroes(at: at, length: n, unmap: rng.chance(0.5))
                        case .discard(let at, let n): try image.discard(at: at, length: n)
                        }
                    } catch {
                        log.record(op)  // in flight at the cut: a candidate, never durable
                        throw error
                    }
                    op.end = log.ticket()
                    shared.disk.withLock { op.apply(to: &$0) }
                    log.record(op)
                } catch let error as QEDError where error.code == .io && power.tripped {
                    return
                } catch {
                    failures.add("worker \(w): \(error)")
                    return
                }
            }
        }
        var outcome = Outcome(
            tripped: power.tripped, clustersStreamed: pulled.withLock { $0 } / cs, failures: failures.messages)
        guard outcome.failures.isEmpty else { return outcome }

        let lastFlush = log.completedFlushStarts.max() ?? Int.min
        var flushed = initial
        var crashView = initial
        var pending: [PendingChange] = []
        for op in log.operations {  // per worker in order; workers touch disjoint clusters
            if let end = op.end {
                op.apply(to: &crashView)
                if end < lastFlush {
                    op.apply(to: &flushed)
                    continue
                }
            }
            pending += op.changes
        }
        let metaSurvivor = meta.crash(mode: .random(using: &rng), rng: &rng)
        let dataSurvivor = data.crash(mode: .random(using: &rng), rng: &rng)
        let recovered = try AddCOWImage.open(
            metadata: MemoryFile(metaSurvivor, path: metaPath), options: OpenOptions(), seen: [],
            imageFile: MemoryFile(dataSurvivor, path: imagePath))
        defer { try? recovered.close() }
        let report = try recovered.check(repair: false)
        if !report.isClean { outcome.failures.append("check after recovery: \(report)") }
        let actual = try recovered.readBytes(at: 0, count: Int(c.diskSize))
        outcome.failures += checkCandidates(actual: actual, flushed: flushed.snapshot(), pending: pending)
        outcome.lostSomething = ModelKit.firstDifference(actual, crashView.snapshot()) != nil
        // The recovered image keeps working: a write and a read back.
        let probe = rng.bytes(700)
        try probe.withUnsafeBytes { try recovered.write($0, at: c.diskSize / 2) }
        if try recovered.readBytes(at: c.diskSize / 2, count: 700) != probe {
            outcome.failures.append("a write after recovery does not read back")
        }
        return outcome
    }
}
