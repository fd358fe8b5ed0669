import Foundation
import QED
import Synchronization
import TestSupport
import Testing

// Model-based tests: random operations against an Image, every read compared with
// ReferenceDisk; concurrent workers own disjoint (interleaved) cluster blocks, so they share L2
// tables and 512-byte L2 sectors but never race on one cluster. Plus the two same-cluster races
// (concurrent allocating writers; a reader against an allocating writer).

// MARK: - Configurations

struct ModelConfig: Sendable, CustomStringConvertible {
    var clusterSize: UInt32
    var tableSize: UInt32
    /// Guest size, bytes (a multiple of 512, deliberately not of the cluster size).
    var diskSize: UInt64
    /// Size of the raw backing file in bytes (not sector aligned), or nil.
    var backingSize: Int?
    /// A real file via `Image.create(path:)`/`open(path:)` instead of a `MemoryFile`.
    var onDisk: Bool
    /// L2 cache size; small values force evictions and reloads.
    var l2CacheBytes: UInt64
    /// Clusters per ownership block (block j belongs to worker j % workers).
    var blockClusters: UInt64
    /// Byte range most operations land in (around L2 boundaries and the backing's end).
    var hot: Range<UInt64>
    /// Operations per worker relative to the 4 KiB configuration (64 KiB clusters cost more in
    /// debug builds, mostly MemoryFile growing and punching 64 KiB at a time).
    var stepScale: Double = 1

    func steps(_ base: Int) -> Int { Int(Double(base) * stepScale) }

    var cs: UInt64 { UInt64(clusterSize) }

    var description: String {
        "\(clusterSize / 1024)K/\(tableSize) \(backingSize == nil ? "no-backing" : "raw-backing") \(onDisk ? "file" : "memory")"
    }

    /// 4 KiB clusters, 2-cluster tables: one L2 maps 4 MiB, so the disk spans three L2 tables.
    static func small(backing: Bool, onDisk: Bool) -> ModelConfig {
        ModelConfig(
            clusterSize: 4096, tableSize: 2, diskSize: (12 << 20) + 1536,
            backingSize: backing ? (6 << 20) + 1000 : nil, onDisk: onDisk,
            l2CacheBytes: 2 * 8192, blockClusters: 3, hot: ((4 << 20) - (96 << 10))..<((4 << 20) + (96 << 10)))
    }

    /// 64 KiB clusters, 4-cluster tables (the QEMU default).
    static func large(backing: Bool, onDisk: Bool) -> ModelConfig {
        ModelConfig(
            clusterSize: 65536, tableSize: 4, diskSize: (16 << 20) + 1536,
            backingSize: backing ? (10 << 20) + 1000 : nil, onDisk: onDisk,
            l2CacheBytes: 32 << 20, blockClusters: 2, hot: (9 << 20)..<(11 << 20), stepScale: 0.4)
    }

    static let all: [ModelConfig] = [false, true].flatMap { disk in
        [false, true].flatMap { backing in
            [small(backing: backing, onDisk: disk), large(backing: backing, onDisk: disk)]
        }
    }
    static let inMemory: [ModelConfig] = [false, true].flatMap { backing in
        [small(backing: backing, onDisk: false), large(backing: backing, onDisk: false)]
    }
}

/// An image under test with its model's backing content and a way to reopen it.
struct ImageFixture {
    let config: ModelConfig
    let dir: TemporaryDirectory
    let backing: [UInt8]
    let memory: MemoryFile?
    let imagePath: String
    let options: OpenOptions

    init(_ config: ModelConfig, label: String, rng: inout ModelRNG, needCheckDelay: Double = 0.01) throws {
        self.config = config
        dir = try TemporaryDirectory(prefix: "qed-\(label)")
        var create = CreateOptions(size: config.diskSize, clusterSize: config.clusterSize, tableSize: config.tableSize)
        if let size = config.backingSize {
            let raw = try ModelKit.makeRawBacking(in: dir.path, size: size, rng: &rng)
            backing = raw.bytes
            create.backingFile = raw.path
            create.backingFormat = .raw
        } else {
            backing = []
        }
        var options = OpenOptions()
        options.needCheckDelay = needCheckDelay
        options.l2CacheBytes = config.l2CacheBytes
        self.options = options
        imagePath = dir.file("disk.qed")
        if config.onDisk {
            memory = nil
            try Image.create(path: imagePath, options: create)
        } else {
            let file = MemoryFile(path: imagePath)
            memory = file
            try Image.create(on: file, options: create)
        }
    }

