import Foundation
import TestSupport
import Testing

/// libnbd 1.22's nbdfuse and fio 3.39's nbd engine (both from the Debian 13 chroot, both asking for extended
/// headers) against qed-nbd. Without the chroot, or without FUSE for the nbdfuse test, they fail and say
/// what is missing. Which headers a connection used is read from the server's `-v` log.
@Suite struct NBDNewerClientToolTests {
    /// 16 MiB export, 64 KiB clusters: the writes below cover partial, whole and multi-cluster spans.
    static let size = 16 << 20

    @Test func nbdfuseReadsAndWritesThroughTheFUSEFileWithExtendedHeaders() throws {
        try NewerPeers.require(tools: ["nbdfuse"])
        try NewerPeers.requireFUSE()
        let box = try NBDSandbox()
        try box.makeQED("d.qed", size: "\(Self.size)")
        let server = try box.startServer(["-v", "-t"], image: "d.qed")
        let mount = try NBDFuseMount(box: box, uri: server.uri())
        defer { mount.unmount() }
        let file = try #require(
            try mount.waitForFile(size: Self.size), "nbdfuse did not mount: \(mount.log)\n\(server.log.suffix(1500))")

        // The model: what the export must hold. Writes of every shape, some overlapping earlier ones.
        var model = [UInt8](repeating: 0, count: Self.size)
        var rng = SplitMix64(seed: 0xf05e)
        let writes: [(offset: Int, length: Int)] = [
            (0, 4096), (65536 - 100, 300), (1 << 20, 1 << 20), (3 << 20 + 12345, 200_000), (8 << 20, 65536),
            (8 << 20 + 32768, 65536), (Self.size - 7000, 7000), (5 << 20 + 1, 1), (2 << 20, 3 << 20),
        ]
        let handle = try #require(FileHandle(forUpdatingAtPath: file), "cannot open \(file)")
        defer { try? handle.close() }
        for (offset, length) in writes {
            var data = [UInt8](repeating: 0, count: length)
            for index in data.indices { data[index] = UInt8(truncatingIfNeeded: rng.next()) }
            try handle.seek(toOffset: UInt64(offset))
            try handle.write(contentsOf: data)
            model.replaceSubrange(offset..<offset + length, with: data)
        }
        try handle.synchronize()

        // Read back through FUSE: some spans, then the whole file.
        for (offset, length) in [(65536 - 4096, 8192), (3 << 20, 1 << 20), (Self.size - 65536, 65536)] {
            try handle.seek(toOffset: UInt64(offset))
            let got = try handle.read(upToCount: length) ?? Data()
            #expect([UInt8](got) == Array(model[offset..<offset + length]), "FUSE read of \(length) at \(offset)")
        }
        try handle.seek(toOffset: 0)
        let whole = try handle.readToEnd() ?? Data()
        #expect(whole.count == Self.size && [UInt8](whole) == model, "the whole FUSE file equals the model")
        try handle.close()

