import Foundation
import QED
import TestSupport
import Testing

/// `qed-nbd -f add-cow` against libnbd's tools and QEMU: block status (base:allocation and
/// qemu:allocation-depth) agrees with the engine, reads (nbdcopy, qemu-img, qemu-io) give the guest
/// view qemu-io wrote into a raw reference, and writes from several connections (nbdcopy, qemu-io)
/// land in the image file with their bits, as the reference says.
@Suite struct NBDAddCOWTests {
    /// base.raw (4 MiB: 0x11 in the first MiB, 0x12 in 64 KiB at 3 MiB); t.add-cow over it with
    /// 4 KiB clusters: a partial-cluster write, a zero write over backing data, a 64 KiB write past
    /// the backing data. `expected.raw`: the same done by qemu-io on a copy of the base.
    private func makeImage(_ box: NBDSandbox) throws {
        try box.must("qemu-img", "create", "-q", "-f", "raw", box.path("base.raw"), "4M")
        try box.must(
            "qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x12 3M 64k", box.path("base.raw"))
        try AddCOWImage.create(
            path: box.path("t.add-cow"),
            options: AddCOWCreateOptions(
                imageFile: "disk.raw", backingFile: "base.raw", backingFormat: .raw, clusterSize: 4096))
        let image = try AddCOWImage.open(path: box.path("t.add-cow"))
        try [UInt8](repeating: 0x77, count: 1000).withUnsafeBytes { try image.write($0, at: 8192 + 100) }
        try image.writeZeroes(at: 256 << 10, length: 64 << 10, unmap: false)
        try [UInt8](repeating: 0x78, count: 65536).withUnsafeBytes { try image.write($0, at: 2 << 20) }
        try image.close()
        try FileManager.default.copyItem(atPath: box.path("base.raw"), toPath: box.path("expected.raw"))
        try box.must(
            "qemu-io", "-f", "raw", "-c", "write -P 0x77 8292 1000", "-c", "write -z 256k 64k",
            "-c", "write -P 0x78 2M 64k", box.path("expected.raw"))
    }

    private static func runs(_ json: String) throws -> [[Int]] {
        (try parseJSON(json) as? [[String: Any]] ?? []).map {
            [$0["offset"] as? Int ?? -1, $0["length"] as? Int ?? -1, $0["type"] as? Int ?? -1]
        }
    }

    @Test func blockStatusAndReadsMatchTheReference() throws {
        let box = try NBDSandbox()
        try makeImage(box)
        let expected = try NBDClientToolTests.engineRuns(box.path("t.add-cow"))
        let server = try box.startServer(["-f", "add-cow", "-r", "-A", "-e", "4", "-t"], image: "t.add-cow")

        let info = try parseJSON(try box.must("nbdinfo", "--json", server.uri()).stdout) as? [String: Any]
        let export = (info?["exports"] as? [[String: Any]])?.first
        #expect(export?["export-size"] as? Int == 4 << 20)
        #expect(export?["can_multi_conn"] as? Bool == true)

        let map = try Self.runs(try box.must("nbdinfo", "--map", "--json", server.uri()).stdout)
        #expect(map == expected.allocation, "nbdinfo --map: \(map) vs engine \(expected.allocation)")
        #expect(map.contains { $0[2] == 0 } && map.contains { $0[2] == 3 }, "data and holes: \(map)")
        let depth = try Self.runs(
            try box.must("nbdinfo", "--map=qemu:allocation-depth", "--json", server.uri()).stdout)
        #expect(depth == expected.depth, "allocation depth: \(depth) vs engine \(expected.depth)")
        // Depth 1 exactly where the image holds the clusters: the write (one cluster, 0x2000), the
        // zeroes (16) and the 64 KiB write (16); the backing file (depth 2) elsewhere.
        let local = depth.filter { $0[2] == 1 }.map { [$0[0], $0[1]] }
        #expect(local == [[8192, 4096], [256 << 10, 64 << 10], [2 << 20, 64 << 10]], "\(depth)")

        try box.must("nbdcopy", server.uri(), box.path("out.raw"))
        #expect(try box.bytes("out.raw") == box.bytes("expected.raw"))
        let compare = try box.run(
            "qemu-img", "compare", "-f", "raw", "-F", "raw", server.uri(), box.path("expected.raw"))
        #expect(compare.status == 0 && compare.stdout.contains("Images are identical"), "\(compare)")
        let io = try box.must(
            "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 0 8292", "-c", "read -P 0x77 8292 1000",
            "-c", "read -P 0 256k 64k", "-c", "read -P 0x78 2M 64k", "-c", "read -P 0x12 3M 64k", server.uri())
        #expect(!io.stdout.contains("Pattern verification failed"), "\(io)")
        #expect(server.terminate() == 0, "\(server.log)")
    }

    @Test func writesFromSeveralConnectionsLandWithTheirBits() throws {
        let box = try NBDSandbox()
        try makeImage(box)
        // A source file with data everywhere but a zero MiB, copied in over 4 connections.
        var rng = SplitMix64(seed: 0xADDC0)
        var source = rng.bytes(4 << 20)
        for i in (1 << 20)..<(2 << 20) { source[i] = 0 }
        #expect(FileManager.default.createFile(atPath: box.path("src.raw"), contents: Data(source)))
        let server = try box.startServer(["-f", "add-cow", "-e", "4", "-t"], image: "t.add-cow")
        try box.must("nbdcopy", "--connections=4", "--flush", box.path("src.raw"), server.uri())
        // qemu-io over NBD: unaligned writes and a zero write, read back through the export.
        try box.must(
            "qemu-io", "-f", "raw", "-c", "write -P 0xa1 12345 7000", "-c", "write -z 3M 4096",
            "-c", "read -P 0xa1 12345 7000", server.uri())
        #expect(server.terminate() == 0, "\(server.log)")

        try FileManager.default.copyItem(atPath: box.path("src.raw"), toPath: box.path("want.raw"))
        try box.must(
            "qemu-io", "-f", "raw", "-c", "write -P 0xa1 12345 7000", "-c", "write -z 3M 4096", box.path("want.raw"))
        let image = try AddCOWImage.open(path: box.path("t.add-cow"), options: OpenOptions(readOnly: true))
        defer { try? image.close() }
        #expect(try image.check(repair: false).isClean)
        let want = try box.bytes("want.raw")
        #expect(try image.readBytes(at: 0, count: 4 << 20) == want)
        // Every cluster the copy wrote data into is in the image file, and the raw file agrees there.
        let raw = try box.bytes("disk.raw")
        var wrong: [UInt64] = []
        for e in try image.extents(at: 0, length: 4 << 20) where e.depth == 0 && e.present && e.data {
            let r = Int(e.offset)..<Int(e.offset + e.length)
            if Array(raw[r]) != Array(want[r]) { wrong.append(e.offset) }
        }
        #expect(wrong.isEmpty, "image-file bytes differ at \(wrong.prefix(5))")
        #expect(image.allocatedClusters >= 768, "the three data MiB are in the image file: \(image.allocatedClusters)")
    }
}
