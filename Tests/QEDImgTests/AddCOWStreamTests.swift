import Foundation
import TestSupport
import Testing

/// `qed-img stream`: an add-cow image's backing data copied into its image file, then ALL_ALLOCATED;
/// interrupted (kill -9, SIGINT) streams leave a valid image that a rerun completes; QED images are
/// streamed as `rebase -b ""`; raw images are refused. The oracle is qemu-img comparing the raw
/// image file with the guest view qemu-io wrote.
@Suite struct AddCOWStreamTests {
    /// Backing file (4 MiB): 0x55 in the first MiB, 0x66 in 512 KiB at 2 MiB, zeroes elsewhere.
    /// Image file: 0xEE everywhere (stale bytes under clear bits, which must not show). Guest
    /// writes: 512 bytes of 0x77 at 4 KiB, 64 KiB of 0x88 at 3 MiB. `expected.raw`: the guest view.
    private func makeImage(_ box: Sandbox) throws {
        try box.mustQemu("create", "-q", "-f", "raw", "base.raw", "4M")
        try box.qemuIO("-f", "raw", "-c", "write -P 0x55 0 1M", "-c", "write -P 0x66 2M 512k", "base.raw")
        try box.mustQemu("create", "-q", "-f", "raw", "disk.raw", "4M")
        try box.qemuIO("-f", "raw", "-c", "write -P 0xee 0 4M", "disk.raw")
        try box.mustOurs(
            "create", "-q", "-f", "add-cow", "-b", "base.raw", "-F", "raw", "-o",
            "image_file=disk.raw,cluster_size=4k", "t.add-cow")
        try box.mustOurs("io", "-c", "write -P 0x77 4096 512", "-c", "write -P 0x88 3M 64k", "t.add-cow")
        try box.mustQemu("create", "-q", "-f", "raw", "expected.raw", "4M")
        try box.qemuIO(
            "-f", "raw", "-c", "write -P 0x55 0 1M", "-c", "write -P 0x66 2M 512k", "-c", "write -P 0x77 4096 512",
            "-c", "write -P 0x88 3M 64k", "expected.raw")
        let before = try box.ours("compare", "-F", "raw", "t.add-cow", "expected.raw")
        #expect(before.status == 0, "the guest view before streaming: \(before)")
    }

    @Test func streamMakesTheImageFileTheWholeDisk() throws {
        let box = try Sandbox()
        try makeImage(box)
        let differs = try box.qemu("compare", "-q", "-f", "raw", "-F", "raw", "disk.raw", "expected.raw")
        #expect(differs.status == 1, "before streaming the image file alone is not the disk")

        let stream = try box.ours("stream", "-p", "t.add-cow")
        #expect(stream.status == 0, "\(stream)")
        #expect(stream.stdout.hasPrefix("    (0.00/100%)\n") && stream.stdout.contains("(100.00/100%)"), "\(stream)")
        try box.mustQemu("compare", "-f", "raw", "-F", "raw", "disk.raw", "expected.raw")
        let info = try box.ours("info", "t.add-cow")
        for line in ["    all-allocated: true", "    allocated-clusters: 1024"] {
            #expect(info.lines.contains(line), "missing '\(line)' in \(info)")
        }
        #expect(try box.peek64("t.add-cow", at: 32) & 1 == 1, "ALL_ALLOCATED is in the header")
        let check = try box.ours("check", "t.add-cow")
        #expect(check.status == 0, "\(check)")

        // The backing file is no longer needed: gone, the image still reads the whole disk.
        try FileManager.default.removeItem(atPath: box.path("base.raw"))
        let compare = try box.ours("compare", "-F", "raw", "t.add-cow", "expected.raw")
        #expect(compare.status == 0 && compare.stdout == "Images are identical.\n", "\(compare)")
        // A second stream has nothing to do and changes nothing.
        let again = try box.ours("stream", "t.add-cow")
        #expect(again.status == 0, "\(again)")
        try box.mustQemu("compare", "-q", "-f", "raw", "-F", "raw", "disk.raw", "expected.raw")
    }

