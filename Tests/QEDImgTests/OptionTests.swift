import Foundation
import Testing

/// The options verbs share (-f, -U, -q, -p, -t, -T, -O, -o, --output) and the named values they
/// take: every verb parses them alike, and a bad value reads as qed-img's one-line refusal.
@Suite struct OptionTests {
    @Test func sharedOptionsWorkInEveryVerbThatTakesThem() throws {
        let box = try Sandbox()
        try box.mustOurs("create", "-q", "-f", "qed", "a.qed", "1M")
        try box.mustOurs("io", "-f", "qed", "-c", "write -P 7 0 64k", "a.qed")
        let reads: [[String]] = [
            ["info", "-f", "qed", "-U", "--output=json", "a.qed"],
            ["check", "-f", "qed", "-U", "-q", "-T", "writeback", "a.qed"],
            ["map", "-f", "qed", "-U", "a.qed"],
            ["measure", "-f", "qed", "-U", "-O", "raw", "--output=json", "a.qed"],
            ["compare", "-U", "-p", "-q", "-T", "none", "a.qed", "a.qed"],
            ["convert", "-f", "qed", "-U", "-O", "raw", "-q", "-p", "-T", "off", "a.qed", "b.raw"],
            ["dd", "-f", "qed", "-U", "-O", "raw", "if=a.qed", "of=c.raw"],
            ["bench", "-f", "qed", "-U", "-q", "-t", "none", "-c", "8", "a.qed"],
            ["io", "-f", "qed", "-r", "-U", "-c", "read -P 7 0 64k", "a.qed"],
        ]
        for args in reads {
            let o = try box.ours(args)
            #expect(o.status == 0, "\(args): \(o)")
        }
        // -q and -p -q silence the verbs that print a line when done.
        for args in [
            ["compare", "-q", "a.qed", "b.raw"], ["compare", "-p", "-q", "a.qed", "b.raw"],
            ["check", "-q", "a.qed"], ["resize", "-q", "-f", "qed", "a.qed", "2M"],
            ["create", "-q", "-f", "raw", "d.raw", "1M"],
        ] {
            let o = try box.ours(args)
            #expect(o.status == 0 && o.stdout.isEmpty && o.stderr.isEmpty, "\(args): \(o)")
        }
        #expect(
            try box.ours("compare", "a.qed", "b.raw").stdout == "Warning: Image size mismatch!\nImages are identical.\n"
        )
        #expect(try box.qemuIdentical("a.qed", "c.raw"))
    }

    @Test func badNamedValuesReadAsOneLineRefusals() throws {
        let box = try Sandbox()
        try box.mustOurs("create", "-q", "a.qed", "1M")
        let unknown = "Unknown file format 'qcow2' (qed-img supports qed, add-cow and raw)"
        let cases: [([String], String)] = [
            (["info", "-f", "qcow2", "a.qed"], "qed-img: \(unknown)\n"),
            (["create", "-f", "qcow2", "n.img", "1M"], "qed-img: \(unknown)\n"),
            (["create", "-b", "a.qed", "-F", "qcow2", "n.qed"], "qed-img: \(unknown)\n"),
            (["convert", "-O", "qcow2", "a.qed", "n.img"], "qed-img: \(unknown)\n"),
            (["convert", "-o", "backing_fmt=qcow2", "-B", "a.qed", "a.qed", "n.qed"], "qed-img: \(unknown)\n"),
            (["compare", "-F", "qcow2", "a.qed", "a.qed"], "qed-img: \(unknown)\n"),
            (["measure", "-O", "qcow2", "--size", "1M"], "qed-img: \(unknown)\n"),
            (["convert", "-t", "fast", "a.qed", "n.qed"], "qed-img: Invalid cache option: fast\n"),
            (
                ["resize", "--preallocation=full", "a.qed", "2M"],
                "qed-img: a.qed: Unsupported preallocation mode 'full'\n"
            ),
        ]
        for (args, message) in cases {
            let o = try box.ours(args)
            #expect(o.status == 1 && o.stderr == message && o.stdout.isEmpty, "\(args): \(o)")
        }
        #expect(!FileManager.default.fileExists(atPath: box.path("n.img")))
        #expect(!FileManager.default.fileExists(atPath: box.path("n.qed")))
        // `off` is QEMU's other name for `none`; -t/-T where they are ignored take any text, as before.
        try box.mustOurs("convert", "-t", "off", "a.qed", "off.qed")
        try box.mustOurs("check", "-T", "anything", "a.qed")
        try box.mustOurs("resize", "--preallocation=off", "a.qed", "2M")
        // --output stays ArgumentParser's (a usage error, status 1).
        let output = try box.ours("info", "--output=xml", "a.qed")
        #expect(output.status == 1 && output.stderr.contains("'xml' is invalid for '--output <output>'"), "\(output)")
        // picture is map's alone: info, check and measure take qemu-img's human and json only.
        for verb in [["info"], ["check"], ["measure", "-O", "qed"]] {
            let picture = try box.ours(verb + ["--output=picture", "a.qed"])
            #expect(
                picture.status == 1 && picture.stderr.contains("'picture' is invalid for '--output <output>'"),
                "\(verb): \(picture)")
        }
    }
}
