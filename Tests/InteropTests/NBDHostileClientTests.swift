import Foundation
import TestSupport
import Testing

/// Clients that connect and never negotiate, connect and drop at once, or send garbage, against the real
/// `qed-nbd`: none of them may lock out a client that negotiates, leak memory or descriptors, or wedge
/// the listener. The clients are Python with raw sockets and socket timeouts (``NBDRawClient``), so a
/// server that stops answering makes a script fail instead of hang.
@Suite struct NBDHostileClientTests {
    /// Idle connections (greeted, never negotiating), then a real client, then when the idle ones get EOF.
    static let idleScript = NBDRawClient.script(
        #"""
        path, idle, client_timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
        start = time.monotonic()
        idlers = []
        for _ in range(idle):
            s = connect(path, 60)
            greeting(s)   # accepted and greeted: it holds whatever an accepted connection holds
            idlers.append(s)
        result = {"closed_after": []}
        served(path, client_timeout)   # raises (and fails the script) if not served within the timeout
        result["served_after"] = time.monotonic() - start
        for s in idlers:
            wait_for_eof(s)
            result["closed_after"].append(time.monotonic() - start)
            s.close()
        print(json.dumps(result))
        """#)

    /// Runs the idle script against a fresh server; returns its result.
    func idleRun(_ box: NBDSandbox, serverArguments: [String], idle: Int) throws -> [String: Any]? {
        try box.makeQED("i.qed", size: "1M")
        let server = try box.startServer(serverArguments + ["-t"], image: "i.qed")
        // The client's own timeout is the figure the issue gives for "served", with margin for a busy machine.
        let outcome = try box.python(Self.idleScript, [server.socket, "\(idle)", "16"], timeout: 90)
        #expect(outcome.status == 0, "\(outcome)\n\(server.log)")
        #expect(server.isRunning)
        #expect(server.terminate() == 0, "\(server.log)")
        print("idle connections \(serverArguments): \(outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
        return try? parseJSON(outcome.stdout) as? [String: Any]
    }

    @Test func twoIdleConnectionsAtTheLimitDoNotLockOutAClient() throws {
        let box = try NBDSandbox()
        let result = try #require(try idleRun(box, serverArguments: ["-e", "2", "--handshake-limit", "2"], idle: 2))
        #expect(result["served_after"] as? Double != nil, "\(result)")
        // Closed by the server (EOF), and not before the limit: timers never fire early.
        let closed = result["closed_after"] as? [Double] ?? []
        #expect(closed.count == 2 && closed.allSatisfy { $0 >= 1.9 }, "\(result)")
    }

    @Test func theDefaultHandshakeLimitIsTenSeconds() throws {
        let box = try NBDSandbox()
        // -e 1: an idle connection does not take the one slot either.
        let result = try #require(try idleRun(box, serverArguments: ["-e", "1"], idle: 1))
        #expect(result["served_after"] as? Double != nil, "\(result)")
        let closed = result["closed_after"] as? [Double] ?? []
        #expect(closed.count == 1 && closed.allSatisfy { $0 >= 9.9 }, "\(result)")
    }

    /// 16 idle connections fill the places for connections still negotiating; the next client waits in
    /// the listen queue until the handshake limit frees one.
    static let capScript = NBDRawClient.script(
        #"""
        path = sys.argv[1]
        start = time.monotonic()
        idlers = [connect(path, 60) for _ in range(16)]
        for s in idlers:
            greeting(s)
        served(path, 60)
        print(json.dumps({"served_after": time.monotonic() - start}))
        for s in idlers:
            s.close()
        """#)

    @Test func connectionsStillNegotiatingAreCappedAndTheLimitFreesThem() throws {
        let box = try NBDSandbox()
        try box.makeQED("c.qed", size: "1M")
        let server = try box.startServer(["-e", "0", "-t", "--handshake-limit", "2"], image: "c.qed")
        let outcome = try box.python(Self.capScript, [server.socket], timeout: 90)
        #expect(outcome.status == 0, "\(outcome)\n\(server.log)")
        let result = try parseJSON(outcome.stdout) as? [String: Any]
        // Not served before the first idle connection was dropped, 2 s after it was accepted.
        #expect((result?["served_after"] as? Double ?? 0) >= 1.9, "\(outcome)")
        print("17th connection: \(outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
        #expect(server.terminate() == 0, "\(server.log)")
    }

    /// Connect and drop, in a bounded loop; a quarter send a few bytes first, half read the greeting.
    static let dropScript = NBDRawClient.script(
        #"""
        path, cycles = sys.argv[1], int(sys.argv[2])
        start = time.monotonic()
        for i in range(cycles):
            s = connect(path, 30)
            if i % 4 == 1:
                s.sendall(b"\x00\x00")
            if i % 2 == 0:
                greeting(s)
            s.close()
        loop = time.monotonic() - start
        print(json.dumps({"loop_seconds": loop, "served_in": served(path, 30)}))
        """#)

    @Test func tenThousandConnectAndDropCyclesLeaveNoTrace() throws {
        let box = try NBDSandbox()
        try box.makeQED("d.qed", size: "1M")
        let server = try box.startServer(["-e", "2", "-t"], image: "d.qed")
        let baseline = try Self.descriptorCount(server.pid)
        let outcome = try box.python(Self.dropScript, [server.socket, "10000"], timeout: 240)
        #expect(outcome.status == 0, "\(outcome)\n\(server.log)")
        #expect(server.isRunning)
        // Closes finish asynchronously: wait (bounded) for the count to come back.
        let deadline = Date().addingTimeInterval(30)
        var descriptors = try Self.descriptorCount(server.pid)
        while descriptors != baseline && Date() < deadline {
            usleep(20_000)
            descriptors = try Self.descriptorCount(server.pid)
        }
        #expect(descriptors == baseline, "descriptors \(descriptors), baseline \(baseline)")
        let rss = try Self.residentKiB(server.pid)
        #expect(rss < 64 << 10, "VmRSS \(rss) KiB")
        let figures = outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        print("connect-and-drop: \(figures), VmRSS \(rss) KiB, fds \(descriptors)/\(baseline)")
        #expect(server.terminate() == 0, "\(server.log)")
    }

    /// Churn at the `-e` limit: each round opens `limit` connections, a random mix of full sessions
    /// (GO, sometimes a READ) and raw ones that send garbage before reading the greeting, then closes them
    /// in random order. Afterwards a new client must be served.
    static let churnScript = NBDRawClient.script(
        #"""
        path, limit, rounds, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        rng = random.Random(seed)
        sessions = garbage = 0
        for r in range(rounds):
            socks = []
            for i in range(limit):
                s = connect(path, 20)
                socks.append(s)
                if rng.random() < 0.5:
                    garbage += 1
                    try:
                        s.sendall(rng.randbytes(rng.randint(1, 40)))
                    except (BrokenPipeError, ConnectionError):
                        pass   # the server may already have closed it
                else:
                    sessions += 1
                    go(s)   # a full session is never refused: an error or timeout here fails the test
                    if rng.random() < 0.5:
                        read(s, 7, rng.randrange(0, 1 << 20, 512), 512)
            rng.shuffle(socks)
            for s in socks:
                s.close()
        print(json.dumps({"rounds": rounds, "sessions": sessions, "garbage": garbage, "served_in": served(path, 5)}))
        """#)

    @Test func churnAtTheClientLimitNeverWedgesTheListener() throws {
        let box = try NBDSandbox()
        try box.makeQED("w.qed", size: "1M")
        let server = try box.startServer(["-e", "4", "-t"], image: "w.qed")
        let outcome = try box.python(Self.churnScript, [server.socket, "4", "1000", "20240607"], timeout: 240)
        #expect(outcome.status == 0, "\(outcome)\n\(server.log)")
        let result = try? parseJSON(outcome.stdout) as? [String: Any]
        #expect(result?["rounds"] as? Int == 1000, "\(outcome)")
        #expect(result?["served_in"] as? Double != nil, "\(outcome)")
        print("churn: \(outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
        #expect(server.terminate() == 0, "\(server.log)")
    }

    // MARK: - /proc

    static func descriptorCount(_ pid: Int32) throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
    }

    /// VmRSS in KiB.
    static func residentKiB(_ pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
        else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: "/proc/\(pid)/status"])
        }
        return kib
    }
}
