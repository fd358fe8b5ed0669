import Foundation
import QED
import Synchronization
import TestSupport
import Testing

// Model tests for add-cow: concurrent random reads, writes, zero writes and discards over raw,
// QED (made by qemu-img) and add-cow backing files, and without one; every read compared with
// ReferenceDisk. Plus the write rule's race: writers of different sectors of one unallocated
// cluster at once, where copied backing data must never overwrite a guest write.

enum AddCOWBackingKind: String, Sendable, CaseIterable {
    case none, raw, qed
    case addCOW = "add-cow"
}

struct AddCOWModelCase: Sendable, CustomStringConvertible {
    var clusterSize: UInt64
    var backing: AddCOWBackingKind
    var description: String { "\(clusterSize / 1024)K over \(backing.rawValue)" }

    static let all: [AddCOWModelCase] = [4096, 65536].flatMap { cs in
        AddCOWBackingKind.allCases.map { AddCOWModelCase(clusterSize: UInt64(cs), backing: $0) }
    }

    /// Guest size: not a multiple of the cluster size.
    var diskSize: UInt64 { (8 << 20) + 1536 }
    /// Backing size: shorter than the disk (its end lies inside the hot range).
    var backingSize: Int { (5 << 20) + 1024 }

    var modelConfig: ModelConfig {
        ModelConfig(
            clusterSize: UInt32(clusterSize), tableSize: 4, diskSize: diskSize, backingSize: backingSize,
            onDisk: true, l2CacheBytes: 1 << 20, blockClusters: clusterSize == 4096 ? 3 : 2,
            hot: ((5 << 20) - (256 << 10))..<((5 << 20) + (256 << 10)), stepScale: clusterSize == 4096 ? 1 : 0.5)
    }
}

/// Builds the backing file of a case in `dir` and returns its name (relative) and guest content.
func makeAddCOWBacking(
    _ kind: AddCOWBackingKind, in dir: TemporaryDirectory, size: Int, rng: inout ModelRNG
) throws -> (name: String, format: DiskFormat, content: [UInt8])? {
    switch kind {
    case .none:
        return nil
    case .raw:
        let raw = try ModelKit.makeRawBacking(in: dir.path, size: size, rng: &rng)
        return ("base.raw", .raw, raw.bytes)
    case .qed:
        // qemu-img makes the QED file; qemu-io writes a few patterns; its raw conversion is the truth.
        let qemuImg = ChildProcess.systemTool("qemu-img")
        let qemuIO = ChildProcess.systemTool("qemu-io")
        let qedSize = size / 512 * 512
        let made = try ChildProcess.run(qemuImg, ["create", "-q", "-f", "qed", "base.qed", "\(qedSize)"], in: dir.path)
        guard made.status == 0 else { throw QEDError(.io, "qemu-img create failed: \(made)") }
        for (i, offset) in [0, 1 << 20, (3 << 20) + 4096, qedSize - 65536].enumerated() {
            let io = try ChildProcess.run(
                qemuIO, ["-f", "qed", "-c", "write -P \(0x11 + i * 0x22) \(offset) 65536", "base.qed"], in: dir.path)
            guard io.status == 0 else { throw QEDError(.io, "qemu-io failed: \(io)") }
        }
        let conv = try ChildProcess.run(
            qemuImg, ["convert", "-f", "qed", "-O", "raw", "base.qed", "expected.raw"], in: dir.path)
        guard conv.status == 0 else { throw QEDError(.io, "qemu-img convert failed: \(conv)") }
        return ("base.qed", .qed, try Files.read(dir.file("expected.raw")))
    case .addCOW:
        // An add-cow over a raw base, written through the engine and checked against its own model.
        let base = try ModelKit.makeRawBacking(in: dir.path, name: "lower-base.raw", size: size, rng: &rng)
        try AddCOWImage.create(
            path: dir.file("mid.add-cow"),
            options: AddCOWCreateOptions(
                imageFile: "mid.raw", backingFile: "lower-base.raw", backingFormat: .raw, clusterSize: 4096))
        var model = ReferenceDisk(size: UInt64(size), clusterSize: 4096, backing: base.bytes)
        let mid = try AddCOWImage.open(path: dir.file("mid.add-cow"))
        for _ in 0..<40 {
            let offset = rng.next() % UInt64(size - 10000)
            let data = rng.bytes(1 + Int(rng.next() % 9000))
            try data.withUnsafeBytes { try mid.write($0, at: offset) }
            model.write(data, at: offset)
        }
        try mid.close()
        let content = model.snapshot()
        let check = try AddCOWImage.open(path: dir.file("mid.add-cow"), options: OpenOptions(readOnly: true))
        defer { try? check.close() }
        guard try check.readBytes(at: 0, count: size) == content else {
            throw QEDError(.corrupt, "the add-cow backing file does not read as its model")
        }
        return ("mid.add-cow", .addCOW, content)
    }
}

