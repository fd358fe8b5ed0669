import Foundation
import TestSupport
import Testing

/// `commit`, `rebase` (-u and safe), `resize` and `measure` with add-cow images. The reference is
/// the guest view written by qemu-io into a raw file, compared by qemu-img.
@Suite struct AddCOWVerbTests {
    /// base.raw (4 MiB, 0x55 in the first MiB, 0x56 in 64 KiB at 1 MiB); t.add-cow over it (4 KiB
    /// clusters) with 512 bytes of 0x77 at 4 KiB, 64 KiB of 0x78 at 2 MiB and zeroes over backing
    /// data at 512 KiB; `expected.raw` the guest view, written by qemu-io.
    private func makeImage(_ box: Sandbox) throws {
        try box.mustQemu("create", "-q", "-f", "raw", "base.raw", "4M")
        try box.qemuIO("-f", "raw", "-c", "write -P 0x55 0 1M", "-c", "write -P 0x56 1M 64k", "base.raw")
        try box.mustOurs(
            "create", "-q", "-f", "add-cow", "-b", "base.raw", "-F", "raw", "-o", "image_file=disk.raw,cluster_size=4k",
            "t.add-cow")
        try box.mustOurs(
            "io", "-c", "write -P 0x77 4096 512", "-c", "write -P 0x78 2M 64k", "-c", "write -z 512k 64k", "t.add-cow")
        try box.copy("base.raw", "expected.raw")
        try box.qemuIO(
            "-f", "raw", "-c", "write -P 0x77 4096 512", "-c", "write -P 0x78 2M 64k", "-c", "write -z 512k 64k",
            "expected.raw")
        try expectGuestView(box, "expected.raw", "before")
    }

    private func expectGuestView(_ box: Sandbox, _ reference: String, _ what: String) throws {
        let compare = try box.ours("compare", "-F", "raw", "t.add-cow", reference)
        #expect(compare.status == 0 && compare.stdout == "Images are identical.\n", "\(what): \(compare)")
        let check = try box.ours("check", "t.add-cow")
        #expect(check.status == 0, "\(what): \(check)")
    }

    private func allocatedClusters(_ box: Sandbox) throws -> String? {
        try box.ours("info", "t.add-cow").lines.first { $0.hasPrefix("    allocated-clusters: ") }
    }

    @Test func commitWritesTheBackingFileAndEmptiesTheImage() throws {
        let box = try Sandbox()
        try makeImage(box)
        #expect(try allocatedClusters(box) == "    allocated-clusters: 33")
        let commit = try box.ours("commit", "t.add-cow")
        #expect(commit.status == 0 && commit.stdout == "Image committed.\n", "\(commit)")
        try box.mustQemu("compare", "-q", "-f", "raw", "-F", "raw", "base.raw", "expected.raw")
        #expect(try allocatedClusters(box) == "    allocated-clusters: 0", "every bit cleared")
        try expectGuestView(box, "expected.raw", "after commit")
        // The image file's space was given back: its clusters are no longer read.
        let map = try box.ours("map", "--output=json", "t.add-cow")
        #expect(!map.stdout.contains(#""depth": 0, "present": true"#), "\(map)")
    }

    @Test func commitKeepingTheImage() throws {
        let box = try Sandbox()
        try makeImage(box)
        let commit = try box.ours("commit", "-d", "t.add-cow")
        #expect(commit.status == 0, "\(commit)")
        try box.mustQemu("compare", "-q", "-f", "raw", "-F", "raw", "base.raw", "expected.raw")
        #expect(try allocatedClusters(box) == "    allocated-clusters: 33", "-d keeps the bits")
        try expectGuestView(box, "expected.raw", "after commit -d")
    }

