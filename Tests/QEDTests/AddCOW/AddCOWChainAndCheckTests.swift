import Foundation
import QED
import TestSupport
import Testing

// add-cow in backing chains (a QED overlay probes an add-cow backing file) and check/repair.

@Suite("add-cow chains and check")
struct AddCOWChainAndCheckTests {
    /// An add-cow image over a raw base with one written cluster; returns the guest view.
    private func makeAddCOW(in dir: TemporaryDirectory, rng: inout ModelRNG) throws -> [UInt8] {
        let base = try ModelKit.makeRawBacking(in: dir.path, size: 1 << 20, rng: &rng)
        try AddCOWImage.create(
            path: dir.file("mid.add-cow"),
            options: AddCOWCreateOptions(
                imageFile: "mid.raw", backingFile: "base.raw", backingFormat: .raw, clusterSize: 4096))
        let mid = try AddCOWImage.open(path: dir.file("mid.add-cow"))
        let data = rng.bytes(6000)
        try data.withUnsafeBytes { try mid.write($0, at: 10_000) }
        try mid.close()
        var view = base.bytes
        view.replaceSubrange(10_000..<16_000, with: data)
        return view
    }

    @Test("a QED overlay probes its add-cow backing file and reads through it")
    func qedOverAddCOW() throws {
        let dir = try TemporaryDirectory(prefix: "acow-chain")
        var rng = ModelRNG(seed: 0xC4A1)
        let view = try makeAddCOW(in: dir, rng: &rng)
        #expect(try DiskOpener.probe(path: dir.file("mid.add-cow")) == .addCOW)
        try Image.create(path: dir.file("top.qed"), options: CreateOptions(size: 1 << 20, backingFile: "mid.add-cow"))
        let top = try DiskOpener.open(path: dir.file("top.qed"), format: nil, options: OpenOptions())
        defer { try? top.close() }
        #expect(top.backing?.format == .addCOW)
        #expect(DiskOpener.chain(of: top).map(\.format) == [.qed, .addCOW, .raw])
        #expect(try top.readBytes(at: 0, count: 1 << 20) == view)
        // Extents: the written clusters 2 and 3 at depth 1 (the add-cow image), then the base at depth 2.
        let extents = try top.extents(at: 8192, length: 12288)
        #expect(extents.first?.depth == 1 && extents.first?.length == 8192, "\(extents)")
        #expect(extents.dropFirst().first?.depth == 2, "\(extents)")
    }

    @Test("an add-cow image's backing file may not be its own image file")
    func backingIsImageFile() throws {
        let dir = try TemporaryDirectory(prefix: "acow-loop")
        try Files.createSparse(dir.file("disk.raw"), length: 65536)
        try Files.createSparse(dir.file("other.raw"), length: 65536)
        try AddCOWImage.create(
            path: dir.file("x.add-cow"),
            options: AddCOWCreateOptions(imageFile: "disk.raw", backingFile: "other.raw", backingFormat: .raw))
        // Make the backing name a second path to the image file.
        try FileManager.default.removeItem(atPath: dir.file("other.raw"))
        try FileManager.default.createSymbolicLink(atPath: dir.file("other.raw"), withDestinationPath: "disk.raw")
        let error = #expect(throws: QEDError.self) { try AddCOWImage.open(path: dir.file("x.add-cow")) }
        #expect(error?.code == .backingFile, "\(String(describing: error))")
    }

    @Test("check finds bits past the end and a short bitmap; repair fixes both")
    func checkAndRepair() throws {
        let dir = try TemporaryDirectory(prefix: "acow-check")
        var rng = ModelRNG(seed: 0xC3EC)
        _ = try makeAddCOW(in: dir, rng: &rng)
        let path = dir.file("mid.add-cow")
        // 1 MiB at 4 KiB: 256 clusters, bitmap bytes 0...31 at 4096. Set bits of clusters 256 and
        // 300 (past the end), as if the image file had been truncated.
        try Files.write(path, [0x01], at: 4096 + 32)
        try Files.write(path, [0x10], at: 4096 + 37)
        var image = try AddCOWImage.open(path: path)
        let found = try image.check(repair: false)
        #expect(found.corruptions == 2, "\(found)")
        #expect(found.totalClusters == 256)
        #expect(found.allocatedClusters == 2, "clusters 2 and 3 hold the write at 10000..<16000")
        let fixed = try image.check(repair: true)
        #expect(fixed.corruptionsFixed == 2 && fixed.corruptions == 0, "\(fixed)")
        #expect(try image.check(repair: false).isClean)
        try image.close()
        #expect(try Files.read(path, at: 4096 + 32, count: 8) == [UInt8](repeating: 0, count: 8))

        // A metadata file cut inside the bitmap area (the bitmap needs one whole cluster).
        try Files.truncate(path, 4096 + 16)
        image = try AddCOWImage.open(path: path)
        let short = try image.check(repair: false)
        #expect(short.corruptions == 1, "\(short)")
        #expect(try image.check(repair: true).corruptionsFixed == 1)
        #expect(try Files.size(path) == 8192)
        #expect(try image.check(repair: false).isClean)
        try image.close()

        // An image file shorter than the bitmap says: its set bits past the new end are reported.
        try Files.truncate(dir.file("mid.raw"), 8192)
        image = try AddCOWImage.open(path: path)
        defer { try? image.close() }
        let truncated = try image.check(repair: false)
        #expect(truncated.corruptions == 2, "clusters 2 and 3 are set past the 2-cluster image file: \(truncated)")
    }

    @Test("read-only images refuse writes, closed images refuse everything")
    func readOnlyAndClosed() throws {
        let dir = try TemporaryDirectory(prefix: "acow-ro")
        var rng = ModelRNG(seed: 0x40)
        _ = try makeAddCOW(in: dir, rng: &rng)
        let image = try AddCOWImage.open(path: dir.file("mid.add-cow"), options: OpenOptions(readOnly: true))
        let ro = #expect(throws: QEDError.self) {
            try [UInt8](repeating: 1, count: 10).withUnsafeBytes { try image.write($0, at: 0) }
        }
        #expect(ro?.code == .readOnly)
        let oob = #expect(throws: QEDError.self) { try image.readBytes(at: (1 << 20) - 4, count: 8) }
        #expect(oob?.code == .outOfRange)
        try image.close()
        let closed = #expect(throws: QEDError.self) { try image.readBytes(at: 0, count: 8) }
        #expect(closed?.code == .closed)
    }
}