@Suite("add-cow model")
struct AddCOWModelTests {
    @Test(
        "concurrent workers: every read matches the model, before and after reopening", arguments: AddCOWModelCase.all)
    func concurrent(_ c: AddCOWModelCase) throws {
        let dir = try TemporaryDirectory(prefix: "acow-model")
        var rng = ModelRNG(seed: 0xAC0 + c.clusterSize + UInt64(c.backing.rawValue.utf8.count))
        let backing = try makeAddCOWBacking(c.backing, in: dir, size: c.backingSize, rng: &rng)
        let path = dir.file("top.add-cow")
        try AddCOWImage.create(
            path: path,
            options: AddCOWCreateOptions(
                imageFile: "top.raw", size: c.diskSize, backingFile: backing?.name,
                backingFormat: backing?.format, clusterSize: c.clusterSize))
        let image = try AddCOWImage.open(path: path)
        #expect(image.isAllAllocated == (backing == nil))
        let model = SharedModel(
            ReferenceDisk(size: c.diskSize, clusterSize: c.clusterSize, backing: backing?.content ?? []))
        let failures = FailureLog()
        let workers = 4
        let steps = c.modelConfig.steps(400)
        let seed = rng.next()
        let ran = Mutex(0)
        ModelKit.runThreads(workers) { w in
            let n = runModelWorker(
                image: image, model: model, config: c.modelConfig, worker: w, workers: workers, steps: steps,
                seed: seed &+ UInt64(w), failures: failures)
            ran.withLock { $0 += n }
        }
        #expect(failures.count == 0, "\(c): \(failures.summary)")
        #expect(ran.withLock { $0 } == workers * steps)
        let want = model.value.snapshot()
        #expect(try image.readBytes(at: 0, count: Int(c.diskSize)) == want, "\(c): whole disk before reopen")
        let report = try image.check(repair: false)
        #expect(report.isClean, "\(c): \(report)")
        try image.close()

        let again = try AddCOWImage.open(path: path, options: OpenOptions(readOnly: true))
        defer { try? again.close() }
        let got = try again.readBytes(at: 0, count: Int(c.diskSize))
        let d = ModelKit.firstDifference(got, want)
        #expect(d == nil, "\(c): after reopen differs at \(d ?? 0)")
        // Every cluster whose bit is set reads the image file: the raw file alone agrees there.
        let raw = try Files.read(dir.file("top.raw"))
        var mismatched: [UInt64] = []
        for e in try again.extents(at: 0, length: c.diskSize) where e.depth == 0 && e.present {
            if Array(raw[Int(e.offset)..<Int(e.offset + e.length)])
                != Array(want[Int(e.offset)..<Int(e.offset + e.length)])
            {
                mismatched.append(e.offset)
            }
        }
        #expect(mismatched.isEmpty, "\(c): extents at depth 0 whose image-file bytes differ: \(mismatched.prefix(5))")
    }

    @Test("writers of different sectors of one unallocated cluster all win over the backing copy")
    func sameClusterWriters() throws {
        let dir = try TemporaryDirectory(prefix: "acow-race")
        var rng = ModelRNG(seed: 0x5A3E)
        let cs: UInt64 = 65536
        let base = try ModelKit.makeRawBacking(in: dir.path, size: Int(16 * cs), rng: &rng)
        try AddCOWImage.create(
            path: dir.file("t.add-cow"),
            options: AddCOWCreateOptions(
                imageFile: "t.raw", backingFile: "base.raw", backingFormat: .raw, clusterSize: cs))
        let image = try AddCOWImage.open(path: dir.file("t.add-cow"))
        defer { try? image.close() }
        var model = ReferenceDisk(size: 16 * cs, clusterSize: cs, backing: base.bytes)
        let writers = 8
        for cluster in 0..<UInt64(16) {
            // Each writer owns sector (w * 3 + cluster) % 128 of this cluster; all start together.
            let pieces = (0..<writers).map { w in
                (offset: cluster * cs + UInt64((w * 3 + Int(cluster)) % 128) * 512, bytes: rng.bytes(512))
            }
            for p in pieces { model.write(p.bytes, at: p.offset) }
            let errors = FailureLog()
            ModelKit.runThreads(writers) { w in
                do {
                    try pieces[w].bytes.withUnsafeBytes { try image.write($0, at: pieces[w].offset) }
                } catch {
                    errors.add("\(error)")
                }
            }
            #expect(errors.count == 0, "\(errors.summary)")
        }
        let got = try image.readBytes(at: 0, count: Int(16 * cs))
        let d = ModelKit.firstDifference(got, model.snapshot())
        #expect(d == nil, "a guest write was lost at \(d ?? 0)")
        #expect(image.allocatedClusters == 16)
    }

    @Test("resize grows the image file and the bitmap; the new area reads zeroes over a longer backing file")
    func resizeGrows() throws {
        let dir = try TemporaryDirectory(prefix: "acow-resize")
        var rng = ModelRNG(seed: 0x7E5)
        let base = try ModelKit.makeRawBacking(in: dir.path, size: 1 << 20, rng: &rng)
        try AddCOWImage.create(
            path: dir.file("r.add-cow"),
            options: AddCOWCreateOptions(
                imageFile: "r.raw", size: 100_000, backingFile: "base.raw", backingFormat: .raw, clusterSize: 4096))
        let image = try AddCOWImage.open(path: dir.file("r.add-cow"))
        try image.resize(to: 600_000)
        #expect(image.virtualSize == 600_000)
        #expect(try Files.size(dir.file("r.raw")) == 600_000)
        var want = Array(base.bytes[0..<100_000])
        want += [UInt8](repeating: 0, count: 500_000)
        #expect(try image.readBytes(at: 0, count: 600_000) == want)
        #expect(throws: QEDError.self) { try image.resize(to: 4096) }
        try image.close()
        let again = try AddCOWImage.open(path: dir.file("r.add-cow"), options: OpenOptions(readOnly: true))
        defer { try? again.close() }
        #expect(try again.readBytes(at: 0, count: 600_000) == want)
        #expect(try again.check(repair: false).isClean)
    }
}