    @Test func unsafeRebaseRenamesOnly() throws {
        let box = try Sandbox()
        try makeImage(box)
        try box.copy("base.raw", "other.raw")
        let rebase = try box.ours("rebase", "-u", "-b", "other.raw", "-F", "raw", "t.add-cow")
        #expect(rebase.status == 0, "\(rebase)")
        let info = try box.ours("info", "t.add-cow")
        #expect(info.lines.contains("backing file: other.raw") && info.lines.contains("backing file format: raw"))
        try FileManager.default.removeItem(atPath: box.path("base.raw"))
        try expectGuestView(box, "expected.raw", "over other.raw")
        #expect(try allocatedClusters(box) == "    allocated-clusters: 33")

        // Without a backing file the clusters not in the image file read zeroes.
        let drop = try box.ours("rebase", "-u", "-b", "", "t.add-cow")
        #expect(drop.status == 0, "\(drop)")
        #expect(!(try box.ours("info", "t.add-cow").stdout.contains("backing file")))
        try box.mustQemu("create", "-q", "-f", "raw", "alone.raw", "4M")
        try box.qemuIO(
            "-f", "raw", "-c", "write -P 0x55 4096 4096", "-c", "write -P 0x77 4096 512", "-c", "write -P 0x78 2M 64k",
            "alone.raw")
        try expectGuestView(box, "alone.raw", "without a backing file")
    }

    @Test func safeRebaseCopiesWhatDiffers() throws {
        let box = try Sandbox()
        try makeImage(box)
        try box.mustQemu("create", "-q", "-f", "raw", "zero.raw", "4M")
        let rebase = try box.ours("rebase", "-b", "zero.raw", "-F", "raw", "t.add-cow")
        #expect(rebase.status == 0, "\(rebase)")
        #expect(try box.ours("info", "t.add-cow").lines.contains("backing file: zero.raw"))
        try FileManager.default.removeItem(atPath: box.path("base.raw"))
        try expectGuestView(box, "expected.raw", "over zero.raw")
        // Clusters that were backing data are in the image file now (1 MiB + 64 KiB of 4 KiB clusters).
        #expect(try allocatedClusters(box) == "    allocated-clusters: \(33 + 272 - 17)")
    }

    @Test func resizeGrowsWithZeroes() throws {
        let box = try Sandbox()
        try makeImage(box)
        try box.mustOurs("resize", "t.add-cow", "6M")
        #expect(try box.fileSize("disk.raw") == 6 << 20)
        try box.mustQemu("resize", "-q", "-f", "raw", "expected.raw", "6M")
        try expectGuestView(box, "expected.raw", "grown")
        let shrink = try box.ours("resize", "--shrink", "t.add-cow", "1M")
        #expect(shrink.status == 1 && shrink.stderr.contains("can only grow"), "\(shrink)")
        #expect(try box.fileSize("disk.raw") == 6 << 20)
    }

    @Test func measureCountsBothFiles() throws {
        let box = try Sandbox()
        try makeImage(box)
        // Empty: 64 KiB clusters need a 64 KiB header and one cluster of bitmap; 4 KiB clusters a
        // 4 KiB header and 32 KiB of bitmap for 1 GiB.
        let empty = try box.ours("measure", "-O", "add-cow", "--size", "1G")
        #expect(empty.stdout == "required size: 1073872896\nfully allocated size: 1073872896\n", "\(empty)")
        let small = try box.ours("measure", "-O", "add-cow", "-o", "cluster_size=4k", "--size", "1G")
        #expect(small.stdout == "required size: 1073778688\nfully allocated size: 1073778688\n", "\(small)")
        let bad = try box.ours("measure", "-O", "add-cow", "-o", "cluster_size=4M", "--size", "1G")
        #expect(bad.status == 1 && bad.stderr.contains("4096, 2097152"), "\(bad)")
        // A conversion to add-cow takes what measure says: both files together.
        let measured = try box.ours("measure", "-O", "add-cow", "t.add-cow")
        try box.mustOurs("convert", "-O", "add-cow", "-o", "image_file=c.raw", "t.add-cow", "c.add-cow")
        let made = try box.fileSize("c.add-cow") + box.fileSize("c.raw")
        #expect(measured.stdout == "required size: \(made)\nfully allocated size: \(made)\n", "\(measured)")
        // Measured as a source, an add-cow image is its guest view: the same as its raw conversion.
        for args in [["-O", "qed"], ["-O", "qed", "-o", "cluster_size=4k"], ["-O", "raw"]] {
            let fromAddCOW = try box.ours(["measure"] + args + ["t.add-cow"])
            let fromRaw = try box.ours(["measure"] + args + ["-f", "raw", "expected.raw"])
            #expect(fromAddCOW.status == 0 && fromAddCOW.stdout == fromRaw.stdout, "\(args): \(fromAddCOW) \(fromRaw)")
        }
    }
}
