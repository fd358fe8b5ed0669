import Foundation
import QED
import TestSupport
import Testing

// Crash tests: a random workload on a FaultInjectingFile, a power cut at a random mutation
// (possibly inside an operation) with a random crash mode, then recovery from the durable bytes.
//
// What is asserted, per guest byte:
// - a byte no operation touched since the last completed flush() reads exactly its flushed value;
// - any other byte reads its flushed value or a value one of those operations gave it (a write's
//   data, a zero write's or discard's zero);
// and per guest 512-byte sector: a sector that every such operation covered whole reads as one
// version — the flushed one or one operation's — never a mix (host sectors are the atomic unit).
// Metadata: reopening read-write succeeds (NEED_CHECK triggers check-and-repair without a
// backing file), check() then finds no corruption, repair + close + reopen changes no byte, and
// new allocations after recovery land on space nothing references.

struct CrashConfig: Sendable, CustomStringConvertible {
    var clusterSize: UInt32
    var tableSize: UInt32
    var diskSize: UInt64
    var backingSize: Int?
    /// Most operations land here: around an L2 boundary for small tables, everywhere otherwise.
    var hot: Range<UInt64>
    var cuts: Int
    /// Bytes of metadata journal to create the image with (nil: QEMU's layout, no journal).
    var journalSize: UInt64? = nil

    var cs: UInt64 { UInt64(clusterSize) }
    var description: String {
        "\(clusterSize / 1024)K/\(tableSize) \(backingSize == nil ? "no-backing" : "raw-backing")"
            + (journalSize.map { " journal \($0 / 1024)K" } ?? "")
    }

    /// 4 KiB clusters, 2-cluster tables: one L2 maps 4 MiB; the disk crosses into a second one.
    static func small(backing: Bool) -> CrashConfig {
        CrashConfig(
            clusterSize: 4096, tableSize: 2, diskSize: (4 << 20) + (128 << 10) + 1536,
            backingSize: backing ? (4 << 20) + (64 << 10) + 1000 : nil,
            hot: ((4 << 20) - (48 << 10))..<((4 << 20) + (48 << 10)), cuts: cutsPerConfig)
    }

    /// 64 KiB clusters, 4-cluster tables.
    static func large(backing: Bool) -> CrashConfig {
        CrashConfig(
            clusterSize: 65536, tableSize: 4, diskSize: (1 << 20) + 1536,
            backingSize: backing ? (640 << 10) + 1000 : nil,
            hot: 0..<((1 << 20) + 1536), cuts: cutsPerConfig)
    }

    /// Cuts per configuration (4 configurations); `QED_CRASH_CUTS` overrides.
    static var cutsPerConfig: Int {
        ProcessInfo.processInfo.environment["QED_CRASH_CUTS"].flatMap { Int($0) } ?? 300
    }

    static let all: [CrashConfig] = [
        small(backing: false), small(backing: true), large(backing: false), large(backing: true),
    ]
}

/// A guest change made after the last completed flush: its bytes (nil = zeroes) are candidates.
struct PendingChange {
    var offset: UInt64
    var length: Int
    var bytes: [UInt8]?

    var range: Range<UInt64> { offset..<(offset + UInt64(length)) }
}

