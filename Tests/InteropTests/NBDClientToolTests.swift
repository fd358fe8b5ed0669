import Foundation
import QED
import TestSupport
import Testing

/// qed-nbd against libnbd's tools (nbdinfo, nbdcopy) and qemu-img over NBD.
@Suite struct NBDClientToolTests {
    /// base.raw (4 MiB: 0x11 in 0..256k) under ov.qed (8 MiB): data, zero clusters, backing-only ranges.
    private func makeOverlay(_ box: NBDSandbox) throws {
        try box.must("qemu-img", "create", "-q", "-f", "raw", box.path("base.raw"), "4M")
        try box.must(
            "qemu-io", "-f", "raw", "-c", "write -P 0x11 0 256k", "-c", "write -P 0x12 1M 64k",
            box.path("base.raw"))
        try box.must(
            "qemu-img", "create", "-q", "-f", "qed", "-b", box.path("base.raw"), "-F", "raw",
            box.path("ov.qed"), "8M")
        try box.must(
            "qemu-io", "-c", "write -P 0x33 64k 64k", "-c", "write -z 128k 128k",
            "-c", "write -P 0x44 6M 4k", "-c", "write -z 7M 512k", box.path("ov.qed"))
    }

    @Test func nbdinfoShowsSizeFlagsContextsAndDescription() throws {
        let box = try NBDSandbox()
        try box.makeQED("a.qed", size: "64M")
        let rw = try box.startServer(["-t"], image: "a.qed")
        let json = try parseJSON(try box.must("nbdinfo", "--json", rw.uri()).stdout) as? [String: Any]
        let export = (json?["exports"] as? [[String: Any]])?.first
        #expect(json?["structured"] as? Bool == true)
        #expect(export?["export-size"] as? Int == 64 << 20)
        for flag in ["can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_df"] {
            #expect(export?[flag] as? Bool == true, "\(flag) in \(String(describing: export))")
        }
        #expect(export?["can_multi_conn"] as? Bool == false)
        #expect(export?["is_read_only"] as? Bool == false)
        #expect(export?["contexts"] as? [String] == ["base:allocation"])
        #expect(rw.terminate() == 0, "\(rw.log)")

        let ro = try box.startServer(
            ["-r", "-e", "2", "-A", "-t", "-x", "disk0", "-D", "the test disk"],
            image: "a.qed", socket: "ro.sock")
        let roJSON =
            try parseJSON(try box.must("nbdinfo", "--json", ro.uri(export: "disk0")).stdout)
            as? [String: Any]
        let roExport = (roJSON?["exports"] as? [[String: Any]])?.first
        #expect(roExport?["is_read_only"] as? Bool == true)
        #expect(roExport?["can_multi_conn"] as? Bool == true)
        #expect(roExport?["can_trim"] as? Bool == false)
        #expect(roExport?["can_zero"] as? Bool == false)
        #expect(roExport?["can_flush"] as? Bool == true)
        #expect(roExport?["description"] as? String == "the test disk")
        #expect(Set(roExport?["contexts"] as? [String] ?? []) == ["base:allocation", "qemu:allocation-depth"])
        let list = try box.must("nbdinfo", "--list", ro.uri())
        #expect(list.stdout.contains("export=\"disk0\""), "\(list)")
        #expect(list.stdout.contains("description: the test disk"), "\(list)")
        // An unknown export name is refused, and the server keeps serving.
        #expect(try box.run("nbdinfo", "--size", ro.uri(export: "nope")).status != 0)
        #expect(try box.must("nbdinfo", "--size", ro.uri(export: "disk0")).stdout == "67108864\n")
        // qemu-nbd's own list mode sees the same export.
        let qemuList = try box.must("qemu-nbd", "-L", "-k", ro.socket)
        #expect(qemuList.stdout.contains("disk0") && qemuList.stdout.contains("the test disk"), "\(qemuList)")
        #expect(ro.terminate() == 0, "\(ro.log)")
    }