    func open() throws -> Image {
        if let memory { return try Image.open(file: memory, options: options) }
        return try openImage(imagePath, options)  // (retries a lock a spawning child still holds)
    }

    func model() -> ReferenceDisk {
        ReferenceDisk(size: config.diskSize, clusterSize: config.cs, backing: backing)
    }

    func cleanup() { dir.remove() }
}

/// The reference model shared by worker threads (each only touches its own clusters).
final class SharedModel: Sendable {
    let disk: Mutex<ReferenceDisk>
    init(_ disk: ReferenceDisk) { self.disk = Mutex(disk) }
    func read(at offset: UInt64, count: Int) -> [UInt8] { disk.withLock { $0.read(at: offset, count: count) } }
    var value: ReferenceDisk { disk.withLock { $0 } }
}

// MARK: - The random workload

/// One worker's random operations on its own blocks; returns how many operations it ran.
/// Every read is compared with the model; mismatches and errors go to `failures`. Without
/// `discards`, the discard share of the operations flushes instead (for workloads running beside
/// something that allocates clusters behind the model's back, such as an add-cow stream, where
/// whether a discard gives a cluster back depends on the race).
@discardableResult
func runModelWorker(
    image: any Disk, model: SharedModel, config: ModelConfig, worker: Int, workers: Int,
    steps: Int, seed: UInt64, failures: FailureLog, discards: Bool = true
) -> Int {
    var rng = ModelRNG(seed: seed)
    let cs = config.cs
    let blockBytes = config.blockClusters * cs
    let blocks = (config.diskSize + blockBytes - 1) / blockBytes
    let mine = (0..<blocks).filter { Int($0 % UInt64(workers)) == worker }
    let hotFirst = config.hot.lowerBound / blockBytes
    let hotEnd = min(blocks, (config.hot.upperBound + blockBytes - 1) / blockBytes)
    let hotMine = mine.filter { $0 >= hotFirst && $0 < hotEnd }
    guard !mine.isEmpty else { return 0 }

    func pickBlock() -> Range<UInt64> {
        let list = (!hotMine.isEmpty && rng.chance(0.7)) ? hotMine : mine
        let j = list[Int(rng.next() % UInt64(list.count))]
        return (j * blockBytes)..<min(config.diskSize, (j + 1) * blockBytes)
    }
    /// A random byte range inside `block`: sector aligned half of the time, usually short.
    func pickRange(_ block: Range<UInt64>) -> Range<UInt64> {
        var start = block.lowerBound + rng.next() % UInt64(block.count)
        if rng.chance(0.5) { start = start / 512 * 512 }
        let room = block.upperBound - start
        var length = rng.chance(0.7) ? 1 + rng.next() % min(room, 8192) : 1 + rng.next() % room
        if rng.chance(0.5) { length = min(room, max(512, (length + 511) / 512 * 512)) }
        return start..<(start + length)
    }
    /// Whole clusters inside `block` (at least one), or nil when the block has no whole cluster.
    func pickClusters(_ block: Range<UInt64>) -> Range<UInt64>? {
        let first = ReferenceDisk.roundUp(block.lowerBound, cs)
        let end = block.upperBound / cs * cs
        guard first < end else { return nil }
        let n = (end - first) / cs
        let a = rng.next() % n
        let b = a + 1 + rng.next() % (n - a)
        return (first + a * cs)..<(first + b * cs)
    }

    let tag = "seed \(seed) worker \(worker)"
    for step in 0..<steps {
        let roll = rng.next() % 100
        let block = pickBlock()
        do {
            switch roll {
            case 0..<30:  // read and compare
                let r = pickRange(block)
                let got = try image.readBytes(at: r.lowerBound, count: Int(r.count))
                let want = model.read(at: r.lowerBound, count: Int(r.count))
                if let d = ModelKit.firstDifference(got, want) {
                    failures.add(
                        "\(tag) step \(step): read \(r) differs at guest \(r.lowerBound + UInt64(d)): got \(ModelKit.hex(got, at: d)) want \(ModelKit.hex(want, at: d))"
                    )
                }
            case 30..<62:
                let r = pickRange(block)
                let data = rng.bytes(Int(r.count))
                try data.withUnsafeBytes { try image.write($0, at: r.lowerBound) }
                model.disk.withLock { $0.write(data, at: r.lowerBound) }
            case 62..<80:
                let r = rng.chance(0.5) ? (pickClusters(block) ?? pickRange(block)) : pickRange(block)
                let unmap = rng.chance(0.5)
                try image.writeZeroes(at: r.lowerBound, length: UInt64(r.count), unmap: unmap)
                model.disk.withLock { $0.writeZeroes(at: r.lowerBound, length: UInt64(r.count)) }
            case 80..<94 where discards:
                let r = rng.chance(0.7) ? (pickClusters(block) ?? pickRange(block)) : pickRange(block)
                try image.discard(at: r.lowerBound, length: UInt64(r.count))
                model.disk.withLock { _ = $0.discard(at: r.lowerBound, length: UInt64(r.count)) }
            default:
                try image.flush()
            }
        } catch {
            failures.add("\(tag) step \(step): \(error)")
            return step
        }
    }
    return steps
}

