import Foundation
import QED
import TestSupport
import Testing

/// The in-process image fuzzer: images made by qemu-img, mutated (``ImageMutator``), then opened
/// read-only and read-write, read throughout, mapped, checked, repaired, written and closed.
///
/// Oracles, per iteration:
/// - no trap (a trap kills the test process) and no hang (``StallWatchdog``);
/// - every failure is a ``QEDError``;
/// - a read-only open changes no byte (of a writable memory file, and every 16th iteration of a
///   real file opened read-only);
/// - repair changes no guest range that read successfully before it, unless a table cluster is
///   referenced twice (``SharingModel``: then tables and data alias and nothing can be promised);
/// - after repair the check reports corruptions exactly when a cluster is referenced twice (the
///   one thing repair cannot fix), and otherwise every write succeeds (without a backing file)
///   and reads back;
/// - what repair and the writes left on disk checks the same after reopening.
///
/// `QED_FUZZ_ITERATIONS` sets the count (default 10,000), `QED_TEST_SEED` the seed; a failure
/// names the seed and iteration, which `QED_FUZZ_FIRST=n QED_FUZZ_ITERATIONS=1` replays.
@Suite("Hostile images: fuzzing images made by qemu-img")
struct ImageFuzzTests {
    static let ciIterations = 10_000

    @Test func mutatedImagesNeverTrapAndRepairKeepsValidClusters() throws {
        let seeds = try FuzzSeeds()
        let base = SplitMix64.seed(0x51ED_F022_0001, salt: 1)
        let iterations = FuzzSettings.iterations(default: Self.ciIterations)
        let watchdog = StallWatchdog(label: "image fuzz, base seed \(base)")
        defer { watchdog.stop() }
        var stats = ImageFuzzStats()
        let start = ContinuousClock.now
        for iteration in iterations {
            watchdog.tick(iteration)
            var run = ImageFuzzIteration(
                seeds: seeds, base: base, iteration: iteration,
                rng: FuzzSettings.generator(base: base, iteration: iteration))
            run.execute(&stats)
        }
        let elapsed = ContinuousClock.now - start
        print(
            "image fuzz: \(iterations.count) iterations (first \(iterations.lowerBound), base seed \(base)) in \(elapsed): \(stats)"
        )
        if iterations.count >= 1000 {
            // The fuzzer must reach deep: many images open read-write and run every oracle, and
            // the rejections are varied.
            #expect(stats.fullOracle * 10 >= iterations.count, "\(stats)")
            #expect(stats.sharedAfterRepair > 0 && stats.readOnlyOpens * 4 >= iterations.count, "\(stats)")
            #expect(stats.errors.count >= 8, "\(stats)")
        }
    }
}

/// Counts of what the fuzzer reached.
struct ImageFuzzStats: CustomStringConvertible {
    var readOnlyOpens = 0
    var readWriteOpens = 0
    /// Iterations that opened read-write, repaired, and ran the content and write oracles.
    var fullOracle = 0
    /// Iterations whose image kept a double reference after repair.
    var sharedAfterRepair = 0
    var realFileChecks = 0
    var errors: [QEDError.Code: Int] = [:]

    var description: String {
        let codes = errors.sorted { $0.value > $1.value }.map { "\($0.key.rawValue) \($0.value)" }.joined(
            separator: ", ")
        return "read-only opens \(readOnlyOpens), read-write opens \(readWriteOpens), full oracle \(fullOracle), "
            + "shared after repair \(sharedAfterRepair), real read-only files \(realFileChecks); errors: \(codes)"
    }
}

/// One iteration: mutate a seed, then run the operations and their oracles.
struct ImageFuzzIteration {
    let seeds: FuzzSeeds
    let base: UInt64
    let iteration: Int
    var rng: SplitMix64
    private var context = ""

    init(seeds: FuzzSeeds, base: UInt64, iteration: Int, rng: SplitMix64) {
        self.seeds = seeds
        self.base = base
        self.iteration = iteration
        self.rng = rng
    }

    static let readOnly = OpenOptions.quiet(readOnly: true)
    static let readWrite = OpenOptions.quiet()

    mutating func execute(_ stats: inout ImageFuzzStats) {
        let seed = seeds.seeds[Int.random(in: 0..<seeds.seeds.count, using: &rng)]
        var bytes = seed.bytes
        var mutator = ImageMutator(backingNames: seeds.backingNames)
        mutator.mutate(&bytes, &rng)
        context = "base seed \(base) iteration \(iteration), \(seed.name): \(mutator.log.joined(separator: "; "))"

        let before = readOnlyPass(bytes, &stats)
        readWritePass(bytes, before: before, &stats)
        if Int.random(in: 0..<3, using: &rng) == 0 { writeBeforeRepairPass(bytes, &stats) }
        if iteration % 16 == 0 { realFileReadOnlyPass(bytes, &stats) }
    }