    @Test func blockStatusAgreesWithTheEngine() throws {
        let box = try NBDSandbox()
        try makeOverlay(box)
        let expected = try Self.engineRuns(box.path("ov.qed"))
        let server = try box.startServer(["-r", "-A", "-t"], image: "ov.qed")

        // base:allocation through nbdinfo --map.
        let map = try parseJSON(try box.must("nbdinfo", "--map", "--json", server.uri()).stdout) as? [[String: Any]]
        let got = (map ?? []).map {
            [$0["offset"] as? Int ?? -1, $0["length"] as? Int ?? -1, $0["type"] as? Int ?? -1]
        }
        #expect(got == expected.allocation, "nbdinfo --map: \(got) vs engine \(expected.allocation)")
        #expect(got.count >= 5, "the image should have several kinds of extents: \(got)")

        // qemu:allocation-depth.
        let depthMap =
            try parseJSON(
                try box.must("nbdinfo", "--map=qemu:allocation-depth", "--json", server.uri()).stdout)
            as? [[String: Any]]
        let depths = (depthMap ?? []).map {
            [$0["offset"] as? Int ?? -1, $0["length"] as? Int ?? -1, $0["type"] as? Int ?? -1]
        }
        #expect(depths == expected.depth, "allocation depth: \(depths) vs engine \(expected.depth)")
        #expect(depths.contains { $0[2] == 2 } && depths.contains { $0[2] == 1 }, "\(depths)")

        // qemu-img map over NBD (BLOCK_STATUS with REQ_ONE) says the same about data and zeroes.
        let qemuMap =
            try parseJSON(
                try box.must("qemu-img", "map", "-f", "raw", "--output=json", server.uri()).stdout) as? [[String: Any]]
        var qemuRuns: [[Int]] = []
        for entry in qemuMap ?? [] {
            let data = entry["data"] as? Bool ?? false, zero = entry["zero"] as? Bool ?? false
            let type = (data ? 0 : 1) | (zero ? 2 : 0)
            let start = entry["start"] as? Int ?? -1, length = entry["length"] as? Int ?? -1
            if let last = qemuRuns.last, last[2] == type, last[0] + last[1] == start {
                qemuRuns[qemuRuns.count - 1][1] += length
            } else {
                qemuRuns.append([start, length, type])
            }
        }
        #expect(qemuRuns == expected.allocation, "qemu-img map: \(qemuRuns) vs engine \(expected.allocation)")
        #expect(server.terminate() == 0, "\(server.log)")
    }

    /// The engine's extents of `path` (any format, probed) as merged `[offset, length, flags]` runs
    /// for both contexts.
    static func engineRuns(_ path: String) throws -> (allocation: [[Int]], depth: [[Int]]) {
        var options = OpenOptions(readOnly: true, forceShare: true)
        options.locking = false
        let image = try DiskOpener.open(path: path, format: nil, options: options)
        defer { try? image.close() }
        let extents = try image.extents(at: 0, length: image.virtualSize)
        func merge(_ value: (Extent) -> Int) -> [[Int]] {
            var runs: [[Int]] = []
            for extent in extents {
                let v = value(extent)
                if let last = runs.last, last[2] == v {
                    runs[runs.count - 1][1] += Int(extent.length)
                } else {
                    runs.append([Int(extent.offset), Int(extent.length), v])
                }
            }
            return runs
        }
        return (merge { ($0.data ? 0 : 1) | ($0.zero ? 2 : 0) }, merge { $0.present ? $0.depth + 1 : 0 })
    }