/// Checks a recovered disk against the flushed state and the candidate changes; returns failures.
func checkCandidates(actual: [UInt8], flushed: [UInt8], pending: [PendingChange]) -> [String] {
    var failures: [String] = []
    // Merge the changed ranges.
    var covered: [Range<Int>] = []
    for r in pending.map({ Int($0.offset)..<(Int($0.offset) + $0.length) }).sorted(by: { $0.lowerBound < $1.lowerBound }
    ) {
        if let last = covered.last, r.lowerBound <= last.upperBound {
            covered[covered.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
        } else {
            covered.append(r)
        }
    }
    // Untouched bytes: exact.
    var pos = 0
    for r in covered + [actual.count..<actual.count] {
        if let d = ModelKit.firstDifference(actual, flushed, from: pos, to: r.lowerBound) {
            failures.append(
                "byte \(d) was not written after the last flush but reads \(ModelKit.hex(actual, at: d)), flushed \(ModelKit.hex(flushed, at: d))"
            )
            break
        }
        pos = r.upperBound
    }
    // Touched bytes: flushed value or a candidate (pointer loops: this runs in debug builds).
    for r in covered {
        var ok = [Bool](repeating: false, count: r.count)
        actual.withUnsafeBufferPointer { a in
            flushed.withUnsafeBufferPointer { f in
                ok.withUnsafeMutableBufferPointer { ok in
                    for i in r where a[i] == f[i] { ok[i - r.lowerBound] = true }
                    for change in pending {
                        let lo = max(r.lowerBound, Int(change.offset))
                        let hi = min(r.upperBound, Int(change.offset) + change.length)
                        guard lo < hi else { continue }
                        if let bytes = change.bytes {
                            bytes.withUnsafeBufferPointer { b in
                                let shift = Int(change.offset)
                                for i in lo..<hi where a[i] == b[i - shift] { ok[i - r.lowerBound] = true }
                            }
                        } else {
                            for i in lo..<hi where a[i] == 0 { ok[i - r.lowerBound] = true }
                        }
                    }
                }
            }
        }
        if let bad = ok.firstIndex(of: false) {
            let i = r.lowerBound + bad
            failures.append(
                "byte \(i) reads \(ModelKit.hex(actual, at: i, count: 1)): neither its flushed value \(ModelKit.hex(flushed, at: i, count: 1)) nor one written since"
            )
            break
        }
    }
    // Sectors that every change covered whole: one version.
    var sectorChanges: [Int: [Int]] = [:]
    var partial = Set<Int>()
    for (index, change) in pending.enumerated() {
        let first = Int(change.offset) / 512
        let last = (Int(change.offset) + change.length - 1) / 512
        for s in first...last {
            let whole =
                Int(change.offset) <= s * 512 && Int(change.offset) + change.length >= min(actual.count, s * 512 + 512)
            if whole { sectorChanges[s, default: []].append(index) } else { partial.insert(s) }
        }
    }
    for (s, indices) in sectorChanges.sorted(by: { $0.key < $1.key }) where !partial.contains(s) {
        let r = (s * 512)..<min(actual.count, s * 512 + 512)
        if ModelKit.firstDifference(actual, flushed, from: r.lowerBound, to: r.upperBound) == nil { continue }
        let matches = indices.contains { index in
            let change = pending[index]
            guard let bytes = change.bytes else { return ModelKit.isZero(actual, r) }
            return actual.withUnsafeBytes { a in
                bytes.withUnsafeBytes { b in
                    memcmp(a.baseAddress! + r.lowerBound, b.baseAddress! + (r.lowerBound - Int(change.offset)), r.count)
                        == 0
                }
            }
        }
        if !matches {
            failures.append(
                "sector \(s) (guest \(s * 512)) mixes versions: it is neither its flushed content nor that of one of the \(indices.count) operations that covered it whole"
            )
            break
        }
    }
    return failures
}

/// A new image for `config` on a fault-injecting file (over the raw `backingPath`, if any), opened
/// read-write with options whose NEED_CHECK timer never fires by itself (it must not clear the
/// flag behind the test's back).
func makeCrashImage(
    _ config: CrashConfig, path: String, backingPath: String?
) throws
    -> (file: FaultInjectingFile, options: OpenOptions, image: Image)
{
    let file = FaultInjectingFile(path: path)
    var create = CreateOptions(size: config.diskSize, clusterSize: config.clusterSize, tableSize: config.tableSize)
    create.backingFile = backingPath
    create.backingFormat = backingPath == nil ? nil : .raw
    create.journalSize = config.journalSize
    try Image.create(on: file, options: create)
    var options = OpenOptions()
    options.needCheckDelay = 1e6
    return (file, options, try Image.open(file: file, options: options))
}

/// One workload, one cut (sometimes two), one recovery.
func runCrashCut(config: CrashConfig, backingPath: String?, backing: [UInt8], seed: UInt64) throws -> CutOutcome {
    var rng = ModelRNG(seed: seed)
    let cs = config.cs
    let (file, options, opened) = try makeCrashImage(config, path: "/crash-test/disk.qed", backingPath: backingPath)
    var image: Image? = opened

    var model = ReferenceDisk(size: config.diskSize, clusterSize: cs, backing: backing)
    var flushed = model
    var pending: [PendingChange] = []
    var log: [String] = []

    func pickRange() -> Range<UInt64> {
        let span = rng.chance(0.8) ? config.hot : 0..<config.diskSize
        var start = span.lowerBound + rng.next() % UInt64(span.count)
        if rng.chance(0.5) { start = start / 512 * 512 }
        let room = config.diskSize - start
        var length = 1 + rng.next() % min(room, rng.chance(0.7) ? 4096 : 3 * cs)
        if rng.chance(0.5) { length = min(room, (length + 511) / 512 * 512) }
        if rng.chance(0.25) {  // whole clusters
            start = start / cs * cs
            length = min(config.diskSize - start, (1 + rng.next() % 3) * cs)
        }
        return start..<(start + length)
    }

    // Half of the time, start from an image that already has data and was closed cleanly
    // (NEED_CHECK clear while L2 tables exist: the next allocation must set it durably first).
    if rng.chance(0.5) {
        for _ in 0..<(1 + rng.next() % 6) {
            let r = pickRange()
            if rng.chance(0.75) {
                let data = rng.bytes(Int(r.count))
                try image!.write(data, at: r.lowerBound)
                model.write(data, at: r.lowerBound)
            } else {
                try image!.writeZeroes(at: r.lowerBound, length: UInt64(r.count))
                model.writeZeroes(at: r.lowerBound, length: UInt64(r.count))
            }
        }
        try image!.close()
        image = try Image.open(file: file, options: options)
        flushed = model
        log.append("prefilled, closed, reopened")
    }

    let opCount = 1 + Int(rng.next() % 24)
    file.cut(afterMutations: Int(rng.next() % UInt64(opCount * 5 + 1)))
    workload: for step in 0..<opCount {
        let roll = rng.next() % 100
        let r = pickRange()
        var changes: [PendingChange] = []
        var perform: () throws -> Void
        var describe: String
        switch roll {
        case 0..<15:
            let got = try image!.read(at: r.lowerBound, count: Int(r.count))
            if let d = ModelKit.firstDifference(got, model.read(at: r.lowerBound, count: Int(r.count))) {
                return CutOutcome(failures: [
                    "before the cut, read \(r) differs from the model at \(r.lowerBound + UInt64(d)) [seed \(seed) \(config); ops: \(log)]"
                ])
            }
            continue workload
        case 15..<60:
            let data = rng.bytes(Int(r.count))
            changes = [PendingChange(offset: r.lowerBound, length: Int(r.count), bytes: data)]
            describe = "write \(r)"
            perform = {
                try image!.write(data, at: r.lowerBound)
                model.write(data, at: r.lowerBound)
            }
        case 60..<75:
            let unmap = rng.chance(0.5)
            changes = [PendingChange(offset: r.lowerBound, length: Int(r.count), bytes: nil)]
            describe = "zero \(r)\(unmap ? " unmap" : "")"
            perform = {
                try image!.writeZeroes(at: r.lowerBound, length: UInt64(r.count), unmap: unmap)
                model.writeZeroes(at: r.lowerBound, length: UInt64(r.count))
            }
        case 75..<87:
            var copy = model
            changes = copy.discard(at: r.lowerBound, length: UInt64(r.count))
                .map { PendingChange(offset: $0.lowerBound, length: Int($0.count), bytes: nil) }
            describe = "discard \(r)"
            perform = {
                try image!.discard(at: r.lowerBound, length: UInt64(r.count))
                model.discard(at: r.lowerBound, length: UInt64(r.count))
            }
        default:
            describe = "flush"
            perform = {
                try image!.flush()
                pending = []
                flushed = model
            }
        }
        pending += changes
        do {
            try perform()
            log.append(describe)
        } catch let error as QEDError where error.code == .io && file.isFrozen {
            log.append(describe + " <cut>")
            break workload
        } catch {
            return CutOutcome(failures: [
                "\(describe) failed before the cut: \(error) [seed \(seed) \(config); ops: \(log)]"
            ])
        }
        _ = step
    }

    // Sometimes the session ends with close() (a cut can land inside it); a completed close
    // makes everything durable, like a flush.
    if !file.isFrozen && rng.chance(0.15) {
        do {
            try image!.close()
            pending = []
            flushed = model
            log.append("close")
        } catch let error as QEDError where error.code == .io && file.isFrozen {
            log.append("close <cut>")
        }
    }

    let cutInside = log.last?.hasSuffix("<cut>") ?? false
    let mode = FaultInjectingFile.CrashMode.random(using: &rng)
    var durable = file.crash(mode: mode, rng: &rng)
    image = nil  // dropped, not closed: its deinit's close() meets a frozen file
    var context =
        "seed \(seed) \(config) mode \(mode) after \(file.mutationCount) mutations; ops: \(log.joined(separator: ", "))"

    // Sometimes the first recovery (open with its check-and-repair, then close) is cut too.
    var interrupted = false
    if rng.chance(0.25) {
        let second = FaultInjectingFile(durable, path: "/crash-test/disk.qed")
        let budget = Int(rng.next() % 10)
        second.cut(afterMutations: budget)
        do {
            let attempt = try Image.open(file: second, options: options)
            try attempt.close()
        } catch let error as QEDError where error.code == .io && second.isFrozen {
            // cut during recovery
        }
        let secondMode = FaultInjectingFile.CrashMode.random(using: &rng)
        durable = second.crash(mode: secondMode, rng: &rng)
        interrupted = true
        context += "; recovery cut after \(budget) mutations, mode \(secondMode)"
    }

    var outcome = CutOutcome(cutInsideOperation: cutInside, interruptedRecovery: interrupted)
    verifyRecovery(
        durable: durable, config: config, backingPath: backingPath, options: options,
        flushed: flushed, pending: pending, crashView: model, outcome: &outcome, rng: &rng)
    outcome.failures = outcome.failures.map { "\($0) [\(context)]" }
    return outcome
}

/// One guest operation of a concurrent crash workload, as logged by its worker.
struct LoggedOperation: Sendable {
    enum Kind: Sendable {
        case write(UInt64, [UInt8])
        case zero(UInt64, UInt64)
        case discard(UInt64, UInt64)
    }
    var worker: Int
    var kind: Kind
    var changes: [PendingChange]
    /// Ticket taken just before the operation was issued (for the trace of a failed cut).
    var start = 0
    /// Ticket taken when the operation returned; nil if it failed at the cut.
    var end: Int?

    func apply(to model: inout ReferenceDisk) {
        switch kind {
        case .write(let at, let data): model.write(data, at: at)
        case .zero(let at, let length): model.writeZeroes(at: at, length: length)
        case .discard(let at, let length): model.discard(at: at, length: length)
        }
    }

    /// "w1 t14–t15 write [171971, 226108)": who, issued and returned when ("cut": failed at the cut).
    var trace: String {
        let what: String
        switch kind {
        case .write(let at, let data): what = "write [\(at), \(at + UInt64(data.count)))"
        case .zero(let at, let length): what = "zero [\(at), \(at + length))"
        case .discard(let at, let length): what = "discard [\(at), \(at + length))"
        }
        return "w\(worker) t\(start)–\(end.map { "t\($0)" } ?? "cut") \(what)"
    }
}

extension PendingChange: @unchecked Sendable {}

/// Shared log of a concurrent crash workload: a ticket clock orders operation ends and flush
/// starts; an operation is durable iff it ended before a flush that completed started.
final class ConcurrentLog: @unchecked Sendable {
    private let lock = NSLock()
    private var counter = 0
    private(set) var operations: [LoggedOperation] = []
    private(set) var completedFlushStarts: [Int] = []

    func ticket() -> Int {
        lock.lock()
        defer { lock.unlock() }
        counter += 1
        return counter
    }
    func record(_ op: LoggedOperation) {
        lock.lock()
        operations.append(op)
        lock.unlock()
    }
    func flushCompleted(startedAt start: Int) {
        lock.lock()
        completedFlushStarts.append(start)
        lock.unlock()
    }
}

/// Three workers on interleaved 2-cluster blocks of one image on a FaultInjectingFile, a cut at a
/// random mutation (thread interleaving makes the exact cut vary between runs), then recovery.
func runConcurrentCut(config: CrashConfig, backingPath: String?, backing: [UInt8], seed: UInt64) throws -> CutOutcome {
    var rng = ModelRNG(seed: seed)
    let cs = config.cs
    let (file, options, opened) = try makeCrashImage(config, path: "/crash-test/conc.qed", backingPath: backingPath)
    var image: Image? = opened
    let initial = ReferenceDisk(size: config.diskSize, clusterSize: cs, backing: backing)
    let shared = SharedModel(initial)
    let log = ConcurrentLog()
    let failures = FailureLog()
    let workers = 3
    let blockBytes = 2 * cs
    let opsPerWorker = 1 + Int(rng.next() % 8)
    file.cut(afterMutations: Int(rng.next() % UInt64(workers * opsPerWorker * 5 + 1)))
    let live = image!
    ModelKit.runThreads(workers) { w in
        var rng = ModelRNG(seed: seed &+ UInt64(w + 1) &* 0x9E37_79B9)
        let blocks = (config.diskSize + blockBytes - 1) / blockBytes
        let hotBlocks = (config.hot.lowerBound / blockBytes)..<min(blocks, config.hot.upperBound / blockBytes)
        func myBlock() -> Range<UInt64> {
            let pool = rng.chance(0.8) ? hotBlocks : 0..<blocks
            var j = pool.lowerBound + rng.next() % UInt64(pool.count)
            j = j - j % UInt64(workers) + UInt64(w)
            if j >= blocks { j -= UInt64(workers) }
            return (j * blockBytes)..<min(config.diskSize, (j + 1) * blockBytes)
        }
        for _ in 0..<opsPerWorker {
            let block = myBlock()
            var start = block.lowerBound + rng.next() % UInt64(block.count)
            if rng.chance(0.5) { start = start / 512 * 512 }
            var length = 1 + rng.next() % (block.upperBound - start)
            if rng.chance(0.3) { (start, length) = (block.lowerBound, UInt64(block.count)) }
            let roll = rng.next() % 100
            do {
                if roll < 10 {
                    let got = try live.read(at: start, count: Int(length))
                    if !file.isFrozen, let d = ModelKit.firstDifference(got, shared.read(at: start, count: Int(length)))
                    {
                        failures.add("worker \(w): read before the cut differs at \(start + UInt64(d))")
                    }
                    continue
                }
                if roll >= 87 {
                    let t = log.ticket()
                    try live.flush()
                    log.flushCompleted(startedAt: t)
                    continue
                }
                var op: LoggedOperation
                if roll < 55 {
                    let data = rng.bytes(Int(length))
                    op = LoggedOperation(
                        worker: w, kind: .write(start, data),
                        changes: [PendingChange(offset: start, length: data.count, bytes: data)])
                } else if roll < 72 {
                    op = LoggedOperation(
                        worker: w, kind: .zero(start, length),
                        changes: [PendingChange(offset: start, length: Int(length), bytes: nil)])
                } else {
                    var copy = shared.value
                    let zeroed = copy.discard(at: start, length: length)
                    op = LoggedOperation(
                        worker: w, kind: .discard(start, length),
                        changes: zeroed.map { PendingChange(offset: $0.lowerBound, length: Int($0.count), bytes: nil) })
                }
                op.start = log.ticket()
                do {
                    switch op.kind {
                    case .write(let at, let data): try live.write(data, at: at)
                    case .zero(let at, let n): try live.writeZeroes(at: at, length: n, unmap: rng.chance(0.5))
                    case .discard(let at, let n): try live.discard(at: at, length: n)
                    }
                } catch {
                    log.record(op)  // in flight at the cut: a candidate, never durable
                    throw error
                }
                op.end = log.ticket()
                shared.disk.withLock { op.apply(to: &$0) }
                log.record(op)
            } catch let error as QEDError where error.code == .io && file.isFrozen {
                return
            } catch {
                failures.add("worker \(w): \(error)")
                return
            }
        }
    }
    if failures.count > 0 {
        return CutOutcome(failures: failures.messages.map { "\($0) [seed \(seed) \(config)]" })
    }
    let mode = FaultInjectingFile.CrashMode.random(using: &rng)
    let durable = file.crash(mode: mode, rng: &rng)
    image = nil

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
    let context =
        "seed \(seed) \(config) mode \(mode), \(log.operations.count) operations, \(log.completedFlushStarts.count) flushes (interleaving varies)"
    var outcome = CutOutcome(cutInsideOperation: log.operations.contains { $0.end == nil })
    verifyRecovery(
        durable: durable, config: config, backingPath: backingPath, options: options,
        flushed: flushed, pending: pending, crashView: crashView, outcome: &outcome, rng: &rng)
    if !outcome.failures.isEmpty {  // the interleaving this run had, for the report
        let trace =
            "ops: \(log.operations.map(\.trace).joined(separator: "; ")); completed flushes started at \(log.completedFlushStarts.sorted().map { "t\($0)" })"
        outcome.failures = outcome.failures.map { "\($0) [\(context); \(trace)]" }
    }
    return outcome
}

/// What one cut exercised and what went wrong.
struct CutOutcome {
    var cutInsideOperation = false
    var interruptedRecovery = false
    /// The recovered disk differs from the state just before the cut (something was lost).
    var lostSomething = false
    /// The check on open repaired invalid offsets.
    var repairedOnOpen = false
    /// The check on open recovered from the journal (not a full scan).
    var recoveredFromJournal = false
    /// The check on open gave back leaked clusters.
    var leaksFixedOnOpen = false
    var failures: [String] = []
}

/// Reopens the surviving bytes and checks everything the crash guarantees. An error thrown on the
/// way is recorded as a failure of `outcome` (one bad cut is reported with its context, not thrown).
func verifyRecovery(
    durable: [UInt8], config: CrashConfig, backingPath: String?, options: OpenOptions,
    flushed: ReferenceDisk, pending: [PendingChange], crashView: ReferenceDisk,
    outcome: inout CutOutcome, rng: inout ModelRNG
) {
    do {
        // With a backing file the engine never sets NEED_CHECK: it relies on sync-before-L2-update.
        // Without one, a clear NEED_CHECK means no check on open, so the check() after recovery
        // below is what catches an inconsistency left behind a bit that was not durable in time.
        let header = try Header(decoding: durable.prefix(Header.encodedSize))
        if backingPath != nil && header.features.contains(.needCheck) {
            outcome.failures.append("NEED_CHECK set on an image with a backing file")
        }

        // Recovery: reopen read-write from the surviving bytes. (A FaultInjectingFile rather than a
        // MemoryFile only because MemoryFile.setLength is slow in debug builds; nothing crashes it.)
        let memory = FaultInjectingFile(durable, path: "/crash-test/disk.qed")
        let recovered = try Image.open(file: memory, options: options)
        if backingPath != nil, let report = recovered.checkOnOpen {
            outcome.failures.append("an image with a backing file was checked on open: \(report)")
        }
        if let report = recovered.checkOnOpen {
            if report.corruptions != 0 || report.checkErrors != 0 {
                outcome.failures.append("check on open left corruption: \(report)")
            }
            outcome.repairedOnOpen = report.corruptionsFixed > 0
            outcome.recoveredFromJournal = report.method == .journal
            outcome.leaksFixedOnOpen = report.leaksFixed > 0
        }
        if config.journalSize != nil && !recovered.isJournalValid {
            outcome.failures.append("the journal was turned off by recovery")
        }
        if recovered.isDirty { outcome.failures.append("NEED_CHECK still set after the check on open") }
        let first = try recovered.check()
        if first.corruptions != 0 || first.checkErrors != 0 {
            outcome.failures.append("check after recovery: \(first)")
        }
        // With the journal, recovery leaves no leak either: every cluster allocated since the last
        // checkpoint that no table references was given back.
        if config.journalSize != nil && first.leaks != 0 {
            outcome.failures.append("\(first.leaks) leaked clusters after journal recovery: \(first)")
        }
        let actual = try recovered.read(at: 0, count: Int(config.diskSize))
        outcome.failures += checkCandidates(actual: actual, flushed: flushed.snapshot(), pending: pending)
        outcome.lostSomething = ModelKit.firstDifference(actual, crashView.snapshot()) != nil

        // Repair, then new allocations must not disturb anything.
        let repaired = try recovered.check(repair: true)
        if repaired.corruptions != 0 || repaired.checkErrors != 0 {
            outcome.failures.append("check(repair: true): \(repaired)")
        }
        var expected = actual
        for _ in 0..<2 {
            let at = rng.next() % (config.diskSize - 600)
            let data = rng.bytes(1 + Int(rng.next() % 599))
            try recovered.write(data, at: at)
            expected.replaceSubrange(Int(at)..<Int(at) + data.count, with: data)
        }
        try recovered.close()
        let reopened = try Image.open(file: memory, options: options)
        if reopened.isDirty || reopened.checkOnOpen != nil {
            outcome.failures.append("NEED_CHECK set after a clean close")
        }
        if let d = ModelKit.firstDifference(try reopened.read(at: 0, count: Int(config.diskSize)), expected) {
            outcome.failures.append("after repair, two new writes, close and reopen, byte \(d) is not as expected")
        }
        try reopened.close()
    } catch {
        outcome.failures.append("threw \(error)")
    }
}

/// A crash run's temporary directory, with the config's raw backing file in it when it has one.
struct CrashSetup {
    /// The temporary directory; the caller removes it when its run ends.
    let directory: TemporaryDirectory
    /// The raw backing file's path, or nil without a backing file.
    var backingPath: String?
    /// The backing file's bytes (empty without a backing file).
    var backing: [UInt8] = []

    init(_ config: CrashConfig, directoryName: String, rng: inout ModelRNG) throws {
        directory = try TemporaryDirectory(prefix: "qed-\(directoryName)")
        if let size = config.backingSize {
            let raw = try ModelKit.makeRawBacking(in: directory.path, size: size, rng: &rng)
            backingPath = raw.path
            backing = raw.bytes
        }
    }
}

@Suite("Crash")
struct CrashTests {
    @Test("power cuts at random points recover to flushed data plus old-or-new", arguments: CrashConfig.all)
    func randomCuts(config: CrashConfig) throws {
        if let only = ProcessInfo.processInfo.environment["QED_CRASH_ONLY"], only != config.description { return }
        let base = ModelRNG.seed(0xC2A5_4000 &+ UInt64(config.clusterSize) &+ UInt64(config.backingSize ?? 0), salt: 5)
        var rng = ModelRNG(seed: base)
        let setup = try CrashSetup(config, directoryName: "crash", rng: &rng)
        defer { setup.directory.remove() }
        let (backingPath, backing) = (setup.backingPath, setup.backing)
        var failed = 0
        var (inside, interrupted, lost, repaired) = (0, 0, 0, 0)
        for i in 0..<config.cuts {
            let seed = base &+ UInt64(i)
            var outcome: CutOutcome
            do {
                outcome = try runCrashCut(config: config, backingPath: backingPath, backing: backing, seed: seed)
            } catch {
                outcome = CutOutcome(failures: ["threw \(error) [seed \(seed) \(config)]"])
            }
            if outcome.cutInsideOperation { inside += 1 }
            if outcome.interruptedRecovery { interrupted += 1 }
            if outcome.lostSomething { lost += 1 }
            if outcome.repairedOnOpen { repaired += 1 }
            if !outcome.failures.isEmpty {
                failed += 1
                if failed <= 3 { Issue.record("cut \(i): \(outcome.failures.joined(separator: "\n"))") }
            }
        }
        print(
            "crash \(config): \(config.cuts) cuts, \(inside) inside an operation, \(interrupted) with a cut recovery, \(lost) lost unflushed data, \(repaired) repaired on open, \(failed) failed"
        )
        #expect(failed == 0, "\(failed) of \(config.cuts) cuts failed (base seed \(base))")
        // The harness must actually exercise crashes (a cut that never lands tests nothing).
        #expect(
            inside > config.cuts / 4 && lost > config.cuts / 10 && interrupted > config.cuts / 10,
            "too few interesting cuts: \(inside) inside, \(lost) lossy, \(interrupted) interrupted recoveries")
        if config.backingSize == nil && config.cuts >= 100 {
            #expect(repaired > 0, "no cut ever left an entry for the check on open to repair")
        }
    }

    @Test(
        "power cuts during concurrent workloads",
        arguments: [CrashConfig.small(backing: false), .small(backing: true), .large(backing: true)])
    func concurrentCuts(config: CrashConfig) throws {
        let base = ModelRNG.seed(0xC0C7_0000 &+ UInt64(config.clusterSize) &+ UInt64(config.backingSize ?? 0), salt: 8)
        var rng = ModelRNG(seed: base)
        let setup = try CrashSetup(config, directoryName: "crash-conc", rng: &rng)
        defer { setup.directory.remove() }
        let (backingPath, backing) = (setup.backingPath, setup.backing)
        let rounds = 100
        var failed = 0
        var lost = 0
        for i in 0..<rounds {
            let seed = base &+ UInt64(i)
            var outcome: CutOutcome
            do {
                outcome = try runConcurrentCut(config: config, backingPath: backingPath, backing: backing, seed: seed)
            } catch {
                outcome = CutOutcome(failures: ["threw \(error) [seed \(seed) \(config)]"])
            }
            if outcome.lostSomething { lost += 1 }
            if !outcome.failures.isEmpty {
                failed += 1
                if failed <= 3 { Issue.record("round \(i): \(outcome.failures.joined(separator: "\n"))") }
            }
        }
        print("concurrent crash \(config): \(rounds) cuts, \(lost) lost unflushed data, \(failed) failed")
        #expect(
            failed == 0, "\(failed) of \(rounds) concurrent cuts failed (base seed \(base); thread interleaving varies)"
        )
        #expect(lost > rounds / 10, "too few cuts lost anything (\(lost))")
    }

    @Test(
        "power cuts while the NEED_CHECK timer marks the image clean (and, with a journal, checkpoints it)",
        arguments: [nil, 16 << 10] as [UInt64?])
    func timerCuts(journalSize: UInt64?) throws {
        let config = CrashConfig.small(backing: false)
        let base = ModelRNG.seed(0x7123_0000, salt: 6)
        var failed = 0
        var cleared = 0
        let rounds = 120
        for i in 0..<rounds {
            let seed = base &+ UInt64(i)
            var rng = ModelRNG(seed: seed)
            let file = FaultInjectingFile(path: "/crash-test/timer.qed")
            var create = CreateOptions(
                size: config.diskSize, clusterSize: config.clusterSize, tableSize: config.tableSize)
            create.journalSize = journalSize
            try Image.create(on: file, options: create)
            var options = OpenOptions()
            options.needCheckDelay = 0.02
            var image: Image? = try Image.open(file: file, options: options)
            var model = ReferenceDisk(size: config.diskSize, clusterSize: config.cs)
            // A first write, flushed: its L2 table is linked durably, so what follows only adds entries.
            let seedData = rng.bytes(512)
            try image!.write(seedData, at: config.hot.lowerBound)
            model.write(seedData, at: config.hot.lowerBound)
            try image!.flush()
            let initial = model
            var pending: [PendingChange] = []
            for _ in 0..<(1 + rng.next() % 4) {
                let at = config.hot.lowerBound + rng.next() % UInt64(config.hot.count - 9000)
                let data = rng.bytes(1 + Int(rng.next() % 9000))
                try image!.write(data, at: at)
                model.write(data, at: at)
                pending.append(PendingChange(offset: at, length: data.count, bytes: data))
            }
            // The timer syncs, rewrites the header without NEED_CHECK, syncs (and with a journal
            // resets the log's clusters and syncs): cut among those.
            let budget = Int(rng.next() % (journalSize == nil ? 4 : 6))
            file.cut(afterMutations: budget)
            // Either ends it: the timer completes within the budget, or the cut freezes the file. (The
            // deadline only bounds a timer that never fires.)
            let deadline = Date().addingTimeInterval(120)
            while image!.isDirty && !file.isFrozen && Date() < deadline { usleep(1000) }
            let wasCleared = !image!.isDirty
            if wasCleared { cleared += 1 }
            // Only partial modes: the interesting survivor is "header kept, some table write lost".
            let p = [0.5, 0.8][Int(rng.next() % 2)]
            let mode: FaultInjectingFile.CrashMode = rng.chance(0.5) ? .keepSubset(p) : .torn(p)
            let durable = file.crash(mode: mode, rng: &rng)
            image = nil
            var quiet = options
            quiet.needCheckDelay = 1e6
            var outcome = CutOutcome()
            var checked = config
            checked.journalSize = journalSize
            verifyRecovery(
                durable: durable, config: checked, backingPath: nil, options: quiet, flushed: initial,
                pending: pending, crashView: model, outcome: &outcome, rng: &rng)
            if !outcome.failures.isEmpty {
                failed += 1
                if failed <= 3 {
                    Issue.record(
                        "round \(i): \(outcome.failures.joined(separator: "\n")) [seed \(seed) cut after \(budget) timer mutations, mode \(mode), timer cleared: \(wasCleared)]"
                    )
                }
            }
        }
        #expect(failed == 0, "\(failed) of \(rounds) timer cuts failed (base seed \(base))")
        #expect(
            cleared > 0 && cleared < rounds,
            "the cut should sometimes stop the timer and sometimes not (\(cleared) cleared)")
    }

    // MARK: The fault-injecting file itself

    @Test("fault-injecting file: sync, lose-all, keep-all and freezing")
    func fileBasics() throws {
        var rng = ModelRNG(seed: 11)
        let file = FaultInjectingFile([1, 2, 3, 4])
        try file.writeBytes([9, 9], at: 1)
        #expect(try file.readBytes(count: 4, at: 0) == [1, 9, 9, 4])
        #expect(file.durableBytes == [1, 2, 3, 4])
        try file.sync()
        #expect(file.durableBytes == [1, 9, 9, 4] && file.pendingCount == 0)
        try file.setLength(8)
        try file.writeBytes([7], at: 6)
        try file.punchHole(at: 0, length: 2)
        #expect(file.volatileBytes == [0, 0, 9, 4, 0, 0, 7, 0])
        #expect(
            FaultInjectingFile.survivor(
                durable: file.durableBytes, pending: file.pendingOperations,
                mode: .loseAll, rng: &rng) == [1, 9, 9, 4])
        #expect(
            FaultInjectingFile.survivor(
                durable: file.durableBytes, pending: file.pendingOperations,
                mode: .keepAll, rng: &rng) == [0, 0, 9, 4, 0, 0, 7, 0])
        let crashed = file.crash(mode: .loseAll, rng: &rng)
        #expect(crashed == [1, 9, 9, 4])
        #expect(throws: QEDError.self) { try file.writeBytes([5], at: 0) }
        #expect(throws: QEDError.self) { try file.sync() }
        #expect(file.durableBytes == [1, 9, 9, 4], "a frozen file must not change")
    }

    @Test("fault-injecting file: subsets keep order, torn writes split at 512-byte sectors")
    func fileSubsetsAndTearing() throws {
        var rng = ModelRNG(seed: 12)
        let old = [UInt8](repeating: 0, count: 2048)
        let a = [UInt8](repeating: 0xAA, count: 1536)
        let b = [UInt8](repeating: 0xBB, count: 100)
        let pending: [FaultInjectingFile.Operation] = [.write(offset: 256, bytes: a), .write(offset: 300, bytes: b)]
        var seen = Set<[UInt8]>()
        for _ in 0..<200 {
            let out = FaultInjectingFile.survivor(durable: old, pending: pending, mode: .keepSubset(0.5), rng: &rng)
            let bKept = out[300] == 0xBB
            let aKept = out[256] == 0xAA
            var want = old
            if aKept { want.replaceSubrange(256..<1792, with: a) }
            if bKept { want.replaceSubrange(300..<400, with: b) }
            #expect(out == want)
            seen.insert(out)
        }
        #expect(seen.count == 4, "all four subsets should occur")

        var tornSeen = Set<[Bool]>()
        for _ in 0..<300 {
            let out = FaultInjectingFile.survivor(durable: old, pending: [pending[0]], mode: .torn(0.5), rng: &rng)
            // Pieces: [256,512) [512,1024) [1024,1536) [1536,1792): each all-new or all-old.
            let pieces = [256..<512, 512..<1024, 1024..<1536, 1536..<1792]
            var kept: [Bool] = []
            for p in pieces {
                let isNew = out[p].allSatisfy { $0 == 0xAA }
                let isOld = out[p].allSatisfy { $0 == 0 }
                #expect(isNew || isOld, "piece \(p) torn inside a sector")
                kept.append(isNew)
            }
            #expect(out[0..<256].allSatisfy { $0 == 0 } && out[1792...].allSatisfy { $0 == 0 })
            tornSeen.insert(kept)
        }
        #expect(tornSeen.count == 16, "every combination of sector pieces should occur")
    }

    @Test("fault-injecting file: cut after N mutations freezes at the Nth")
    func fileCut() throws {
        var rng = ModelRNG(seed: 13)
        let file = FaultInjectingFile()
        file.cut(afterMutations: 3)
        try file.writeBytes([1], at: 0)
        try file.sync()
        try file.writeBytes([2], at: 1)
        #expect(throws: QEDError.self) { try file.writeBytes([3], at: 2) }
        #expect(file.isFrozen)
        #expect(file.volatileBytes == [1, 2])
        #expect(file.crash(mode: .keepAll, rng: &rng) == [1, 2])
        #expect(file.crash(mode: .loseAll, rng: &rng) == [1])
    }

    @Test("a failed sync makes flush() fail instead of claiming durability, until reopen")
    func failedSyncFailsFlush() throws {
        let file = FaultInjectingFile()
        let (image, options) = try createAndOpenWithoutTimer(
            on: file, CreateOptions(size: 1 << 20, clusterSize: 4096, tableSize: 2))
        try image.write([UInt8](repeating: 0x11, count: 4096), at: 8192)
        file.failMutation(after: 0)
        #expect(throws: QEDError.self) { try image.flush() }
        #expect(file.pendingCount > 0, "the failed sync must not have made anything durable")
        // Sticky: the disk would sync again, but the kernel may have dropped the pages the failed
        // sync could not write, so no later flush of this image may claim durability.
        let again = try #require(expectQEDError(.io) { try image.flush() })
        #expect(again.message.contains("failed earlier") && again.message.contains("injected I/O error"))
        #expect(file.pendingCount > 0)
        #expect(try image.read(at: 8192, count: 4096) == [UInt8](repeating: 0x11, count: 4096))
        #expect(throws: QEDError.self) { try image.close() }
        let reopened = try Image.open(file: file, options: options)
        try reopened.flush()
        #expect(file.pendingCount == 0)
        #expect(try reopened.read(at: 8192, count: 4096) == [UInt8](repeating: 0x11, count: 4096))
        try reopened.close()
    }
}