        #expect(mount.unmount(), "nbdfuse did not exit after the unmount: \(mount.log)")
        #expect(server.negotiatedExtendedHeaders && !server.negotiatedCompactHeaders, "\(server.log.suffix(1500))")
        #expect(server.terminate() == 0)
        #expect(try nbdReadImage(box.path("d.qed"), at: 0, count: Self.size) == model, "the image holds the model")
        #expect(try QEMU.check(box.path("d.qed")).status == 0)
    }

    /// fio 3.39 writes with crc32c verify headers (4 KiB random and 1 MiB sequential jobs), verifies as it
    /// goes, then verifies again after the server restarted (`--verify_only`, the same random sequence).
    @Test func fioNBDEngineVerifiesWithExtendedHeaders() throws {
        try NewerPeers.require(tools: ["fio"])
        let box = try NBDSandbox()
        try box.makeQED("d.qed", size: "256M")
        let jobs = [
            "--name=rand", "--rw=randwrite", "--bs=4k", "--offset=0", "--size=32m", "--iodepth=16",
            "--name=seq", "--rw=write", "--bs=1m", "--offset=64m", "--size=64m", "--iodepth=4",
        ]
        func fio(_ uri: String, _ extra: [String]) throws -> ChildOutcome {
            try box.run(
                NewerPeers.tool("fio"),
                ["--ioengine=nbd", "--uri=\(uri)", "--verify=crc32c", "--verify_fatal=1", "--output-format=json"]
                    + extra + jobs, timeout: 600)
        }
        /// Both jobs ran without error and read back what they check (fio counts the writes of a
        /// `--verify_only` run as done, so only the reads tell the passes apart).
        func check(_ outcome: ChildOutcome) throws {
            try #require(outcome.status == 0, "fio: \(outcome)")
            let json = try #require(outcome.stdout.firstIndex(of: "{").map { String(outcome.stdout[$0...]) })
            let result = try #require(try parseJSON(json) as? [String: Any], "fio output: \(outcome)")
            let jobs = try #require(result["jobs"] as? [[String: Any]])
            #expect(jobs.count == 2)
            for job in jobs {
                #expect((job["error"] as? NSNumber)?.intValue == 0, "fio job \(job["jobname"] ?? "?") failed")
                let read = (job["read"] as? [String: Any])?["io_bytes"] as? NSNumber
                #expect((read?.int64Value ?? 0) >= 32 << 20, "the verify pass read back every block")
            }
        }

        // The verification can fail: on an empty image the same verify-only pass reports bad headers.
        try box.makeQED("empty.qed", size: "256M")
        let empty = try box.startServer(["-t"], image: "empty.qed", socket: "e.sock")
        let control = try fio(empty.uri(), ["--verify_only=1"])
        #expect(
            control.status != 0 && (control.stdout + control.stderr).contains("bad magic"),
            "fio verified an empty image: \(control)")
        #expect(empty.terminate() == 0)

        let server = try box.startServer(["-v", "-t"], image: "d.qed")
        try check(try fio(server.uri(), ["--do_verify=1"]))
        #expect(server.negotiatedExtendedHeaders && !server.negotiatedCompactHeaders, "\(server.log.suffix(1500))")
        #expect(server.terminate() == 0)
        #expect(try QEMU.check(box.path("d.qed")).status == 0)

        // What fio wrote is in the image: the same client verifies it through a new server; refused
        // extended headers, the same build falls back to compact ones (the log tells them apart).
        let again = try box.startServer(["-v", "-t", "--no-extended-headers"], image: "d.qed", socket: "t.sock")
        try check(try fio(again.uri(), ["--verify_only=1"]))
        #expect(again.negotiatedCompactHeaders && !again.negotiatedExtendedHeaders, "\(again.log.suffix(1500))")
        #expect(again.terminate() == 0)
    }
}

/// An `nbdfuse MOUNTPOINT URI` from the chroot, mounting the export as the file `MOUNTPOINT/nbd`.
///
/// nbdfuse mounts inside the chroot: where the host's /tmp is bind-mounted into it without mount
/// propagation (this project's machines), the mount shows on the host under the chroot's root
/// (`ROOT/tmp/…`), elsewhere also at the sandbox path itself. Both are looked for in /proc/mounts.
final class NBDFuseMount: @unchecked Sendable {
    // @unchecked: driven by the owning test only; `unmounted` is touched by that thread alone.
    private let process: Process
    private let mountpoint: String
    private let logPath: String
    private var unmounted = false

    init(box: NBDSandbox, uri: String) throws {
        mountpoint = box.path("mnt")
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        logPath = box.path("nbdfuse.log")
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process = Process()
        process.executableURL = URL(fileURLWithPath: NewerPeers.tool("nbdfuse"))
        process.arguments = [mountpoint, uri]
        process.currentDirectoryURL = URL(fileURLWithPath: box.dir)
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try? log.close()
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The host path where the FUSE mount shows, once /proc/mounts lists it.
    private var mountedAt: String? {
        guard let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return nil }
        let candidates = [NewerPeers.root + mountpoint, mountpoint]
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 2, fields[2].hasPrefix("fuse") else { continue }
            if let hit = candidates.first(where: { $0 == fields[1] }) { return hit }
        }
        return nil
    }

    /// Waits until the export is mounted and its file has `size` bytes; the file's host path, or nil if
    /// nbdfuse exited first (or had not mounted after 120 s, a bound for a hung process).
    func waitForFile(size: Int) throws -> String? {
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            if let at = mountedAt {
                let file = at + "/nbd"
                let attributes = try? FileManager.default.attributesOfItem(atPath: file)
                if (attributes?[.size] as? NSNumber)?.intValue == size { return file }
            }
            guard process.isRunning else { return nil }
            usleep(10_000)
        }
        return nil
    }

    /// Unmounts (fusermount3 -u, as the FUSE docs say) and waits for nbdfuse to exit; true when it did.
    /// Called again (the test's `defer`) it only makes sure nothing is left: a lazy unmount and SIGKILL.
    @discardableResult
    func unmount() -> Bool {
        if unmounted {
            if let at = mountedAt { _ = try? ChildProcess.run("/bin/umount", ["-l", at], in: "/", timeout: 60) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            return !process.isRunning
        }
        unmounted = true
        if let at = mountedAt {
            _ = try? ChildProcess.run(ChildProcess.systemTool("fusermount3"), ["-u", at], in: "/", timeout: 60)
        }
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return !process.isRunning
    }
}