    @Test func nbdcopyAndQemuImgRoundTripsAreByteIdentical() throws {
        let box = try NBDSandbox()
        try makeOverlay(box)
        try box.must("qemu-img", "convert", "-O", "raw", box.path("ov.qed"), box.path("ref.raw"))

        // Image → file.
        let source = try box.startServer(["-r", "-e", "4", "-t"], image: "ov.qed")
        try box.must("nbdcopy", source.uri(), box.path("out.raw"))
        #expect(try box.bytes("out.raw") == box.bytes("ref.raw"))
        let compare = try box.run("qemu-img", "compare", "-f", "raw", "-F", "qed", source.uri(), box.path("ov.qed"))
        #expect(compare.status == 0 && compare.stdout.contains("Images are identical"), "\(compare)")
        #expect(source.terminate() == 0)

        // File → export, with several connections, then the image holds exactly the file.
        try box.makeQED("dest.qed", size: "8M")
        let dest = try box.startServer(["-e", "4", "-t"], image: "dest.qed", socket: "d.sock")
        try box.must("nbdcopy", "--flush", box.path("ref.raw"), dest.uri())
        #expect(dest.terminate() == 0, "\(dest.log)")
        #expect(try nbdImageIsDirty(box.path("dest.qed")) == false)
        #expect(try box.run("qemu-img", "check", box.path("dest.qed")).status == 0)
        let same = try box.run(
            "qemu-img", "compare", "-f", "raw", "-F", "qed", box.path("ref.raw"), box.path("dest.qed"))
        #expect(same.status == 0, "\(same)")

        // A raw export serves the file as is.
        let raw = try box.startServer(["-f", "raw", "-r", "-t"], image: "ref.raw", socket: "r.sock")
        try box.must("nbdcopy", raw.uri(), box.path("out2.raw"))
        #expect(try box.bytes("out2.raw") == box.bytes("ref.raw"))
        #expect(raw.terminate() == 0)
    }

    @Test func socketActivationTCPAndOneShotExit() throws {
        let box = try NBDSandbox()
        try makeOverlay(box)
        // nbdinfo / nbdcopy start the server themselves, passing a listening socket on fd 3.
        let size = try box.must("nbdinfo", "--size", "--", "[", NBDSandbox.qedNBD, "-r", box.path("ov.qed"), "]")
        #expect(size.stdout == "8388608\n", "\(size)")
        try box.must("nbdcopy", "--", "[", NBDSandbox.qedNBD, "-r", box.path("ov.qed"), "]", box.path("sa.raw"))
        try box.must("qemu-img", "convert", "-O", "raw", box.path("ov.qed"), box.path("ref.raw"))
        #expect(try box.bytes("sa.raw") == box.bytes("ref.raw"))

        // TCP on 127.0.0.1 with a free port; without -t the server leaves after its client.
        guard
            let (server, port) = try Self.startTCPServer(
                box, ["--pid-file", box.path("tcp.pid"), box.path("ov.qed")],
                pidFile: box.path("tcp.pid"))
        else { return }
        defer { server.kill() }
        let tcp = try box.must("nbdinfo", "--size", "nbd://127.0.0.1:\(port)/")
        #expect(tcp.stdout == "8388608\n", "\(tcp) \(server.log)")
        #expect(server.waitForExit(timeout: 30) == 0, "one-shot server did not exit: \(server.log)")
        #expect(!FileManager.default.fileExists(atPath: box.path("tcp.pid")), "pid file left behind")
    }

