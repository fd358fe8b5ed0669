import Foundation
import TestSupport
import Testing

/// `qed-img` and backing names stored in images: `info` shows the name as stored and opens nothing
/// but the image (like qemu-img); `info --backing-chain` and the verbs that read data open the
/// backing file as a plain local path, whatever protocol the name seems to name.
@Suite struct BackingNameCLITests {
    /// Names qemu-img would interpret (options, NBD, a protocol prefix), and an ordinary one.
    static let names = [
        #"json:{"driver":"file","filename":"/etc/passwd"}"#,
        "nbd://127.0.0.1:1/x",
        "nbd+unix:///?socket=/tmp/s",
        "file:/tmp/x",
        "file:x",
        "base.raw",
    ]

    @Test(arguments: names) func infoShowsTheNameAndOpensTheBackingFileOnlyForTheChain(_ name: String) throws {
        let box = try Sandbox()
        // Made by qemu-img, as an image from elsewhere would be.
        try box.mustQemu("create", "-q", "-f", "qed", "-u", "-b", name, "-F", "raw", "o.qed", "64k")

        // No backing file: `info` needs none, and prints what qemu-img prints.
        try expectSameAsQemu(box, ["info", "o.qed"])
        try expectSameAsQemu(box, ["info", "--output=json", "o.qed"], json: true)
        let missing = try box.ours("info", "--backing-chain", "o.qed")
        #expect(
            missing.status == 1
                && missing.stderr
                    == "qed-img: Could not open '\(name)': Could not open '\(name)': No such file or directory\n",
            "\(missing)")
        let read = try box.ours("io", "-c", "read 0 512", "o.qed")
        #expect(
            read.status == 1 && read.stderr.contains("Could not open backing file: Could not open '\(name)'"), "\(read)"
        )

        // The local file the name denotes (its slashes are directories below the sandbox).
        let local = box.path(name)
        try FileManager.default.createDirectory(
            atPath: (local as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true)
        try Data([UInt8](repeating: 0xA5, count: 65536)).write(to: URL(fileURLWithPath: local))
        let watch = try OpenWatch(path: local)
        let info = try box.ours("info", "o.qed")
        #expect(
            info.status == 0 && info.stdout.contains("\nbacking file: \(name)\nbacking file format: raw\n"), "\(info)")
        #expect(watch.takeOpens() == 0, "info without --backing-chain opened the backing file")

        let chain = try box.ours("info", "--backing-chain", "o.qed")
        #expect(
            chain.status == 0
                && chain.stdout.contains("\n\nimage: \(name)\nfile format: raw\nvirtual size: 64 KiB (65536 bytes)\n"),
            "\(chain)")
        #expect(watch.takeOpens() >= 1, "info --backing-chain did not open the local file")
        let data = try box.ours("io", "-c", "read -P 0xa5 0 64k", "o.qed")
        #expect(data.status == 0 && data.stdout.hasPrefix("read 65536/65536 bytes at offset 0\n"), "\(data)")
        if name == "base.raw" {
            // An ordinary name: the chain looks the same to qemu-img.
            try expectSameAsQemu(box, ["info", "--backing-chain", "o.qed"])
        }
    }
}
