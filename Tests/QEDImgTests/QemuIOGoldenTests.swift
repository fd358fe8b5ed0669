import Foundation
import TestSupport
import Testing

/// `qed-img io` run as qemu-io (a link of that name, so that messages start alike) against the real
/// qemu-io on copies of one image: the iotests harness's options, stdin scripts, the commands and
/// their errors give the same stdout and stderr (timing lines excluded) and the same exit status.
@Suite struct QemuIOGoldenTests {
    /// The iotests harness's options before every qemu-io call.
    static let harness = ["--cache", "writeback", "--aio", "threads", "-f", "qed"]

    /// Our program under qemu-io's name in the sandbox.
    private func ourQemuIO(_ box: Sandbox) throws -> String {
        let link = box.path("qemu-io")
        if !FileManager.default.fileExists(atPath: link) {
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: Sandbox.qedImg)
        }
        return link
    }

    /// The lines a run printed on `stream`, timing lines ("N bytes, 1 ops; ...") left out.
    private func stable(_ text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter {
            !$0.contains(" ops; ")
        }
    }

    /// Runs qemu-io and ours with `args` on copies `q.qed`/`o.qed` of `image` (the file name last
    /// unless `file` is false) and expects the same outputs and status.
    private func expectSame(
        _ box: Sandbox, _ args: [String], image: String? = "base.qed", stdin: String? = nil,
        sameContent: Bool = true, normalise: (String) -> String = { $0 },
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let ourProgram = try ourQemuIO(box)
        var outcomes: [Outcome] = []
        for (program, copy) in [("qemu-io", "q.qed"), (ourProgram, "o.qed")] {
            if let image { try box.copy(image, copy) }
            let full = args + (image == nil ? [] : [copy])
            let command = ([program] + (program == ourProgram ? ["io"] : []) + full).map(shellQuote).joined(
                separator: " ")
            if let stdin {
                try Data(stdin.utf8).write(to: URL(fileURLWithPath: box.path("script.txt")))
                outcomes.append(try box.run("/bin/sh", ["-c", "exec \(command) < script.txt"]))
            } else {
                outcomes.append(try box.run("/bin/sh", ["-c", "exec \(command) < /dev/null"]))
            }
        }
        let (theirs, ours) = (outcomes[0], outcomes[1])
        #expect(ours.status == theirs.status, "\(args): ours \(ours) / qemu \(theirs)", sourceLocation: sourceLocation)
        #expect(
            stable(normalise(ours.stdout.replacingOccurrences(of: "o.qed", with: "q.qed"))) == stable(theirs.stdout),
            "\(args): ours \(ours) / qemu \(theirs)", sourceLocation: sourceLocation)
        #expect(
            ours.stderr.replacingOccurrences(of: "o.qed", with: "q.qed") == theirs.stderr,
            "\(args): ours \(ours) / qemu \(theirs)", sourceLocation: sourceLocation)
        if image != nil && sameContent {
            #expect(try box.qemuIdentical("o.qed", "q.qed"), sourceLocation: sourceLocation)
        }
    }

    private func shellQuote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: #"'\''"#) + "'" }

    private func makeBase(_ box: Sandbox) throws {
        try box.mustQemu("create", "-q", "-f", "qed", "base.qed", "4M")
        try box.qemuIO("-c", "write -P 0x11 0 128k", "-c", "write -z 1M 64k", "base.qed")
    }

    @Test func harnessOptionsAndCommandsMatchQemuIO() throws {
        let box = try Sandbox()
        try makeBase(box)
        let script = [
            "readv -P 0x11 0 512 1k 2k", "writev -P 0x22 64k 4k 4k", "read -P 0x22 -s 4k -l 4k 64k 8k",
            "read -pP 0x11 -s 512 0 4k", "read -P 0x11 -s 8k 0 4k", "read -l 5 0 4k", "alloc 0 4M", "alloc 1M 128k",
            // qemu-io's discard is a no-op on QED; ours may free the range: rewritten before the comparison.
            "alloc 4M", "length", "info", "map", "discard 0 64k", "write -P 0x44 0 64k", "alloc 0 128k",
            "write -u 0 512",
            "write -z -P 1 0 512", "write -zu 2M 64k", "write -f -P 3 3M 4k", "read -P 3 3M 4k", "truncate 8M",
            "length", "truncate 1M", "read 0 1x", "read 0 99E", "read -P 256 0 1", "read", "write 0 4M 5",
            "bogus", "help nothing", "reopen -r", "write 0 1", "reopen -w", "reopen -r -w", "reopen -c bogus",
            "aio_write -P 9 0 4k", "aio_flush", "aio_read -P 9 0 4k",
            "aio_flush", "flush", "f", "r -P 9 0 4k", "sleep 1", "sleep x", "break write_aio a", "read 8M 512",
            "write -c 0 64k", "read -b 0 512",
        ]
        try expectSame(box, Self.harness + script.flatMap { ["-c", $0] })
        // The break-point commands' lines say that they need QEMU's blkdebug driver.
        let note = " (needs QEMU's blkdebug driver)"
        try expectSame(box, Self.harness + ["-c", "help"]) { $0.replacingOccurrences(of: note, with: "") }
        let help = try box.ours("io", "-c", "help")
        #expect(help.lines.filter { $0.hasSuffix(note) }.count == 4, "\(help)")
    }

    @Test func stdinScriptsPromptAndStopAtQuit() throws {
        let box = try Sandbox()
        try makeBase(box)
        try expectSame(box, Self.harness, stdin: "write -P 5 0 4k\nread -P 5 0 4k\n\nbogus\nalloc 0 8k\n")
        try expectSame(box, Self.harness, stdin: "read 0 512\nquit\nread 0 512\n")
        // No file: open and close from the script.
        try box.copy("base.qed", "n.qed")
        try expectSame(
            box, [], image: nil,
            stdin: "read 0 1\nopen -r -o driver=qed n.qed\nread -P 0x11 0 1\nwrite 0 1\nopen n.qed\nclose\nclose\n")
    }

    @Test func optionsReadOnlySnapshotAndErrorsMatchQemuIO() throws {
        let box = try Sandbox()
        try makeBase(box)
        try expectSame(box, ["-r", "-f", "qed", "-c", "write 0 512", "-c", "read -P 0x11 0 512"])
        // -s: writes land in a temporary overlay, the image is untouched.
        try expectSame(box, ["-s", "-f", "qed", "-c", "write -P 7 0 512", "-c", "read -P 7 0 512"])
        try expectSame(box, ["-U", "-r", "-n", "-c", "read 0 1"])
        try expectSame(box, ["-t", "bogus", "-c", "read 0 1"])
        try expectSame(box, ["-i", "bogus", "-c", "read 0 1"])
        try expectSame(box, ["-f", "qed", "--image-opts", "-c", "read 0 1"], image: nil)
        try expectSame(box, ["-c", "read 0 1", "-f", "qed", "nothere.qed"], image: nil)
        // Two files: qemu-io's usage (our text tells what each option does here) and status 1.
        let usage = try box.ours("io", "-c", "read 0 1", "x", "y")
        #expect(usage.status == 1 && usage.stdout.hasPrefix("Usage: qed-img [OPTIONS]... [-c STRING]... [file]\n"))
        try expectSame(
            box, ["--image-opts", "-c", "read -P 0x11 0 512", "driver=qed,file.filename=base.qed"], image: nil)
    }

    @Test func nestedFormatsMatchQemuIO() throws {
        let box = try Sandbox()
        try makeBase(box)
        // outer.qed's guest data is the bytes of base.qed (as qemu-iotests 072 makes it).
        try box.mustQemu("convert", "-f", "raw", "-O", "qed", "base.qed", "outer.qed")
        let nested = "driver=qed,file.driver=qed,file.file.filename=outer.qed"
        // Reads of the inner image, an in-place write through both layers, and the outer image
        // opened alone (its guest data is a QED header, not the pattern).
        try expectSame(
            box, [], image: nil,
            stdin: "open -o \(nested)\nread -P 0x11 0 4k\nread -P 0 1M 64k\nwrite -P 0x33 4k 512\n"
                + "read -P 0x33 4k 512\nalloc 0 2M\nclose\nopen outer.qed\nread -P 0x11 0 512\n")
        try expectSame(box, ["--image-opts", "-c", "read -P 0x33 4k 512", nested], image: nil)
        #expect(try box.qemuCheckStatus("outer.qed") == 0)
    }

    @Test func headerErrorsMatchQemuIO() throws {
        let box = try Sandbox()
        try makeBase(box)
        // Offsets in QED's header: cluster size 4, table size 8, header size 12, L1 offset 40, image size 48.
        for (offset, value) in [(4, UInt64(0xffff_ffff)), (8, 0xffff_ffff), (12, 0xffff_ffff), (40, ~0), (48, ~0)] {
            try box.copy("base.qed", "bad.qed")
            if offset < 40 {
                try box.poke32("bad.qed", at: UInt64(offset), UInt32(truncatingIfNeeded: value))
            } else {
                try box.poke64("bad.qed", at: UInt64(offset), value)
            }
            try expectSame(box, ["-c", "read 0 512"], image: "bad.qed", sameContent: false)
        }
    }
}