/// Compares the whole image with the model: bytes, and each cluster's state via `extents`.
func compareWholeDisk(_ image: Image, _ model: ReferenceDisk, context: String) throws {
    let got = try image.read(at: 0, count: Int(model.size))
    let want = model.snapshot()
    let diff = ModelKit.firstDifference(got, want)
    #expect(
        diff == nil,
        "\(context): disk differs from the model at guest \(diff ?? 0): got \(ModelKit.hex(got, at: diff ?? 0)) want \(ModelKit.hex(want, at: diff ?? 0))"
    )

    var mismatches: [String] = []
    for e in try image.extents(at: 0, length: model.size) {
        let kind: ReferenceDisk.ClusterState
        if e.depth == 0 && e.data {
            kind = .allocated
        } else if e.depth == 0 && e.present && e.zero {
            kind = .zero
        } else {
            kind = .unallocated
        }
        var c = e.offset / model.clusterSize
        while c * model.clusterSize < e.offset + e.length {
            if model.state(ofCluster: c) != kind && mismatches.count < 5 {
                mismatches.append("cluster \(c): image \(kind), model \(model.state(ofCluster: c))")
            }
            c += 1
        }
    }
    #expect(mismatches.isEmpty, "\(context): cluster states differ: \(mismatches)")
}

/// The end-of-run checks: metadata clean and exact, content equal before and after reopening.
func verifyFinal(_ image: Image, fixture: ImageFixture, model: ReferenceDisk, context: String) throws {
    let report = try image.check()
    #expect(report.corruptions == 0 && report.leaks == 0 && report.checkErrors == 0, "\(context): check \(report)")
    #expect(
        report.allocatedClusters == UInt64(model.allocatedClusterCount),
        "\(context): \(report.allocatedClusters) allocated clusters, model has \(model.allocatedClusterCount)")
    try compareWholeDisk(image, model, context: context + " (before reopen)")
    try image.close()
    let again = try fixture.open()
    #expect(!again.isDirty, "\(context): NEED_CHECK still set after a clean close")
    #expect(again.checkOnOpen == nil, "\(context): a clean image was checked on open")
    try compareWholeDisk(again, model, context: context + " (after reopen)")
    let second = try again.check()
    #expect(second.isClean, "\(context): check after reopen \(second)")
    try again.close()
}

// MARK: - Tests

