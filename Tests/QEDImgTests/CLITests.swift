import Foundation
import TestSupport
import Testing

/// Behaviour around the verbs: create's output, errors, locks, help, signals, bench.
@Suite struct CLITests {
    @Test func createPrintsQemusLineAndWritesQemusLayout() throws {
        let box = try Sandbox()
        try box.mustQemu("create", "-f", "raw", "base.raw", "100k")
        let cases: [[String]] = [
            ["X.qed", "1M"], ["-o", "cluster_size=4096,table_size=2", "X.qed", "1000"],
            ["-b", "base.raw", "-F", "raw", "X.qed"], ["-b", "base.raw", "-F", "raw", "X.qed", "1G"],
            ["-o", "cluster_size=1M", "X.qed", "5G"], ["-u", "-b", "missing.raw", "-F", "raw", "X.qed", "1M"],
        ]
        for args in cases {
            let ours = try box.ours(["create", "-f", "qed"] + args.map { $0 == "X.qed" ? "o.qed" : $0 })
            let theirs = try box.qemu(["create", "-f", "qed"] + args.map { $0 == "X.qed" ? "q.qed" : $0 })
            #expect(ours.status == 0 && theirs.status == 0, "\(ours) \(theirs)")
            #expect(ours.stdout.replacingOccurrences(of: "'o.qed'", with: "'q.qed'") == theirs.stdout, "\(args)")
            #expect(try box.bytes("o.qed") == box.bytes("q.qed"), "\(args)")
        }
        // qemu-img's refusals.
        for args in [["-b", "base.raw", "n.qed"], ["n.qed"], ["-o", "cluster_size=3000", "n.qed", "1M"]] {
            let ours = try box.ours(["create", "-f", "qed"] + args)
            let theirs = try box.qemu(["create", "-f", "qed"] + args)
            #expect(ours.status == 1 && theirs.status == 1, "\(args)")
            #expect(ours.stderr.hasPrefix("qed-img: n.qed: "), "\(ours)")
        }
        #expect(try box.ours("create", "-f", "qed", "n.qed", "1M").stderr.isEmpty)
    }