    @Test func commandLineErrorsAreReported() throws {
        let box = try NBDSandbox()
        try box.makeQED("a.qed", size: "1M")
        let missing = try box.run(NBDSandbox.qedNBD, ["-k", box.path("x.sock"), box.path("missing.qed")])
        #expect(missing.status == 1 && missing.stderr.contains("qed-nbd: "), "\(missing)")
        let tls = try box.run(NBDSandbox.qedNBD, ["--tls-psk", box.path("keys"), box.path("a.qed")])
        #expect(tls.status == 1 && tls.stderr.contains("qed-nbd: TLS: \(box.path("keys")): No such file"), "\(tls)")
        let detect = try box.run(NBDSandbox.qedNBD, ["--detect-zeroes=unmap", box.path("a.qed")])
        #expect(detect.status != 0 && detect.stderr.contains("--discard=unmap"), "\(detect)")
        // A mode or format no option knows is refused as a usage error naming the value and the option.
        for (option, value) in [
            ("--cache", "unsafe"), ("--discard", "trim"), ("--detect-zeroes", "yes"), ("-f", "vmdk"),
        ] {
            let refused = try box.run(NBDSandbox.qedNBD, [option, value, box.path("a.qed")])
            #expect(
                refused.status == 64 && refused.stderr.contains("'\(value)' is invalid for '\(option) "),
                "\(refused)")
        }
        let both = try box.run(NBDSandbox.qedNBD, ["-k", box.path("x.sock"), "-p", "1234", box.path("a.qed")])
        #expect(both.status != 0, "\(both)")
        // A second writer is refused by the image lock.
        let first = try box.startServer(["-t"], image: "a.qed")
        let second = try box.run(NBDSandbox.qedNBD, ["-k", box.path("y.sock"), box.path("a.qed")], timeout: 20)
        #expect(second.status == 1 && second.stderr.contains("lock"), "\(second)")
        #expect(first.terminate() == 0)
    }

    @Test func forkDetachesOnceListening() throws {
        let box = try NBDSandbox()
        try box.makeQED("a.qed", size: "2M")
        let pidFile = box.path("f.pid")
        let start = try box.run(
            NBDSandbox.qedNBD,
            [
                "--fork", "--pid-file", pidFile, "-k", box.path("f.sock"), "-t",
                box.path("a.qed"),
            ], timeout: 30)
        #expect(start.status == 0, "\(start)")
        let text = (try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? ""
        guard let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1,
            let daemon = ProcessWatch(pid: pid)
        else {
            Issue.record("no running daemon named by the pid file after --fork: \(start) \(text)")
            return
        }
        defer { daemon.signal(SIGKILL) }
        let size = try box.must("nbdinfo", "--size", "nbd+unix:///?socket=\(box.path("f.sock"))")
        #expect(size.stdout == "2097152\n")
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(), "daemon did not stop on SIGTERM")
        #expect(try nbdImageIsDirty(box.path("a.qed")) == false)
        // Errors before listening still reach the terminal, with status 1.
        let failed = try box.run(NBDSandbox.qedNBD, ["--fork", "-k", box.path("g.sock"), box.path("missing.qed")])
        #expect(failed.status == 1 && failed.stderr.contains("missing.qed"), "\(failed)")
    }

    /// Starts `qed-nbd -p PORT ARGS` on a port that was free a moment ago and waits until it listens
    /// (`pidFile` appears). Another process may take the port in between: then the server exits,
    /// saying it cannot listen, and another port is tried. Nil (an issue recorded) if it never starts.
    static func startTCPServer(
        _ box: NBDSandbox, _ arguments: [String], pidFile: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> (NBDServerProcess, Int)? {
        for _ in 0..<20 {
            let port = try freePort()
            let server = try NBDServerProcess(
                arguments: ["-p", "\(port)"] + arguments, socket: "",
                logPath: box.path("tcp-\(port).log"), directory: box.dir)
            let deadline = Date().addingTimeInterval(300)
            while !FileManager.default.fileExists(atPath: pidFile) && server.isRunning && Date() < deadline {
                usleep(5_000)
            }
            if FileManager.default.fileExists(atPath: pidFile) { return (server, port) }
            server.kill()
            guard server.log.contains("cannot listen") else {
                Issue.record("qed-nbd did not start on port \(port): \(server.log)", sourceLocation: sourceLocation)
                return nil
            }
        }
        Issue.record("qed-nbd found no free port in 20 tries", sourceLocation: sourceLocation)
        return nil
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw -> Int32 in
                guard Glibc.bind(fd, raw, length) == 0 else { return -1 }
                return getsockname(fd, raw, &length)
            }
        }
        guard bound == 0 else { throw NSError(domain: "freePort", code: Int(errno)) }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
