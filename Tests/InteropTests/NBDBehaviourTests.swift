import Foundation
import QED
import TestSupport
import Testing

/// Server behaviours a client can observe: sparse structured reads, the client limit, graceful shutdown
/// under load, and the write policies (--detect-zeroes, --cache).
@Suite struct NBDBehaviourTests {
    static let script = #"""
        import sys, threading, time
        import nbd

        sock = sys.argv[1]
        uri = "nbd+unix:///?socket=" + sock

        def report(name, ok, why=""):
            print(("ok " if ok else "FAIL ") + name + ("" if ok else ": " + why), flush=True)

        h = nbd.NBD()
        h.connect_uri(uri)
        # Layout made by the test: 0x61 in [0, 64k), nothing in [64k, 1M), 0x62 in [1M, 1M+64k).
        chunks = []
        def chunk(subbuf, offset, status, error):
            chunks.append((offset, len(subbuf), status, bytes(subbuf) == b"\0" * len(subbuf)))
            return 0
        buf = h.pread_structured((1 << 20) + 65536, 0, chunk)
        holes = [c for c in chunks if c[2] == nbd.READ_HOLE]
        covered = sorted((c[0], c[1]) for c in chunks)
        contiguous = all(a[0] + a[1] == b[0] for a, b in zip(covered, covered[1:])) and covered[0][0] == 0
        report("sparse read has hole chunks", len(holes) >= 1 and sum(c[1] for c in holes) >= 900000, str(chunks))
        report("chunks cover the read", contiguous and sum(c[1] for c in covered) == (1 << 20) + 65536, str(covered))
        report("sparse read content", buf[:65536] == b"\x61" * 65536 and buf[65536:1 << 20] == b"\0" * (1048576 - 65536)
               and buf[1 << 20:] == b"\x62" * 65536)
        chunks.clear()
        h.pread_structured((1 << 20) + 65536, 0, chunk, flags=nbd.CMD_FLAG_DF)
        report("DF read is one data chunk", len(chunks) == 1 and chunks[0][2] == nbd.READ_DATA, str(chunks))

