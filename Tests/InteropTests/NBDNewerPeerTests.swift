import Foundation
import TestSupport
import Testing

/// A libnbd client (python `nbd`, from the chroot) that runs a plan given as JSON and prints what it saw:
/// ops (`["write", offset, length, byte]`, `["zero", offset, length]`), block status queries
/// (`[offset, length]`, collected the way a client does: ask, take the prefix answered, ask again), and
/// probes (`[offset, length, [[run offset, run length, byte], ...]]`) that it reads and compares.
/// With compact headers a request cannot say 2³² bytes or more, so it splits zeroing and queries.
private let libnbdPlan = #"""
    import json, sys, nbd
    uri, request_extended, plan = sys.argv[1], sys.argv[2] == "1", json.loads(sys.argv[3])
    h = nbd.NBD()
    h.set_request_extended_headers(request_extended)
    h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    extended = h.get_extended_headers_negotiated()
    limit = 2**64 - 1 if extended else 2**32 - 1
    for op in plan["ops"]:
        if op[0] == "write":
            h.pwrite(bytes([op[3]]) * op[2], op[1])
        else:
            done = 0
            while done < op[2]:
                piece = min(op[2] - done, limit)
                h.zero(piece, op[1] + done)
                done += piece
    answers = []
    requests = 0
    for offset, length in plan["queries"]:
        got, done = [], 0
        while done < length and requests < 10000:
            seen = []
            def collect(meta, at, entries, err):
                seen.extend(entries)
            h.block_status_64(min(length - done, limit), offset + done, collect)
            requests += 1
            covered = 0
            for extent_length, flags in seen:
                extent_length = min(extent_length, length - done - covered)
                if extent_length <= 0:
                    break
                if got and got[-1][1] == flags:
                    got[-1][0] += extent_length
                else:
                    got.append([extent_length, flags])
                covered += extent_length
            if covered == 0:
                break
            done += covered
        answers.append(got)
    mismatches, first = 0, None
    for offset, length, runs in plan["probes"]:
        data = h.pread(length, offset)
        for run_offset, run_length, byte in runs:
            start = run_offset - offset
            chunk = data[start:start + run_length]
            if chunk != bytes([byte]) * run_length:
                mismatches += 1
                first = first or [run_offset, run_length, byte]
    print(json.dumps({"extended": extended, "structured": h.get_structured_replies_negotiated(),
                      "extents": answers, "requests": requests, "mismatches": mismatches, "first": first}))
    h.shutdown()
    """#

/// Interop with the clients newer than Debian 12's, which ask for extended headers: libnbd 1.22 (nbdinfo,
/// nbdcopy, python `nbd`) and QEMU 10 (qemu-img, qemu-io), from the Debian 13 chroot
/// (`scripts/debian13-peers`). Without it these tests fail and say how to get it. Every check compares
/// with a model of what was written, and asserts (from the server's `-v` log) which headers were used.
@Suite struct NBDNewerPeerTests {
    static let gib: UInt64 = 1 << 30
    static let four: UInt64 = 1 << 32

    /// The plan both header modes run: writes on both sides of 4 GiB, zeroing of 2³² − 1, 2³², 2³² + 1.
    /// With compact headers the client splits zeroing into requests of at most 2³² − 1 bytes, and the
    /// model applies the same pieces (QED allocates the partial clusters at the ends of each request).
    static func plan(extended: Bool) -> (ops: [[Any]], model: ClusterModel) {
        var model = ClusterModel()
        var ops: [[Any]] = []
        let writes: [(UInt64, UInt64, UInt8)] = [
            (four - 65536, 131072, 0xaa), (gib, 65536, 0x11), (2 * gib + 4096, 4096, 0x22),
            (6 * gib, 65536, 0x33), (9 * gib - 65536, 196608, 0x44), (12 * gib, 65536, 0x55),
        ]
        for (offset, length, byte) in writes {
            ops.append(["write", offset, length, Int(byte)])
            model.write(offset, length, byte: byte)
        }
        // Zeroing that starts and ends inside clusters nobody wrote, so which clusters are given back is
        // exact; the last one punches through the middle of the 0x44 data (its partial clusters stay).
        let zeroes: [(UInt64, UInt64)] = [(gib + 65536 + 1, four - 1), (6 * gib - 7, four), (9 * gib - 1, four + 1)]
        let limit = extended ? UInt64.max : UInt64(UInt32.max)
        for (offset, length) in zeroes {
            ops.append(["zero", offset, length])
            var done: UInt64 = 0
            while done < length {
                let piece = min(length - done, limit)
                model.zero(offset + done, piece)
                done += piece
            }
        }
        return (ops, model)
    }

    static func queries() -> [[UInt64]] {
        var queries: [[UInt64]] = [[0, 16 * gib]]
        for offset in [0, four - 1, four, 6 * gib - 7, 9 * gib - 65536] {
            for length in [four - 1, four, four + 1] { queries.append([offset, length]) }
        }
        return queries
    }

    static func probes(_ model: ClusterModel) -> [[Any]] {
        let ranges: [(UInt64, UInt64)] = [
            (four - 131072, 262144), (gib, 196608), (2 * gib, 16384), (6 * gib - 65536, 196608),
            (9 * gib - 131072, 393216), (12 * gib, 65536), (13 * gib + 12345, 4096),
        ]
        return ranges.map { offset, length in
            [offset, length, model.runs(at: offset, length: length).map { [$0.offset, $0.length, Int($0.byte)] }]
        }
    }

    enum Mode: String, CaseIterable, Sendable {
        /// The client asks and the server agrees.
        case extendedRequested
        /// The client does not ask (`set_request_extended_headers(False)`).
        case clientDoesNotAsk
        /// The client asks and the server refuses (`--no-extended-headers`).
        case serverRefuses
    }

    @Test(arguments: Mode.allCases)
    func libnbdWritesZeroesAndBlockStatusMatchTheModel(_ mode: Mode) throws {
        try NewerPeers.require()
        let box = try NBDSandbox()
        try box.makeQED("d.qed", size: "16G")
        let refuse = mode == .serverRefuses ? ["--no-extended-headers"] : []
        let server = try box.startServer(["-v", "-t", "--discard", "unmap"] + refuse, image: "d.qed")
        let (ops, model) = Self.plan(extended: mode == .extendedRequested)
        let queries = Self.queries()
        let planJSON = try JSONSerialization.data(withJSONObject: [
            "ops": ops, "queries": queries, "probes": Self.probes(model),
        ])
        let outcome = try box.newerPython(
            libnbdPlan,
            [server.uri(), mode == .clientDoesNotAsk ? "0" : "1", String(decoding: planJSON, as: UTF8.self)])
        try #require(outcome.status == 0, "python nbd: \(outcome)\n\(server.log.suffix(2000))")
        let result = try #require(try parseJSON(outcome.stdout) as? [String: Any])
        let extended = mode == .extendedRequested
        #expect(result["extended"] as? Bool == extended)
        #expect(result["structured"] as? Bool == true)
        #expect(
            extended ? server.negotiatedExtendedHeaders : server.negotiatedCompactHeaders, "\(server.log.suffix(1500))")
        #expect(result["mismatches"] as? Int == 0, "data differs from the model, first at \(result["first"] ?? "-")")

        let answers = try #require(result["extents"] as? [[[NSNumber]]])
        #expect(answers.count == queries.count)
        var mismatches = 0
        for (query, answer) in zip(queries, answers) {
            let got = answer.map { ($0[0].uint64Value, $0[1].uint64Value) }
            let expected = model.extents(at: query[0], length: query[1])
            if got.count != expected.count || !zip(got, expected).allSatisfy({ $0.0 == $1.length && $0.1 == $1.flags })
            {
                mismatches += 1
                Issue.record("block status \(query[1]) at \(query[0]): got \(got), model \(expected)")
            }
        }
        #expect(mismatches == 0, "\(mismatches) of \(queries.count) block status answers differ from the model")
        if extended {
            #expect(result["requests"] as? Int == queries.count, "one extended request per query, even for 16 GiB")
        }
        #expect(server.terminate() == 0)
        #expect(try QEMU.check(box.path("d.qed")).status == 0)
    }

    @Test func nbdinfoMapTakesOneRoundTripOverA64TiBSparseExport() throws {
        try NewerPeers.require()
        let box = try NBDSandbox()
        try box.makeQED("big.qed", size: "64T")
        let server = try box.startServer(["-v", "-r", "-t"], image: "big.qed")
        let info = try box.mustNewer("nbdinfo", [server.uri()])
        #expect(info.stdout.contains("using extended packets"), "\(info.stdout)")
        let before = server.blockStatusRequests
        let map = try box.mustNewer("nbdinfo", ["--map", server.uri()])
        let rows = map.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        #expect(rows.count == 1 && rows.first?.prefix(3) == ["0", "70368744177664", "3"], "\(map.stdout)")
        #expect(
            server.blockStatusRequests - before == 1,
            "BLOCK_STATUS requests for the map: \(server.blockStatusRequests - before)")
        #expect(server.negotiatedExtendedHeaders)
    }

    @Test func nbdcopyBothWaysIsByteIdentical() throws {
        try NewerPeers.require()
        let box = try NBDSandbox()
        // A raw source with data, a hole and a run of zeroes, not a multiple of the cluster size.
        var rng = SplitMix64(seed: 0x13e7)
        var source = [UInt8](repeating: 0, count: 24 << 20 + 4608)
        for index in 0..<(4 << 20) { source[index] = UInt8(truncatingIfNeeded: rng.next()) }
        for index in (16 << 20)..<(20 << 20) { source[index] = UInt8(truncatingIfNeeded: rng.next() | 1) }
        try Data(source).write(to: URL(fileURLWithPath: box.path("in.raw")))
        try box.makeQED("d.qed", size: "\(source.count)")
        let server = try box.startServer(["-v", "-t"], image: "d.qed")
        try box.mustNewer("nbdcopy", [box.path("in.raw"), server.uri()])
        try box.mustNewer("nbdcopy", [server.uri(), box.path("out.raw")])
        #expect(try box.bytes("out.raw") == source, "nbd → raw gives back what raw → nbd wrote")
        #expect(server.negotiatedExtendedHeaders && !server.negotiatedCompactHeaders)
        #expect(server.terminate() == 0)
        #expect(try nbdReadImage(box.path("d.qed"), at: 0, count: source.count) == source, "the image holds it")
        #expect(try QEMU.check(box.path("d.qed")).status == 0)
    }

    @Test func qemu10ToolsOverNBDMatchTheModel() throws {
        try NewerPeers.require()
        let box = try NBDSandbox()
        try box.makeQED("d.qed", size: "8G")
        let server = try box.startServer(["-v", "-t", "--discard", "unmap"], image: "d.qed")
        let uri = server.uri()
        var model = ClusterModel()
        try box.mustNewer(
            "qemu-io",
            [
                "-f", "raw", uri, "-c", "write -P 0x5a \(Self.four - 65536) 131072", "-c", "write -P 0x6b 1G 64k",
                "-c", "write -z -n \(Self.gib + 65536) \(Self.four)", "-c", "write -P 0x7c 7G 65536",
            ])
        model.write(Self.four - 65536, 131072, byte: 0x5a)
        model.write(Self.gib, 65536, byte: 0x6b)
        model.zero(Self.gib + 65536, Self.four)  // whole clusters: -n (FAST_ZERO) is allowed
        model.write(7 * Self.gib, 65536, byte: 0x7c)

        let info = try box.mustNewer("qemu-img", ["info", "--output=json", uri])
        let size = try #require(try parseJSON(info.stdout) as? [String: Any])["virtual-size"] as? NSNumber
        #expect(size?.uint64Value == 8 * Self.gib)

        let map = try box.mustNewer("qemu-img", ["map", "--output=json", "-f", "raw", uri])
        let entries = try #require(try parseJSON(map.stdout) as? [[String: Any]])
        var got: [(length: UInt64, flags: UInt64)] = []
        for entry in entries {
            let length = (entry["length"] as? NSNumber)?.uint64Value ?? 0
            let flags: UInt64 = (entry["data"] as? Bool == true) ? 0 : 3
            if let last = got.last, last.flags == flags {
                got[got.count - 1].length += length
            } else {
                got.append((length, flags))
            }
        }
        let expected = model.extents(at: 0, length: 8 * Self.gib)
        #expect(
            got.count == expected.count
                && zip(got, expected).allSatisfy { $0.length == $1.length && $0.flags == $1.flags },
            "qemu-img map \(got) vs model \(expected)")

        try box.mustNewer("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri, box.path("copy.raw")])
        let compare = try box.mustNewer("qemu-img", ["compare", "-f", "raw", "-F", "raw", box.path("copy.raw"), uri])
        #expect(compare.stdout.contains("Images are identical"), "\(compare.stdout)")
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: box.path("copy.raw")))
        defer { try? handle.close() }
        for run in model.runs(at: Self.four - 131072, length: 262144)
            + model.runs(at: 7 * Self.gib - 4096, length: 73728)
        {
            try handle.seek(toOffset: run.offset)
            let data = try handle.read(upToCount: Int(run.length)) ?? Data()
            #expect(data == Data(repeating: run.byte, count: Int(run.length)), "copy at \(run.offset)")
        }
        let read = try box.mustNewer(
            "qemu-io", ["-f", "raw", uri, "-c", "read -P 0x7c 7G 64k", "-c", "read -P 0 6G 64k"])
        #expect(!read.stdout.contains("Pattern verification failed"), "\(read.stdout)")
        #expect(server.negotiatedExtendedHeaders && !server.negotiatedCompactHeaders, "\(server.log.suffix(1500))")
        #expect(server.terminate() == 0)
        #expect(try QEMU.check(box.path("d.qed")).status == 0)
    }
}