    @Test func errorsNameTheFileAndNeverTrap() throws {
        let box = try Sandbox()
        let missing = try box.ours("info", "nope.qed")
        #expect(missing.status == 1)
        #expect(
            missing.stderr.hasPrefix("qed-img: Could not open 'nope.qed': ")
                && missing.stderr.contains("No such file or directory"),
            "\(missing)")
        try box.mustQemu("create", "-f", "qed", "a.qed", "1M")
        try box.poke64("a.qed", at: 16, 0x100)  // an unknown incompatible feature
        let unknown = try box.ours("info", "a.qed")
        #expect(
            unknown.status == 1 && unknown.stderr == "qed-img: Could not open 'a.qed': Unsupported QED features: 100\n",
            "\(unknown)")
        for verb in ["check", "map", "convert", "compare"] {
            let o = try box.ours([verb, "a.qed"] + (verb == "convert" || verb == "compare" ? ["b.qed"] : []))
            #expect(o.status != 0 && !o.stderr.contains("Fatal error") && !o.stderr.contains("Stack"), "\(verb): \(o)")
        }
        try box.mustQemu("create", "-f", "qed", "c.qed", "1M")
        try box.qemuIO("-c", "write -P 3 0 64k", "c.qed")
        let onto = try box.ours("convert", "c.qed", "c.qed")
        #expect(onto.status == 1 && onto.stderr == "qed-img: c.qed: the output is the same file as the input 'c.qed'\n")
        #expect(try box.ours("io", "-c", "read -P 3 0 64k", "c.qed").status == 0)
        let usage = try box.ours("info", "--bogus", "a.qed")
        #expect(usage.status == 1 && usage.stderr.contains("Unknown option"))
    }

    @Test func helpForEveryVerbAndVersion() throws {
        let box = try Sandbox()
        for verb in [
            "create", "info", "check", "map", "convert", "compare", "resize", "rebase", "commit", "amend", "stream",
            "measure",
            "dd", "bench",
        ] {
            let o = try box.ours(verb, "--help")
            #expect(o.status == 0 && o.stdout.contains("USAGE: qed-img \(verb)"), "\(verb): \(o)")
        }
        // `io` is qemu-io: its -h/--help is qemu-io's usage text.
        for flag in ["-h", "--help"] {
            let o = try box.ours("io", flag)
            #expect(o.status == 0 && o.stdout.hasPrefix("Usage: qed-img [OPTIONS]... [-c STRING]... [file]\n"), "\(o)")
        }
        let v = try box.ours("--version")
        #expect(v.status == 0 && v.stdout.hasPrefix("qed-img version "))
    }

    @Test func lockConflictsReadLikeQemuAndForceShareWorks() throws {
        let box = try Sandbox()
        try box.mustQemu("create", "-f", "qed", "busy.qed", "1M")
        // qemu-io reading commands from a pipe holds the image open (read-write) until the pipe
        // closes. Nothing may touch the image while it opens (a probe's own lock would make its
        // open fail): the holder waits for qemu-io's first prompt, printed once the open is done.
        let writer = try QEMUIOHolder(image: box.path("busy.qed"))
        defer { writer.stop() }
        let info = try box.ours("info", "busy.qed")
        #expect(info.status == 1)
        #expect(
            info.stderr
                == "qed-img: Could not open 'busy.qed': Failed to get shared \"write\" lock\nIs another process using the image [busy.qed]?\n",
            "\(info)")
        let io = try box.ours("io", "-c", "read 0 1", "busy.qed")
        #expect(io.status == 1 && io.stderr.contains("Failed to get \"write\" lock"), "\(io)")
        let shared = try box.ours("info", "-U", "busy.qed")
        #expect(shared.status == 0 && shared.stdout.hasPrefix("image: busy.qed\n"))
        #expect(try box.ours("map", "-U", "busy.qed").status == 0)
        // Creating over an image in use is refused before a byte of it changes.
        let before = try box.bytes("busy.qed")
        let create = try box.ours("create", "busy.qed", "2M")
        #expect(create.status == 1 && create.stderr.contains("Failed to get \"write\" lock"), "\(create)")
        #expect(try box.bytes("busy.qed") == before)
        #expect(try box.ours("compare", "-U", "busy.qed", "busy.qed").status == 0)
    }

    @Test func interruptStopsCleanly() throws {
        let box = try Sandbox()
        // 64 MiB of non-zero data: eight 8 MiB copy chunks, a progress line after each.
        try box.mustOurs("create", "-f", "raw", "big.raw", "64M")
        try box.mustOurs("bench", "-w", "-f", "raw", "-c", "64", "-d", "4", "-s", "1M", "--pattern=7", "big.raw")
        // Progress goes to a pipe with room for 60 bytes: the first three lines ("    (0.00/100%)",
        // then 12 % and 25 %: 50 bytes) go through, the fourth blocks until the test reads. So the copy
        // cannot finish before the signal, however fast the machine or slow the test.
        let progress = try NarrowPipe(room: 60)
        let err = Pipe()
        let process = try SpawnedProcess(
            Sandbox.qedImg, ["convert", "-p", "-m", "1", "-f", "raw", box.path("big.raw"), box.path("out.qed")],
            stdout: progress.writeHandle.fileDescriptor, stderr: err.fileHandleForWriting.fileDescriptor)
        try? err.fileHandleForWriting.close()
        progress.closeWriteEnd()
        // Interrupt once the copy is under way: more than the first line (printed before the first
        // chunk) is in the pipe. qed-img installs its handler before it prints anything.
        let firstLine = "    (0.00/100%)\n".utf8.count
        let deadline = Date().addingTimeInterval(300)
        while progress.buffered <= progress.fillerCount + firstLine && process.isRunning && Date() < deadline {
            usleep(2_000)
        }
        process.signal(SIGINT)
        let out = String(decoding: progress.readChildOutput(), as: UTF8.self)
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.wait() == 130, "\(out) \(errText)")
        #expect(errText == "qed-img: interrupted; the images were flushed and closed\n")
        #expect(out.hasPrefix("    (0.00/100%)\n    (12.00/100%)\n"), "\(out)")
        #expect(!out.contains("(100.00/100%)"), "\(out)")
        // The partial image is consistent and closed cleanly (NEED_CHECK clear).
        #expect(try box.qemuCheckStatus("out.qed") == 0)
        #expect(try box.bytes("out.qed")[16] == 0)
        #expect(try box.fileSize("out.qed") < 64 << 20)
        // Part of the data was copied, and copied right.
        let copied = try box.qemu("compare", "-f", "raw", "-F", "qed", "big.raw", "out.qed")
        #expect(copied.status == 1 && copied.stdout.hasPrefix("Content mismatch at offset "), "\(copied)")
        #expect(!copied.stdout.hasPrefix("Content mismatch at offset 0!"), "\(copied)")
    }

    @Test func benchPrintsQemusReport() throws {
        let box = try Sandbox()
        try box.mustQemu("create", "-f", "qed", "o.qed", "16M")
        try box.copy("o.qed", "q.qed")
        for args in [
            ["-c", "200"], ["-c", "300", "-w", "-s", "64k", "-d", "4"],
            ["-c", "100", "-w", "-d", "2", "--flush-interval=10", "-o", "1M", "-S", "128k", "--pattern=5"],
        ] {
            let ours = try box.ours(["bench"] + args + ["o.qed"])
            let theirs = try box.qemu(["bench"] + args + ["q.qed"])
            #expect(ours.status == 0 && theirs.status == 0, "\(ours) \(theirs)")
            #expect(ours.lines.dropLast(2) == theirs.lines.dropLast(2), "\(ours) \(theirs)")
            #expect(
                ours.lines.last { !$0.isEmpty }?.range(
                    of: #"^Run completed in \d+\.\d{3} seconds\.$"#, options: .regularExpression) != nil)
        }
        // Writes land where qemu-img bench puts them.
        #expect(try box.qemuIdentical("o.qed", "q.qed"))
        let check = try box.qemu("check", "o.qed")
        #expect(check.status == 0, "\(check)")
        let e = try box.ours("bench", "-c", "10", "-d", "8", "--flush-interval=4", "o.qed")
        #expect(e.status == 1 && e.stderr == "qed-img: Flush interval can't be smaller than depth\n")
    }

    /// Parallel first writes into a fresh L2 table once lost entries (two copies of the table in
    /// the cache); every run must leave a clean image.
    @Test func parallelWritesIntoAFreshTableStayConsistent() throws {
        let box = try Sandbox()
        for round in 0..<20 {
            try box.mustOurs("create", "-q", "p.qed", "16M")
            try box.mustOurs("bench", "-w", "-c", "64", "-s", "64k", "-d", "16", "--pattern=\(round + 1)", "p.qed")
            let check = try box.qemu("check", "p.qed")
            #expect(check.status == 0, "round \(round): \(check)")
            let o = try box.ours("io", "-c", "read -P \(round + 1) 0 4M", "p.qed")
            #expect(o.status == 0, "round \(round): \(o)")
        }
    }
}