    /// Starts `qed-img stream -p` on t.add-cow with its progress going into a pipe with room for
    /// 60 bytes: after the lines of 0 %, 25 % and 50 % (50 bytes) it blocks writing the line of 75 %,
    /// three of its four 1 MiB steps done. So the stream is held mid-way however fast the machine is.
    private func startHeldStream(_ box: Sandbox) throws -> (Process, NarrowPipe, Pipe) {
        let progress = try NarrowPipe(room: 60)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Sandbox.qedImg)
        process.arguments = ["stream", "-p", box.path("t.add-cow")]
        let err = Pipe()
        process.standardOutput = progress.writeHandle
        process.standardError = err
        try process.run()
        progress.closeWriteEnd()
        return (process, progress, err)
    }

    /// Set bits in the metadata file's bitmap (4 KiB header; 1024 clusters: 128 bytes).
    private func setBits(_ box: Sandbox) throws -> Int {
        try Files.read(box.path("t.add-cow"), at: 4096, count: 128).reduce(0) { $0 + $1.nonzeroBitCount }
    }

    /// Waits (bounded) until the stream has set some bits but not all, or has exited.
    private func waitUntilMidStream(_ box: Sandbox, _ process: Process) throws -> Int {
        let deadline = Date().addingTimeInterval(300)
        var bits = try setBits(box)
        while (bits <= 17 || bits >= 1024) && process.isRunning && Date() < deadline {
            usleep(2_000)
            bits = try setBits(box)
        }
        return bits
    }

    /// After an interrupted stream: the image is valid, reads the same disk as before, is not
    /// ALL_ALLOCATED; a second stream completes it.
    private func expectResumable(_ box: Sandbox, _ what: String) throws {
        #expect(try box.peek64("t.add-cow", at: 32) & 1 == 0, "\(what): not ALL_ALLOCATED yet")
        let check = try box.ours("check", "t.add-cow")
        #expect(check.status == 0, "\(what): \(check)")
        let compare = try box.ours("compare", "-F", "raw", "t.add-cow", "expected.raw")
        #expect(compare.status == 0, "\(what): the guest view is unchanged: \(compare)")
        let rerun = try box.ours("stream", "t.add-cow")
        #expect(rerun.status == 0, "\(what): \(rerun)")
        try box.mustQemu("compare", "-q", "-f", "raw", "-F", "raw", "disk.raw", "expected.raw")
        #expect(try box.peek64("t.add-cow", at: 32) & 1 == 1, "\(what): ALL_ALLOCATED after the rerun")
        #expect(try box.ours("info", "t.add-cow").lines.contains("    all-allocated: true"))
    }

    @Test func killedMidStreamThenRerunCompletes() throws {
        let box = try Sandbox()
        try makeImage(box)
        // 17 clusters are in the image file before streaming (the two guest writes).
        #expect(try setBits(box) == 17)
        let (process, progress, _) = try startHeldStream(box)
        let bits = try waitUntilMidStream(box, process)
        #expect(bits > 17 && bits < 1024, "the stream is held mid-way: \(bits) bits set")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        _ = progress.readChildOutput()
        #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL)
        // No bit was lost or invented by the kill: every bit seen is still set.
        #expect(try setBits(box) >= bits)
        try expectResumable(box, "after kill -9")
    }

    @Test func interruptedStreamStopsCleanlyThenRerunCompletes() throws {
        let box = try Sandbox()
        try makeImage(box)
        let (process, progress, err) = try startHeldStream(box)
        let bits = try waitUntilMidStream(box, process)
        #expect(bits > 17 && bits < 1024, "the stream is held mid-way: \(bits) bits set")
        kill(process.processIdentifier, SIGINT)
        let out = String(decoding: progress.readChildOutput(), as: UTF8.self)
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 130, "\(out) \(errText)")
        #expect(errText == "qed-img: interrupted; the images were flushed and closed\n")
        #expect(!out.contains("(100.00/100%)"), "\(out)")
        try expectResumable(box, "after SIGINT")
    }

    @Test func qedStreamCopiesTheBackingDataAndDropsTheBackingFile() throws {
        let box = try Sandbox()
        try box.mustQemu("create", "-q", "-f", "qed", "base.qed", "4M")
        try box.qemuIO("-c", "write -P 0x21 0 1M", "-c", "write -P 0x22 3M 4k", "base.qed")
        try box.mustQemu("create", "-q", "-f", "qed", "-b", "base.qed", "-F", "qed", "top.qed")
        try box.qemuIO("-c", "write -P 0x23 512k 4k", "top.qed")
        try box.mustQemu("convert", "-O", "raw", "top.qed", "expected.raw")
        let stream = try box.ours("stream", "top.qed")
        #expect(stream.status == 0, "\(stream)")
        let info = try box.qemu("info", "top.qed")
        #expect(info.status == 0 && !info.stdout.contains("backing file"), "\(info)")
        #expect(try box.qemuCheckStatus("top.qed") == 0)
        try FileManager.default.removeItem(atPath: box.path("base.qed"))
        try box.mustQemu("compare", "-F", "raw", "top.qed", "expected.raw")
    }

    @Test func rateLimitedStream() throws {
        let box = try Sandbox()
        try makeImage(box)
        let bad = try box.ours("stream", "-r", "0", "t.add-cow")
        #expect(bad.status == 1 && bad.stderr.contains("Invalid rate limit"), "\(bad)")
        // 4 MiB at 64 MiB/s: limited, not stopped.
        let limited = try box.ours("stream", "-r", "64M", "t.add-cow")
        #expect(limited.status == 0, "\(limited)")
        try box.mustQemu("compare", "-q", "-f", "raw", "-F", "raw", "disk.raw", "expected.raw")
        try box.mustQemu("create", "-q", "-f", "qed", "q.qed", "1M")
        let qed = try box.ours("stream", "-r", "1M", "q.qed")
        #expect(qed.status == 1 && qed.stderr.contains("add-cow images only"), "\(qed)")
    }

    @Test func rawImagesAreRefused() throws {
        let box = try Sandbox()
        try box.mustQemu("create", "-q", "-f", "raw", "plain.raw", "1M")
        let probed = try box.ours("stream", "plain.raw")
        #expect(probed.status == 1 && probed.stderr.contains("raw images have no backing file"), "\(probed)")
        let named = try box.ours("stream", "-f", "raw", "plain.raw")
        #expect(named.status == 1 && named.stderr.contains("raw images have no backing file"), "\(named)")
        // A format named with -f is the format opened: an add-cow file is not a QED image.
        try makeImage(box)
        let wrong = try box.ours("stream", "-f", "qed", "t.add-cow")
        #expect(wrong.status == 1 && wrong.stderr.contains("Image not in QED format"), "\(wrong)")
        #expect(try box.peek64("t.add-cow", at: 32) & 1 == 0, "not streamed")
    }
}