    // MARK: Passes

    /// Opens read-only (on a writable memory file: the engine itself must not write), reads,
    /// maps and checks; returns the guest ranges that read successfully.
    private mutating func readOnlyPass(_ bytes: [UInt8], _ stats: inout ImageFuzzStats) -> [Chunk] {
        let file = MemoryFile(bytes, path: seeds.imagePath)
        var chunks: [Chunk] = []
        if let image = attempt("open read-only", &stats, { try Image.open(file: file, options: Self.readOnly) }) {
            stats.readOnlyOpens += 1
            chunks = readEverything(image, &stats)
            _ = attempt("extents", &stats) { try image.extents(at: 0, length: image.virtualSize) }
            _ = attempt("check", &stats) { try image.check() }
            _ = attempt("close", &stats) { try image.close() }
        }
        #expect(Self.same(file.contents, bytes), "a read-only open changed the file: \(context)")
        return chunks
    }

    /// Opens read-write, repairs, compares with `before`, checks, writes and reads back, closes,
    /// reopens and checks again.
    private mutating func readWritePass(_ bytes: [UInt8], before: [Chunk], _ stats: inout ImageFuzzStats) {
        let file = MemoryFile(bytes, path: seeds.imagePath)
        guard let image = attempt("open read-write", &stats, { try Image.open(file: file, options: Self.readWrite) })
        else { return }
        stats.readWriteOpens += 1
        let model = SharingModel(bytes: bytes, header: image.currentHeader, geometry: image.geometry)
        if let repaired = attempt("repair", &stats, { try image.check(repair: true) }) {
            #expect(repaired.checkErrors == 0, "\(repaired) \(context)")
            if !model.metadataShared {
                for chunk in before {
                    let now = attempt("read after repair", &stats) {
                        try image.read(at: chunk.offset, count: chunk.bytes.count)
                    }
                    #expect(
                        now.map { Self.same($0, chunk.bytes) } == true,
                        "repair changed guest bytes \(chunk.offset)+\(chunk.bytes.count): \(context)")
                }
            }
            if let after = attempt("check after repair", &stats, { try image.check() }) {
                #expect(
                    (after.corruptions > 0) == model.shared && after.checkErrors == 0,
                    "after repair: \(after), double references: \(model.shared): \(context)")
                if after.corruptions > 0 { stats.sharedAfterRepair += 1 }
            }
            writeAndReadBack(image, model: model, &stats)
            if !model.metadataShared { stats.fullOracle += 1 }
        }
        _ = attempt("close", &stats) { try image.close() }

        if Int.random(in: 0..<4, using: &rng) == 0 {
            let reopened = MemoryFile(file.contents, path: seeds.imagePath)
            if let image = attempt("reopen", &stats, { try Image.open(file: reopened, options: Self.readOnly) }) {
                if let report = attempt("check after reopen", &stats, { try image.check() }), !model.shared {
                    #expect(report.corruptions == 0, "after reopening: \(report): \(context)")
                }
                _ = attempt("close", &stats) { try image.close() }
            }
        }
    }

    /// Writes a few random ranges and reads each back at once.
    private mutating func writeAndReadBack(_ image: Image, model: SharingModel, _ stats: inout ImageFuzzStats) {
        let size = image.virtualSize
        guard size > 0 else { return }
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            let length = Int(min(size, UInt64.random(in: 1...(16 << 10), using: &rng)))
            let offset = UInt64.random(in: 0...(size - UInt64(length)), using: &rng)
            let data = rng.nonZeroBytes(length)
            let wrote = attempt("write after repair", &stats) { try image.write(data, at: offset) } != nil
            if !model.shared && image.backing == nil {
                #expect(wrote, "a write to a repaired image failed: \(context)")
            }
            if wrote && !model.shared {  // with a shared cluster one write can land twice in it
                let back = attempt("read back", &stats) { try image.read(at: offset, count: length) }
                #expect(
                    back.map { Self.same($0, data) } == true,
                    "write at \(offset)+\(length) did not read back: \(context)")
            }
        }
    }

    /// Resizes, writes, zeroes, discards, reads from the cache and maps the unrepaired image, then
    /// repairs: only typed errors.
    private mutating func writeBeforeRepairPass(_ bytes: [UInt8], _ stats: inout ImageFuzzStats) {
        let file = MemoryFile(bytes, path: seeds.imagePath)
        var options = Self.readWrite
        options.autoCheck = Bool.random(using: &rng)
        guard let image = attempt("open read-write", &stats, { try Image.open(file: file, options: options) }) else {
            return
        }
        if Int.random(in: 0..<4, using: &rng) == 0 {
            let g = image.geometry
            let sizes = [
                image.virtualSize &+ 512, g.maxImageSize, g.maxImageSize &+ 512, image.virtualSize &+ g.bytesPerL2,
            ]
            let newSize = sizes[Int.random(in: 0..<sizes.count, using: &rng)]
            _ = attempt("resize", &stats) { try image.resize(to: newSize) }
        }
        let size = image.virtualSize
        for _ in 0..<Int.random(in: 1...4, using: &rng) where size > 0 {
            let length = min(size, UInt64.random(in: 1...(64 << 10), using: &rng))
            let offset = Bool.random(using: &rng) ? UInt64.random(in: 0...(size - length), using: &rng) : size - length
            switch Int.random(in: 0..<5, using: &rng) {
            case 4:
                var buffer = [UInt8](repeating: 0, count: Int(length))
                _ = buffer.withUnsafeMutableBytes { image.readIfCached(into: $0, at: offset) }
            case 0:
                let unmap = Bool.random(using: &rng)
                _ = attempt("write zeroes", &stats) { try image.writeZeroes(at: offset, length: length, unmap: unmap) }
            case 1: _ = attempt("discard", &stats) { try image.discard(at: offset, length: length) }
            default:
                let data = rng.nonZeroBytes(Int(length))
                _ = attempt("write", &stats) { try image.write(data, at: offset) }
            }
        }
        _ = attempt("map", &stats) { try mapExtents(image) }
        _ = attempt("repair after writes", &stats) { try image.check(repair: true) }
        _ = attempt("close", &stats) { try image.close() }
    }

    /// A real file opened read-only: afterwards it holds the same bytes.
    private mutating func realFileReadOnlyPass(_ bytes: [UInt8], _ stats: inout ImageFuzzStats) {
        let path = seeds.readOnlyCopyPath
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        } catch {
            Issue.record("cannot write \(path): \(error)")
            return
        }
        stats.realFileChecks += 1
        if let image = attempt(
            "open real file read-only", &stats, { try Image.open(path: path, options: Self.readOnly) })
        {
            _ = readEverything(image, &stats)
            _ = attempt("check", &stats) { try image.check() }
            _ = attempt("close", &stats) { try image.close() }
        }
        let after = (try? Files.read(path)) ?? []
        #expect(Self.same(after, bytes), "a read-only open changed the real file: \(context)")
    }

    // MARK: Helpers

    /// A guest range and what it read.
    struct Chunk {
        var offset: UInt64
        var bytes: [UInt8]
    }

    /// Reads the disk (the first 4 MiB, or its start, end and a few random places when larger) in
    /// 64 KiB pieces; a piece that fails is retried per 4 KiB so the good parts are kept.
    private mutating func readEverything(_ image: Image, _ stats: inout ImageFuzzStats) -> [Chunk] {
        let size = image.virtualSize
        let piece: UInt64 = 64 << 10
        var ranges: [(UInt64, UInt64)] = []
        if size <= 4 << 20 {
            ranges = stride(from: 0, to: size, by: Int(piece)).map { ($0, min(piece, size - $0)) }
        } else {
            ranges = stride(from: 0, to: UInt64(1 << 20), by: Int(piece)).map { ($0, piece) }
            ranges += (1...4).map { i in (size - UInt64(i) * piece, piece) }
            ranges += (0..<4).map { _ in (UInt64.random(in: 0...(size - piece), using: &rng) & ~4095, piece) }
        }
        var chunks: [Chunk] = []
        for (offset, length) in ranges {
            if let data = attempt("read", &stats, { try image.read(at: offset, count: Int(length)) }) {
                chunks.append(Chunk(offset: offset, bytes: data))
                continue
            }
            for small in stride(from: offset, to: offset + length, by: 4096) {
                let n = Int(min(4096, offset + length - small))
                if let data = attempt("read", &stats, { try image.read(at: small, count: n) }) {
                    chunks.append(Chunk(offset: small, bytes: data))
                }
            }
        }
        return chunks
    }

    /// Runs `body`; a ``QEDError`` is counted and gives nil, any other error is a test failure.
    private func attempt<T>(_ what: String, _ stats: inout ImageFuzzStats, _ body: () throws -> T) -> T? {
        do {
            return try body()
        } catch let error as QEDError {
            stats.errors[error.code, default: 0] += 1
            return nil
        } catch {
            Issue.record("\(what) threw \(type(of: error)), not a QEDError: \(error): \(context)")
            return nil
        }
    }

    /// Byte equality through memcmp (fast in debug builds too).
    static func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.count == b.count
            && a.withUnsafeBytes { pa in
                b.withUnsafeBytes { pb in
                    a.isEmpty || memcmp(pa.baseAddress!, pb.baseAddress!, a.count) == 0
                }
            }
    }
}
