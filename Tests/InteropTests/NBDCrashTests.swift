import Foundation
import QED
import TestSupport
import Testing

/// `kill -9` of qed-nbd in the middle of a multi-connection write load, again and again: the image never
/// shows corruption, the next read-write open repairs it, and every write covered by a completed FLUSH
/// (on any connection: the export is multi-conn) reads back.
@Suite struct NBDCrashTests {
    /// Writes stamped 4 KiB blocks (block number and a global generation, repeated) over several
    /// connections; each connection owns the blocks ≡ its index, so per-block order is well defined.
    /// Before each FLUSH it snapshots every completed write of every connection; when the FLUSH returns
    /// the snapshot is durable. After `kill_after` writes it SIGKILLs the server, and prints JSON.
    static let script = #"""
        import json, os, random, signal, struct, sys, threading
        import nbd

        sock, pid, nconn, seed, nblocks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        uri = "nbd+unix:///?socket=" + sock
        BS = 4096
        rng = random.Random(seed)
        kill_after = rng.randint(100, 1200)
        lock = threading.Lock()
        completed, durable = {}, {}
        state = {"gen": 0, "writes": 0, "flushes": 0, "killed": False, "early_errors": []}
        stop = threading.Event()

        def stamp(block, gen):
            return struct.pack("<QQ", block, gen) * (BS // 16)

        def worker(c):
            r = random.Random(seed * 1000 + c)
            try:
                h = nbd.NBD()
                h.connect_uri(uri)
                while not stop.is_set():
                    if r.random() < 0.05:
                        with lock:
                            snapshot = dict(completed)
                        h.flush()
                        with lock:
                            state["flushes"] += 1
                            for b, g in snapshot.items():
                                if durable.get(b, 0) < g:
                                    durable[b] = g
                        continue
                    block = r.randrange(c, nblocks, nconn)
                    with lock:
                        state["gen"] += 1
                        g = state["gen"]
                    h.pwrite(stamp(block, g), block * BS, flags=(nbd.CMD_FLAG_FUA if r.random() < 0.02 else 0))
                    with lock:
                        completed[block] = g
                        state["writes"] += 1
                        if state["writes"] == kill_after and not state["killed"]:
                            state["killed"] = True
                            os.kill(pid, signal.SIGKILL)
            except nbd.Error as e:
                with lock:
                    if not state["killed"]:
                        state["early_errors"].append(e.string)
            finally:
                stop.set()

        threads = [threading.Thread(target=worker, args=(c,)) for c in range(nconn)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({"durable": {str(k): v for k, v in durable.items()}, "killed": state["killed"],
                          "writes": state["writes"], "flushes": state["flushes"], "early_errors": state["early_errors"]}))
        """#

    @Test func killNineMidLoadNeverLosesFlushedWritesOrCorrupts() throws {
        let box = try NBDSandbox()
        let blocks = 4096  // 16 MiB of a 32 MiB image: plenty of allocating writes
        try box.makeQED("c.qed", size: "32M")
        let script = try box.write("crash.py", Self.script)
        var totalDurable = 0
        for cycle in 0..<20 {
            let server = try box.startServer(["-e", "0", "-t"], image: "c.qed", socket: "c\(cycle).sock")
            let outcome = try box.run(
                "/usr/bin/python3",
                [script, server.socket, "\(server.pid)", "4", "\(cycle + 1)", "\(blocks)"],
                timeout: 120)
            server.kill()  // reap (it was SIGKILLed by the client)
            guard outcome.status == 0,
                let result = try parseJSON(outcome.stdout) as? [String: Any],
                let durable = result["durable"] as? [String: Int]
            else {
                Issue.record("cycle \(cycle): client failed: \(outcome)\n\(server.log)")
                return
            }
            #expect(result["killed"] as? Bool == true, "cycle \(cycle): \(result)")
            #expect(
                (result["early_errors"] as? [String] ?? []).isEmpty,
                "cycle \(cycle): server failed before the kill: \(result) \(server.log)")

            // No corruption; leaks (status 3) are allowed after a crash.
            let check = try box.run("qemu-img", "check", box.path("c.qed"))
            #expect(check.status == 0 || check.status == 3, "cycle \(cycle): \(check)")
            #expect(!check.stdout.contains("ERROR"), "cycle \(cycle): \(check)")

            // The next read-write open repairs; closing it leaves the image clean. It takes no lock
            // bytes: the server is gone, and locks taken here could outlive the close in a child
            // another test is spawning (it holds a copy of this descriptor until it execs), long
            // enough for the next cycle's server to find the image locked.
            var unlocked = OpenOptions()
            unlocked.locking = false
            let image = try Image.open(path: box.path("c.qed"), options: unlocked)
            for (key, generation) in durable {
                guard let block = UInt64(key) else { continue }
                let bytes = try image.read(at: block * 4096, count: 4096)
                let head = bytes.withUnsafeBytes {
                    (
                        $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                        $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                    )
                }
                let consistent = (0..<256).allSatisfy { i in bytes[(i * 16)..<(i * 16 + 16)] == bytes[0..<16] }
                #expect(
                    head.0 == block && head.1 >= UInt64(generation) && consistent,
                    "cycle \(cycle): block \(block) flushed with generation \(generation) reads back \(head)")
            }
            try image.close()
            #expect(try nbdImageIsDirty(box.path("c.qed")) == false, "cycle \(cycle)")
            let after = try box.run("qemu-img", "check", box.path("c.qed"))
            #expect(after.status == 0 || after.status == 3, "cycle \(cycle) after repair: \(after)")
            totalDurable += durable.count
        }
        #expect(totalDurable > 100, "too few flushed writes were checked: \(totalDurable)")
    }
}