@Suite("Model")
struct ModelTests {
    @Test("scripted cases: model and engine agree with hand-computed bytes")
    func scripted() throws {
        var rng = ModelRNG(seed: 7)
        let config = ModelConfig.small(backing: true, onDisk: false)
        let fixture = try ImageFixture(config, label: "scripted", rng: &rng)
        defer { fixture.cleanup() }
        let image = try fixture.open()
        var model = fixture.model()
        let cs = config.cs
        let base = fixture.backing

        // Partial write into an unallocated cluster: the rest of the cluster keeps backing data.
        let a = [UInt8](repeating: 0xA1, count: 100)
        try image.write(a, at: 4 * cs + 50)
        model.write(a, at: 4 * cs + 50)
        var want = Array(base[Int(4 * cs)..<Int(5 * cs)])
        want.replaceSubrange(50..<150, with: a)
        #expect(try image.read(at: 4 * cs, count: Int(cs)) == want)
        #expect(model.read(at: 4 * cs, count: Int(cs)) == want)
        #expect(model.state(ofCluster: 4) == .allocated)

        // Aligned zero write over unallocated clusters: zero clusters hiding the backing.
        try image.writeZeroes(at: 6 * cs, length: 2 * cs)
        model.writeZeroes(at: 6 * cs, length: 2 * cs)
        #expect(try image.read(at: 6 * cs, count: Int(2 * cs)) == [UInt8](repeating: 0, count: Int(2 * cs)))
        #expect(model.state(ofCluster: 6) == .zero && model.state(ofCluster: 7) == .zero)

        // Partial write into a zero cluster: the rest stays zero (the spec, not QEMU's §9.3 bug).
        let b = [UInt8](repeating: 0xB2, count: 10)
        try image.write(b, at: 6 * cs + 7)
        model.write(b, at: 6 * cs + 7)
        want = [UInt8](repeating: 0, count: Int(cs))
        want.replaceSubrange(7..<17, with: b)
        #expect(try image.read(at: 6 * cs, count: Int(cs)) == want)
        #expect(model.read(at: 6 * cs, count: Int(cs)) == want)

        // Discard over [cluster 3 middle, cluster 8): only allocated whole clusters (4, 6) read zero;
        // 3 is partial, 5 unallocated (backing), 7 a zero cluster.
        let zeroed = model.discard(at: 3 * cs + 1, length: 5 * cs - 1)
        try image.discard(at: 3 * cs + 1, length: 5 * cs - 1)
        #expect(zeroed == [(4 * cs)..<(5 * cs), (6 * cs)..<(7 * cs)])
        #expect(try image.read(at: 4 * cs, count: Int(cs)) == [UInt8](repeating: 0, count: Int(cs)))
        #expect(try image.read(at: 5 * cs, count: Int(cs)) == Array(base[Int(5 * cs)..<Int(6 * cs)]))

        // Aligned zero write over an allocated cluster keeps it allocated.
        try image.write(a, at: 9 * cs)
        model.write(a, at: 9 * cs)
        try image.writeZeroes(at: 9 * cs, length: cs, unmap: true)
        model.writeZeroes(at: 9 * cs, length: cs)
        #expect(model.state(ofCluster: 9) == .allocated)

        // Past the backing's end, unallocated clusters read zero; a partial write fills with zeroes.
        let past = ReferenceDisk.roundUp(UInt64(base.count), cs) + cs
        try image.write(a, at: past + 3)
        model.write(a, at: past + 3)
        want = [UInt8](repeating: 0, count: Int(cs))
        want.replaceSubrange(3..<103, with: a)
        #expect(try image.read(at: past, count: Int(cs)) == want)
        // The cluster straddling the backing's end: backing bytes, then zeroes.
        let straddle = UInt64(base.count) / cs * cs
        var expectStraddle = [UInt8](repeating: 0, count: Int(cs))
        expectStraddle.replaceSubrange(0..<(base.count - Int(straddle)), with: base[Int(straddle)...])
        #expect(model.read(at: straddle, count: Int(cs)) == expectStraddle)
        #expect(try image.read(at: straddle, count: Int(cs)) == expectStraddle)

        try verifyFinal(image, fixture: fixture, model: model, context: "scripted")
    }

    @Test("one worker, random operations, every read matches the model", arguments: ModelConfig.inMemory)
    func sequential(config: ModelConfig) throws {
        let seed = ModelRNG.seed(0x5EC0 &+ UInt64(config.clusterSize) &+ UInt64(config.backingSize ?? 0), salt: 1)
        var rng = ModelRNG(seed: seed)
        let fixture = try ImageFixture(config, label: "seq", rng: &rng)
        defer { fixture.cleanup() }
        let image = try fixture.open()
        let model = SharedModel(fixture.model())
        let failures = FailureLog()
        let steps = config.steps(700)
        let ran = runModelWorker(
            image: image, model: model, config: config, worker: 0, workers: 1,
            steps: steps, seed: seed, failures: failures)
        #expect(failures.count == 0, "seed \(seed) \(config): \(failures.summary)")
        #expect(ran == steps)
        try verifyFinal(image, fixture: fixture, model: model.value, context: "seed \(seed) \(config)")
    }

