import Foundation
import TestSupport
import Testing

/// `qed-img` with add-cow: create (new and existing image files), info's format-specific fields,
/// check, map, convert to and from add-cow, compare. qemu-img does not know add-cow, so the oracle
/// is the raw data: qemu-img compares our raw conversions with what qemu-io wrote.
@Suite struct AddCOWCLITests {
    @Test func createWriteInfoCheckMapConvertCompare() throws {
        let box = try Sandbox()
        try box.mustQemu("create", "-q", "-f", "raw", "base.raw", "2M")
        try box.qemuIO("-f", "raw", "-c", "write -P 0x55 0 1M", "base.raw")
        try box.mustOurs(
            "create", "-q", "-f", "add-cow", "-b", "base.raw", "-F", "raw", "-o", "image_file=disk.raw,cluster_size=4k",
            "t.add-cow")
        #expect(try Files.size(box.path("disk.raw")) == 2 << 20, "the image file was created with the backing size")
        try box.mustOurs("io", "-c", "write -P 0x77 4096 512", "t.add-cow")

        let info = try box.ours("info", "t.add-cow")
        #expect(info.status == 0)
        for line in [
            "file format: add-cow", "cluster_size: 4096", "backing file: base.raw", "Format specific information:",
            "    image-file: disk.raw", "    allocated-clusters: 1", "    all-allocated: false",
        ] {
            #expect(info.lines.contains(line), "missing '\(line)' in \(info)")
        }
        let check = try box.ours("check", "t.add-cow")
        #expect(check.status == 0 && check.stdout.contains("No errors were found on the image."), "\(check)")
        let map = try box.ours("map", "--output=json", "t.add-cow")
        #expect(map.status == 0 && map.stdout.contains(#""start": 4096, "length": 4096, "depth": 0"#), "\(map)")

        // The guest view: backing data with the one write, checked by qemu-img on the raw output.
        try box.mustOurs("convert", "-O", "raw", "t.add-cow", "out.raw")
        try box.mustQemu("create", "-q", "-f", "raw", "expected.raw", "2M")
        try box.qemuIO("-f", "raw", "-c", "write -P 0x55 0 1M", "-c", "write -P 0x77 4096 512", "expected.raw")
        try box.mustQemu("compare", "-q", "-f", "raw", "-F", "raw", "out.raw", "expected.raw")

        // To add-cow: the new image file alone is the disk (ALL_ALLOCATED), a raw file qemu-img reads.
        try box.mustOurs("convert", "-O", "add-cow", "-o", "image_file=c.raw", "t.add-cow", "c.add-cow")
        #expect(try box.ours("info", "c.add-cow").lines.contains("    all-allocated: true"))
        try box.mustQemu("compare", "-q", "-f", "raw", "-F", "raw", "c.raw", "expected.raw")
        let compare = try box.ours("compare", "c.add-cow", "t.add-cow")
        #expect(compare.status == 0 && compare.stdout == "Images are identical.\n", "\(compare)")
    }

    @Test func createOverAnExistingImageFileTakesItsSize() throws {
        let box = try Sandbox()
        try box.mustQemu("create", "-q", "-f", "raw", "data.raw", "3M")
        try box.qemuIO("-f", "raw", "-c", "write -P 0x3c 65536 4096", "data.raw")
        let made = try box.ours("create", "-f", "add-cow", "-o", "image_file=data.raw", "d.add-cow")
        #expect(made.status == 0, "\(made)")
        let read = try box.ours("io", "-c", "read -P 0x3c 65536 4096", "d.add-cow")
        #expect(read.status == 0 && !read.stdout.contains("Pattern verification failed"), "\(read)")
        #expect(try box.ours("info", "d.add-cow").lines.contains("virtual size: 3 MiB (3145728 bytes)"))
        let noImage = try box.ours("create", "-f", "add-cow", "x.add-cow", "1M")
        #expect(noImage.status == 1 && noImage.stderr.contains("image_file"), "\(noImage)")
        let qcow = try box.ours("create", "-f", "add-cow", "-o", "image_file=y.raw,image_fmt=qed", "y.add-cow", "1M")
        #expect(qcow.status == 1 && qcow.stderr.contains("only raw"), "\(qcow)")
    }

    /// `map` names the raw image file (not the metadata file) for clusters in it, at their guest
    /// offsets, as qemu-img names a raw file; once streamed, ours maps exactly as qemu-img maps the
    /// image file as raw.
    @Test func mapShowsTheImageFileAtGuestOffsets() throws {
        let box = try Sandbox()
        try box.mustQemu("create", "-q", "-f", "raw", "base.raw", "1M")
        try box.qemuIO("-f", "raw", "-c", "write -P 0x55 0 512k", "base.raw")
        try box.mustOurs(
            "create", "-q", "-f", "add-cow", "-b", "base.raw", "-F", "raw", "-o", "image_file=disk.raw,cluster_size=4k",
            "t.add-cow")
        try box.mustOurs("io", "-c", "write -P 0x77 8192 4096", "-c", "write -P 0x78 768k 8k", "t.add-cow")
        let human = try box.ours("map", "t.add-cow")
        #expect(
            human.lines == [
                "Offset          Length          Mapped to       File",
                "0               0x2000          0               base.raw",
                "0x2000          0x1000          0x2000          disk.raw",
                "0x3000          0x7d000         0x3000          base.raw",
                "0xc0000         0x2000          0xc0000         disk.raw", "",
            ], "\(human)")
        let json = try parseJSON(try box.ours("map", "--output=json", "t.add-cow").stdout) as? [[String: Any]]
        let inImage = (json ?? []).filter { ($0["depth"] as? Int) == 0 && ($0["data"] as? Bool) == true }
        #expect(inImage.count == 2)
        for row in inImage {
            #expect(row["offset"] as? Int == row["start"] as? Int, "raw data sits at its guest offset: \(row)")
        }
        try box.mustOurs("stream", "t.add-cow")
        try expectSameAsQemuMap(box, ours: "t.add-cow", raw: "disk.raw")
    }

    private func expectSameAsQemuMap(_ box: Sandbox, ours: String, raw: String) throws {
        for output in ["human", "json"] {
            let a = try box.ours("map", "--output=\(output)", ours)
            let b = try box.qemu("map", "--output=\(output)", "-f", "raw", raw)
            #expect(a.status == 0 && a.stdout == b.stdout, "\(output): ours \(a) / qemu \(b)")
        }
    }
}
