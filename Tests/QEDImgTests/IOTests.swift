import Foundation
import TestSupport
import Testing

/// `qed-img io` against `qemu-io`: the same script on copies of an image gives the same content
/// and the same summary lines (timing figures excluded).
@Suite struct IOTests {
    /// Output lines without the timing lines ("N bytes, 1 ops; ...").
    private func summaries(_ o: Outcome) -> [String] {
        o.lines.filter { !$0.contains(" ops; ") }
    }

    @Test func scriptsMatchQemuIO() throws {
        let box = try Sandbox()
        try box.makeOverlayOnRaw()
        try box.copy("ov.qed", "o.qed")
        try box.copy("ov.qed", "q.qed")
        let script = [
            "read -v 0 64", "read -P 0x11 0 512", "read -P 0x12 0 512", "write -P 7 100 200", "write -z 1M 64k",
            "write -z 100 1000", "read -P 0 100 1000", "flush", "map", "info", "write -P 0x41 5000 20",
            "read -v 4995 30",
            "read -q 0 1", "read 0 100M", "write 0x10000 4k", "read -v 0x10000 33", "write -P 0x66 2000k 48k",
        ]
        let args = script.flatMap { ["-c", $0] }
        let ours = try box.ours(["io"] + args + ["o.qed"])
        let theirs = try box.run("qemu-io", args + ["q.qed"])
        #expect(ours.status == theirs.status && ours.status == 1, "\(ours)\n\(theirs)")
        #expect(summaries(ours) == summaries(theirs), "\(ours)\n\(theirs)")
        #expect(summaries(ours).contains("Pattern verification failed at offset 0, 512 bytes"))
        #expect(summaries(ours).contains("read failed: Input/output error"))
        // Timing lines have qemu-io's shape.
        let timing = ours.lines.filter { $0.contains(" ops; ") }
        #expect(timing.count == theirs.lines.filter { $0.contains(" ops; ") }.count)
        #expect(
            timing.allSatisfy {
                $0.range(
                    of:
                        #"^[0-9.]+ (bytes|KiB|MiB), 1 ops; \d\d\.\d\d sec \([0-9.]+ (bytes|KiB|MiB|GiB)/sec and [0-9]+\.[0-9]{4} ops/sec\)$"#,
                    options: .regularExpression) != nil
            }, "\(timing)")
        #expect(try box.qemuIdentical("o.qed", "q.qed"))
        #expect(try box.qemuCheckStatus("o.qed") == 0)
    }

    @Test func aioScriptsMatchQemuIO() throws {
        let box = try Sandbox()
        try box.mustQemu("create", "-f", "qed", "o.qed", "4M")
        try box.copy("o.qed", "q.qed")
        let script = [
            "aio_write -P 1 0 64k", "aio_write -P 2 1M 128k", "aio_write -P 3 3M 4k", "aio_flush",
            "aio_read -P 2 1M 128k", "aio_read -P 1 0 4k", "aio_flush", "read -P 3 3M 4k", "map",
        ]
        let args = script.flatMap { ["-c", $0] }
        let ours = try box.ours(["io"] + args + ["o.qed"])
        let theirs = try box.run("qemu-io", args + ["q.qed"])
        #expect(ours.status == 0 && theirs.status == 0, "\(ours)\n\(theirs)")
        // Completion order may differ between the two: compare the lines as sets, and the tail in order.
        #expect(summaries(ours).sorted() == summaries(theirs).sorted(), "\(ours)\n\(theirs)")
        #expect(summaries(ours).suffix(6) == summaries(theirs).suffix(6))
        #expect(try box.qemuIdentical("o.qed", "q.qed"))
        #expect(try box.qemuCheckStatus("o.qed") == 0)
    }

    @Test func rawImagesAndReadOnlyOpens() throws {
        let box = try Sandbox()
        try box.mustQemu("create", "-f", "raw", "o.raw", "1M")
        try box.copy("o.raw", "q.raw")
        let args = ["-f", "raw", "-c", "info", "-c", "write -P 0x10 0x100 1k", "-c", "read -v 0x100 17", "-c", "map"]
        let ours = try box.ours(["io"] + args + ["o.raw"])
        let theirs = try box.run("qemu-io", args + ["q.raw"])
        #expect(summaries(ours) == summaries(theirs), "\(ours)\n\(theirs)")
        #expect(try box.bytes("o.raw") == box.bytes("q.raw"))
        let ro = try box.ours("io", "-r", "-c", "write 0 4k", "o.raw")
        #expect(ro.status == 1 && ro.stderr.contains("Block node is read-only"), "\(ro)")
        #expect(try box.bytes("o.raw") == box.bytes("q.raw"))
        let bad = try box.ours("io", "-c", "bogus", "o.raw")
        #expect(bad.status == 1 && bad.stderr.contains("command \"bogus\" not found"))
    }

    /// Our discard gives back whole allocated clusters (they then read as zeroes); QEMU's QED
    /// ignores discard, so this is checked on its own.
    @Test func discardPunchesWholeClusters() throws {
        let box = try Sandbox()
        try box.mustOurs("create", "d.qed", "1M")
        try box.mustOurs("io", "-c", "write -P 0x55 0 256k", "d.qed")
        let before = try parseJSON(try box.qemu("info", "--output=json", "d.qed").stdout) as? [String: Any]
        let o = try box.ours(
            "io", "-c", "discard 64k 100k", "-c", "read -P 0 64k 64k", "-c", "read -P 0x55 128k 128k",
            "-c", "read -P 0x55 0 64k", "d.qed")
        #expect(o.status == 0, "\(o)")
        #expect(o.lines.first == "discard 102400/102400 bytes at offset 65536")
        let after = try parseJSON(try box.qemu("info", "--output=json", "d.qed").stdout) as? [String: Any]
        #expect((after?["actual-size"] as? Int ?? 0) < (before?["actual-size"] as? Int ?? 0))
        #expect(try box.qemuCheckStatus("d.qed") == 0)
    }
}