    @Test("concurrent workers on interleaved clusters of one image", arguments: ModelConfig.all)
    func concurrent(config: ModelConfig) throws {
        let seed = ModelRNG.seed(
            0xC0C0 &+ UInt64(config.clusterSize) &+ UInt64(config.backingSize ?? 0)
                &+ (config.onDisk ? 1 : 0), salt: 2)
        var rng = ModelRNG(seed: seed)
        let fixture = try ImageFixture(config, label: "conc", rng: &rng)
        defer { fixture.cleanup() }
        let image = try fixture.open()
        let model = SharedModel(fixture.model())
        let failures = FailureLog()
        let workers = 4
        let steps = config.steps(250)
        let done = Mutex(0)
        ModelKit.runThreads(workers) { w in
            let n = runModelWorker(
                image: image, model: model, config: config, worker: w, workers: workers,
                steps: steps, seed: seed &+ UInt64(w) &* 0x1000_0001, failures: failures)
            done.withLock { $0 += n }
        }
        #expect(failures.count == 0, "seed \(seed) \(config): \(failures.count) failures:\n\(failures.summary)")
        #expect(done.withLock { $0 } == workers * steps)
        try verifyFinal(image, fixture: fixture, model: model.value, context: "seed \(seed) \(config)")
    }

    @Test("concurrent writers into the same unallocated clusters allocate each once", arguments: ModelConfig.inMemory)
    func sameClusterWriters(config: ModelConfig) throws {
        let seed = ModelRNG.seed(0x5A3E &+ UInt64(config.clusterSize) &+ UInt64(config.backingSize ?? 0), salt: 3)
        var rng = ModelRNG(seed: seed)
        let fixture = try ImageFixture(config, label: "same", rng: &rng)
        defer { fixture.cleanup() }
        let image = try fixture.open()
        let cs = config.cs
        let workers = 4
        let clusters: UInt64 = 40
        // Start just before an L2 boundary for 4 KiB clusters (entries 1004...1043), inside the backing.
        let entries = UInt64(config.tableSize) * cs / 8
        let first = entries > 2048 ? (4 << 20) / cs : entries - 20
        let slice = cs / UInt64(workers)
        // Each worker writes its quarter of the cluster, leaving the last 512 bytes of odd quarters
        // untouched (so the allocating write's fill must survive the others' in-place writes).
        let payloads: [[UInt8]] = (0..<workers).map { _ in rng.bytes(Int(slice)) }
        let barrier = ThreadBarrier(workers)
        let failures = FailureLog()
        ModelKit.runThreads(workers) { w in
            for k in 0..<clusters {
                barrier.wait()
                let start = (first + k) * cs + UInt64(w) * slice
                let n = w % 2 == 1 ? Int(slice) - 512 : Int(slice)
                do {
                    try payloads[w].withUnsafeBytes {
                        try image.write(UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: start)
                    }
                } catch {
                    failures.add("worker \(w) cluster \(first + k): \(error)")
                }
            }
        }
        #expect(failures.count == 0, "seed \(seed) \(config): \(failures.summary)")

        var model = fixture.model()
        for k in 0..<clusters {
            for w in 0..<workers {
                let n = w % 2 == 1 ? Int(slice) - 512 : Int(slice)
                model.write(Array(payloads[w][0..<n]), at: (first + k) * cs + UInt64(w) * slice)
            }
        }
        let report = try image.check()
        #expect(
            report.corruptions == 0 && report.leaks == 0 && report.checkErrors == 0, "seed \(seed) \(config): \(report)"
        )
        #expect(
            report.allocatedClusters == clusters,
            "seed \(seed) \(config): \(report.allocatedClusters) clusters allocated for \(clusters)")
        let l2Tables = Set((first..<(first + clusters)).map { $0 / entries }).count
        let expectedSize =
            (1 + UInt64(config.tableSize)) * cs + UInt64(l2Tables) * UInt64(config.tableSize) * cs + clusters * cs
        #expect(
            image.fileSize == expectedSize,
            "seed \(seed) \(config): file is \(image.fileSize) bytes, want \(expectedSize)")
        try verifyFinal(image, fixture: fixture, model: model, context: "seed \(seed) \(config)")
    }

    @Test("concurrent first writes into fresh L2 tables keep every entry")
    func freshTablesUnderContention() throws {
        // 64 KiB clusters, 4-cluster tables: each L2 maps 2 GiB; 96 fresh tables, and in each the
        // workers' clusters share one 512-byte L2 sector. Workers start a table together, each
        // after a small random delay, so some arrive while another is creating and linking it.
        let seed = ModelRNG.seed(0xF7E5, salt: 7)
        let dir = try TemporaryDirectory(prefix: "qed-fresh")
        defer { dir.remove() }
        let path = dir.file("fresh.qed")
        let cs: UInt64 = 65536
        let perL2: UInt64 = 32768 * cs
        let tables: UInt64 = 96
        try Image.create(path: path, options: CreateOptions(size: tables * perL2, clusterSize: 65536, tableSize: 4))
        var options = OpenOptions()
        options.needCheckDelay = 0.01
        let image = try openImage(path, options)
        let workers = 4
        let barrier = ThreadBarrier(workers)
        let failures = FailureLog()
        ModelKit.runThreads(workers) { w in
            var rng = ModelRNG(seed: seed &+ UInt64(w))
            for t in 0..<tables {
                barrier.wait()
                usleep(UInt32(rng.next() % 1500))
                let at = t * perL2 + UInt64(w) * 3 * cs + 512 * UInt64(w)
                let data = [UInt8](repeating: UInt8(truncatingIfNeeded: t &* 7 &+ UInt64(w) &+ 1), count: 1024)
                do { try image.write(data, at: at) } catch { failures.add("worker \(w) table \(t): \(error)") }
            }
        }
        #expect(failures.count == 0, "seed \(seed): \(failures.summary)")
        var lost: [String] = []
        for t in 0..<tables {
            for w in 0..<UInt64(workers) {
                let at = t * perL2 + w * 3 * cs + 512 * w
                let want = [UInt8](repeating: UInt8(truncatingIfNeeded: t &* 7 &+ w &+ 1), count: 1024)
                if try image.read(at: at, count: 1024) != want { lost.append("table \(t) worker \(w)") }
            }
        }
        #expect(lost.isEmpty, "seed \(seed): writes lost: \(lost.prefix(10))")
        let report = try image.check()
        #expect(report.isClean, "seed \(seed): \(report)")
        #expect(report.allocatedClusters == tables * UInt64(workers), "seed \(seed): \(report)")
        try image.close()
        let again = try openImage(path, options)
        for t in 0..<tables {
            for w in 0..<UInt64(workers) {
                let at = t * perL2 + w * 3 * cs + 512 * w
                let want = [UInt8](repeating: UInt8(truncatingIfNeeded: t &* 7 &+ w &+ 1), count: 1024)
                #expect(
                    try again.read(at: at, count: 1024) == want, "seed \(seed): table \(t) worker \(w) after reopen")
            }
        }
        try again.close()
    }

    @Test("a reader racing an allocating write sees all-old or all-new", arguments: ModelConfig.inMemory)
    func readerRacesAllocation(config: ModelConfig) throws {
        let seed = ModelRNG.seed(0x4EAD &+ UInt64(config.clusterSize) &+ UInt64(config.backingSize ?? 0), salt: 4)
        var rng = ModelRNG(seed: seed)
        let fixture = try ImageFixture(config, label: "race", rng: &rng)
        defer { fixture.cleanup() }
        let image = try fixture.open()
        let cs = config.cs
        let clusters = 24
        let entries = UInt64(config.tableSize) * cs / 8
        let first = entries > 2048 ? (4 << 20) / cs : entries - 24
        var model = fixture.model()
        var olds: [[UInt8]] = []
        var news: [[UInt8]] = []
        var ranges: [Range<Int>] = []
        for k in 0..<clusters {
            let at = (first + UInt64(k)) * cs
            let old = model.read(at: at, count: Int(cs))
            // New bytes differ from the old ones everywhere in the written range.
            let a = k % 3 == 0 ? 0 : Int(rng.next() % (cs / 2))
            let b = k % 3 == 0 ? Int(cs) : a + 1 + Int(rng.next() % (cs / 2 - 1))
            var new = old
            for i in a..<b { new[i] = old[i] ^ UInt8(0x5A | (i & 1)) }
            model.write(Array(new[a..<b]), at: at + UInt64(a))
            olds.append(old)
            news.append(new)
            ranges.append(a..<b)
        }
        let race = RaceState()
        let readers = 2
        let failures = FailureLog()
        let (o, n, r) = (olds, news, ranges)
        ModelKit.runThreads(readers + 1) { t in
            if t == readers {
                // The writer.
                for k in 0..<clusters {
                    let seenOld = race.strictOld.load(ordering: .acquiring)
                    race.state.store(k * 4, ordering: .releasing)
                    race.waitUntil { race.strictOld.load(ordering: .acquiring) > seenOld }
                    race.state.store(k * 4 + 1, ordering: .releasing)
                    let at = (first + UInt64(k)) * cs + UInt64(r[k].lowerBound)
                    do {
                        try n[k].withUnsafeBytes {
                            try image.write(UnsafeRawBufferPointer(rebasing: $0[r[k]]), at: at)
                        }
                    } catch {
                        failures.add("writer cluster \(k): \(error)")
                    }
                    let seenNew = race.strictNew.load(ordering: .acquiring)
                    race.state.store(k * 4 + 2, ordering: .releasing)
                    race.waitUntil { race.strictNew.load(ordering: .acquiring) > seenNew }
                }
                race.state.store(-1, ordering: .releasing)
                return
            }
            while true {
                let s1 = race.state.load(ordering: .acquiring)
                if s1 < 0 { return }
                let k = s1 / 4
                let got: [UInt8]
                do { got = try image.read(at: (first + UInt64(k)) * cs, count: Int(cs)) } catch {
                    failures.add("reader cluster \(k): \(error)")
                    return
                }
                let s2 = race.state.load(ordering: .acquiring)
                let isOld = got == o[k]
                let isNew = got == n[k]
                if s1 % 4 == 2 && !isNew {
                    failures.add("cluster \(k): read started after the write returned but is not the new content")
                } else if s2 == k * 4 && !isOld {
                    failures.add("cluster \(k): read ended before the write started but is not the old content")
                } else if !isOld && !isNew {
                    let newBytes = r[k].filter { got[$0] == n[k][$0] }.count
                    failures.add("cluster \(k): torn read (\(newBytes) of \(r[k].count) written bytes new)")
                }
                if s2 == k * 4 && isOld { race.strictOld.add(1, ordering: .releasing) }
                if s1 == k * 4 + 2 && isNew { race.strictNew.add(1, ordering: .releasing) }
                if s1 == k * 4 + 1 || s2 == k * 4 + 1 { race.overlapping.add(1, ordering: .relaxed) }
            }
        }
        #expect(failures.count == 0, "seed \(seed) \(config): \(failures.summary)")
        #expect(
            race.strictOld.load(ordering: .relaxed) >= clusters && race.strictNew.load(ordering: .relaxed) >= clusters,
            "the readers did not observe every cluster before and after its write")
        try verifyFinal(image, fixture: fixture, model: model, context: "seed \(seed) \(config)")
    }
}

/// Shared state of the reader/writer race: `state` = cluster·4 + phase (0 before the write,
/// 1 writing, 2 written; −1 done) and counters of reads classified strictly old / new.
final class RaceState: Sendable {
    let state = Atomic<Int>(0)
    let strictOld = Atomic<Int>(0)
    let strictNew = Atomic<Int>(0)
    let overlapping = Atomic<Int>(0)

    /// Spins (yielding) until `condition` holds, at most ~30 s (generous: CI runs every suite at
    /// once on two cores).
    func waitUntil(_ condition: () -> Bool) {
        let deadline = Date().addingTimeInterval(30)
        while !condition() && Date() < deadline { sched_yield() }
    }
}

/// A reusable barrier for a fixed number of threads.
final class ThreadBarrier: @unchecked Sendable {
    private let condition = NSCondition()
    private let parties: Int
    private var waiting = 0
    private var generation = 0

    init(_ parties: Int) { self.parties = parties }

    func wait() {
        condition.lock()
        defer { condition.unlock() }
        let mine = generation
        waiting += 1
        if waiting == parties {
            waiting = 0
            generation += 1
            condition.broadcast()
            return
        }
        while generation == mine { condition.wait() }
    }
}