        # The client limit (-e 1): a second client waits until the first leaves.
        second = {}
        def connect_second():
            g = nbd.NBD()
            g.connect_uri(uri)
            second["at"] = time.monotonic()
            second["size"] = g.get_size()
            g.shutdown()
        t = threading.Thread(target=connect_second)
        t.start()
        time.sleep(0.7)  # a chance for a wrong server to serve the second client early; not needed to pass
        waiting = "at" not in second
        left = time.monotonic()
        h.shutdown()
        t.join()  # bounded by the test's timeout on this script
        report("second client waits for the first", waiting and second.get("at", 0) >= left, str(second))
        report("second client served", second.get("size") == 4 << 20, str(second))
        """#

    @Test func sparseReadsDFAndTheClientLimit() throws {
        let box = try NBDSandbox()
        try box.makeQED("s.qed", size: "4M")
        try box.must("qemu-io", "-c", "write -P 0x61 0 64k", "-c", "write -P 0x62 1M 64k", box.path("s.qed"))
        let server = try box.startServer(["-t"], image: "s.qed")
        let outcome = try box.python(Self.script, [server.socket])
        let lines = outcome.stdout.split(separator: "\n").map(String.init)
        #expect(outcome.status == 0 && lines.count == 6, "\(outcome)")
        #expect(lines.allSatisfy { $0.hasPrefix("ok ") }, "\(outcome)")
        #expect(server.terminate() == 0, "\(server.log)")
    }

    /// Writes over several connections until the server goes away, recording every acknowledged write.
    static let loadScript = #"""
        import json, struct, sys, threading
        import nbd
        uri = "nbd+unix:///?socket=" + sys.argv[1]
        started = threading.Barrier(5)
        acked, errors, lock = {}, [], threading.Lock()
        loaded = threading.Event()
        def worker(c):
            h = nbd.NBD()
            h.connect_uri(uri)
            started.wait()
            n = 0
            try:
                while True:
                    block = c + 4 * (n % 512)
                    h.pwrite(struct.pack("<QQ", block, n) * 256, block * 4096)
                    with lock:
                        acked[block] = n
                        if len(acked) >= 400 and not loaded.is_set():
                            loaded.set()
                            print("loaded", flush=True)
                    n += 1
            except nbd.Error as e:
                with lock:
                    errors.append(e.errnum)
        ts = [threading.Thread(target=worker, args=(c,)) for c in range(4)]
        for t in ts: t.start()
        started.wait()
        print("started", flush=True)
        for t in ts: t.join()
        print(json.dumps({"acked": {str(k): v for k, v in acked.items()}, "errors": errors}))
        """#

    @Test func sigtermUnderLoadFinishesFlushesAndClosesCleanly() throws {
        let box = try NBDSandbox()
        try box.makeQED("l.qed", size: "16M")
        let server = try box.startServer(["-e", "0", "-t"], image: "l.qed")
        let script = try box.write("load.py", Self.loadScript)
        let output = box.path("load.out")
        let handle = try SpawnedProcess.outputFile(output)
        let client = try SpawnedProcess("/usr/bin/python3", [script, server.socket], stdout: handle, stderr: handle)
        close(handle)
        defer { if client.isRunning { client.killAndReap() } }
        // Ask the server to stop once the load has written 400 distinct blocks (the client says so; a
        // fixed pause would let a slow machine get too little done), or once the client has died.
        let deadline = Date().addingTimeInterval(300)
        while client.isRunning && Date() < deadline,
            !((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").contains("loaded")
        {
            usleep(10_000)
        }
        let status = server.terminate(timeout: 120)
        if status == nil { server.kill() }  // else the client would write forever
        client.wait()
        #expect(status == 0, "\(server.log)")
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").last,
            let result = try parseJSON(String(line)) as? [String: Any],
            let acked = result["acked"] as? [String: Int]
        else {
            Issue.record("client output: \(text)")
            return
        }
        #expect(acked.count >= 400, "too little load: \(acked.count) blocks")
        // Connections were closed (or got ESHUTDOWN), not answered with I/O errors.
        #expect((result["errors"] as? [Int] ?? []).allSatisfy { $0 != 5 }, "\(result["errors"] ?? "")")
        // Closed cleanly: not dirty, consistent, and every acknowledged write is there.
        #expect(try nbdImageIsDirty(box.path("l.qed")) == false)
        #expect(try box.run("qemu-img", "check", box.path("l.qed")).status == 0)
        let image = try DiskOpener.open(path: box.path("l.qed"), format: .qed, options: OpenOptions(readOnly: true))
        defer { try? image.close() }
        for (key, generation) in acked {
            guard let block = UInt64(key) else { continue }
            let bytes = try image.readBytes(at: block * 4096, count: 16)
            let head = bytes.withUnsafeBytes {
                (
                    $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                    $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                )
            }
            #expect(head.0 == block && head.1 >= UInt64(generation), "block \(block): \(head) < \(generation)")
        }
    }

    @Test func detectZeroesUnmapAndWritethrough() throws {
        let box = try NBDSandbox()
        try box.makeQED("z.qed", size: "4M")
        try box.must("qemu-io", "-c", "write -P 0x55 0 1M", box.path("z.qed"))
        let server = try box.startServer(
            ["--detect-zeroes=unmap", "--discard=unmap", "--cache=writethrough", "-t"],
            image: "z.qed")
        // All-zero payloads become zeroing instead of data writes.
        try box.must(
            "qemu-io", "-f", "raw", "-c", "write -P 0 0 256k", "-c", "write -P 0 2M 256k",
            "-c", "write -P 0x66 3M 64k", server.uri())
        #expect(server.terminate() == 0)
        let map =
            try parseJSON(try box.must("qemu-img", "map", "--output=json", box.path("z.qed")).stdout)
            as? [[String: Any]] ?? []
        func entry(at offset: Int) -> [String: Any]? {
            map.first {
                ($0["start"] as? Int ?? -1) <= offset
                    && offset < ($0["start"] as? Int ?? 0) + ($0["length"] as? Int ?? 0)
            }
        }
        // Zero payloads on unallocated clusters became zero clusters, not data.
        #expect(
            entry(at: 2 << 20)?["data"] as? Bool == false && entry(at: 2 << 20)?["zero"] as? Bool == true,
            "\(map)")
        #expect(entry(at: 2 << 20)?["present"] as? Bool == true, "\(map)")
        #expect(entry(at: 3 << 20)?["data"] as? Bool == true, "\(map)")
        #expect(try nbdReadImage(box.path("z.qed"), at: 0, count: 8) == [UInt8](repeating: 0, count: 8))
        #expect(try nbdReadImage(box.path("z.qed"), at: 256 << 10, count: 4) == [0x55, 0x55, 0x55, 0x55])
        #expect(try box.run("qemu-img", "check", box.path("z.qed")).status == 0)
    }
}
