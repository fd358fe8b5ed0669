import Foundation
import TestSupport
import Testing

/// convert, measure, commit, rebase, resize and dd: results agree with qemu-img's.
@Suite struct TransformTests {
    private func actualSize(_ box: Sandbox, _ image: String) throws -> Int {
        let json = try parseJSON(try box.qemu("info", "--output=json", image).stdout) as? [String: Any]
        return json?["actual-size"] as? Int ?? -1
    }

    @Test func convertRoundTripsAreIdenticalAndSparse() throws {
        let box = try Sandbox()
        try box.makeOverlayOnRaw()
        // raw -> qed -> raw, byte for byte.
        try box.mustQemu("convert", "-O", "raw", "ov.qed", "flat.raw")
        try box.mustOurs("convert", "-f", "raw", "-O", "qed", "flat.raw", "a.qed")
        try box.mustOurs("convert", "-O", "raw", "a.qed", "back.raw")
        #expect(try box.bytes("back.raw") == box.bytes("flat.raw"))
        #expect(try box.qemuIdentical("a.qed", "flat.raw"))
        #expect(try box.qemuCheckStatus("a.qed") == 0)
        // Sparse: only the clusters holding data are allocated, like qemu-img's own conversion.
        try box.mustQemu("convert", "-f", "raw", "-O", "qed", "flat.raw", "q.qed")
        #expect(try box.fileSize("a.qed") == box.fileSize("q.qed"))
        #expect(try actualSize(box, "a.qed") <= actualSize(box, "q.qed"))
        #expect(try actualSize(box, "back.raw") <= actualSize(box, "flat.raw") + 65536)
        #expect(try actualSize(box, "back.raw") < 1 << 20)
        // qed with a backing file -> flattened qed; a qemu-made image -> ours.
        try box.mustOurs("convert", "ov.qed", "flat.qed")
        #expect(try box.qemuIdentical("flat.qed", "ov.qed"))
        #expect(try box.qemuCheckStatus("flat.qed") == 0)
        let info = try parseJSON(try box.ours("info", "--output=json", "flat.qed").stdout) as? [String: Any]
        #expect(info?["backing-filename"] == nil && info?["virtual-size"] as? Int == 2 << 20)
        // -S 0 writes everything: every cluster allocated.
        try box.mustOurs("convert", "-S", "0", "ov.qed", "full.qed")
        #expect(try box.qemuIdentical("full.qed", "ov.qed"))
        #expect(try box.fileSize("full.qed") == UInt64(65536 * (1 + 4 + 4 + 32)))
    }

    @Test func convertWithBackingWritesOnlyDifferences() throws {
        let box = try Sandbox()
        try box.makeOverlayOnRaw()
        try box.mustOurs("convert", "-p", "-O", "qed", "-B", "base.raw", "-F", "raw", "ov.qed", "rebased.qed")
        #expect(try box.qemuIdentical("rebased.qed", "ov.qed"))
        #expect(try box.qemuCheckStatus("rebased.qed") == 0)
        let map = try parseJSON(try box.qemu("map", "--output=json", "rebased.qed").stdout) as? [[String: Any]] ?? []
        let own = map.filter { ($0["depth"] as? Int) == 0 && ($0["data"] as? Bool) == true }
        // The clusters at 64k, 128k and 1.5M differ from base.raw; 0..64k and the rest do not.
        #expect(own.map { $0["start"] as? Int ?? -1 } == [65536, 1572864], "\(map)")
        #expect(map.contains { ($0["start"] as? Int) == 0 && ($0["depth"] as? Int) == 1 })
    }

    @Test func convertConcatenatesParallelAndOutOfOrder() throws {
        let box = try Sandbox()
        try box.makeQEDChain()
        try box.mustOurs(
            "convert", "-m", "4", "-W", "-o", "cluster_size=4k,table_size=2", "top.qed", "b1.qed", "cat.qed")
        try box.mustQemu("convert", "-O", "raw", "top.qed", "b1.qed", "cat.raw")
        #expect(try box.qemuIdentical("cat.qed", "cat.raw"))
        #expect(try box.qemuCheckStatus("cat.qed") == 0)
        let info = try parseJSON(try box.ours("info", "--output=json", "cat.qed").stdout) as? [String: Any]
        #expect(info?["virtual-size"] as? Int == 3 << 20 && info?["cluster-size"] as? Int == 4096)
        // Writing into an existing image (-n).
        try box.mustOurs("create", "into.qed", "3M")
        try box.mustOurs("convert", "-n", "-m", "1", "cat.raw", "into.qed")
        #expect(try box.qemuIdentical("into.qed", "cat.raw"))
    }

    /// Writes `size` bytes of holes with `runs` (offset, length, byte; byte 0 writes real zeroes).
    private func makeRaw(_ box: Sandbox, _ name: String, size: UInt64, _ runs: [(UInt64, Int, UInt8)]) throws {
        _ = FileManager.default.createFile(atPath: box.path(name), contents: nil)
        let h = try FileHandle(forUpdating: URL(fileURLWithPath: box.path(name)))
        defer { try? h.close() }
        for (offset, length, byte) in runs {
            try h.seek(toOffset: offset)
            try h.write(
                contentsOf: Data((0..<length).map { byte == 0 ? 0 : byte &+ UInt8(truncatingIfNeeded: $0 / 512) }))
        }
        try h.truncate(atOffset: size)
    }

    /// Sources whose data convert maps (locked) and the same force-shared (-U: read, never mapped)
    /// give byte-identical outputs, with -S blocks that straddle holes, zero runs, source
    /// boundaries at odd offsets and backing-file data.
    @Test func convertMappedAndReadSourcesAgree() throws {
        let box = try Sandbox()
        // Sizes are sector multiples: qemu-img rounds raw sources up to 512 bytes, we do not.
        try makeRaw(
            box, "a.raw", size: 300 * 1024 + 1536,
            [
                (0, 8192, 0xa1), (8192, 12288, 0), (40 * 1024, 4096, 0xa2), (100 * 1024, 70000, 0xa3),
                (300 * 1024, 1000, 0xa4),
            ])
        try makeRaw(
            box, "b.raw", size: 200 * 1024 + 512,
            [(4096, 4096, 0xb1), (64 * 1024, 64 * 1024, 0), (150 * 1024, 50 * 1024 + 24, 0xb2)])
        try box.makeQEDChain()
        let sources = ["a.raw", "b.raw", "top.qed"]
        #expect(try box.qemu(["convert", "-O", "raw"] + sources + ["want.raw"]).status == 0)
        for sparse in ["512", "4k", "64k", "0"] {
            for format in ["qed", "raw"] {
                var base = ["convert", "-S", sparse, "-O", format, "-m", "3"]
                if format == "qed" { base += ["-o", "cluster_size=4k"] }
                let mapped = "m-\(sparse).\(format)", read = "r-\(sparse).\(format)"
                #expect(try box.ours(base + sources + [mapped]).status == 0)
                #expect(try box.ours(["convert", "-U"] + base.dropFirst() + sources + [read]).status == 0)
                #expect(try box.bytes(mapped) == box.bytes(read), "-S \(sparse) -O \(format)")
                #expect(try box.qemuIdentical(mapped, "want.raw"), "-S \(sparse) -O \(format)")
                if format == "qed" { #expect(try box.qemuCheckStatus(mapped) == 0, "-S \(sparse)") }
            }
        }
    }

    @Test func convertCacheModes() throws {
        let box = try Sandbox()
        try box.makeOverlayOnRaw()
        // -t unsafe is the default (never flushed); the others flush when done. Same content either way.
        for mode in ["unsafe", "writeback", "none", "writethrough", "directsync"] {
            try box.mustOurs("convert", "-t", mode, "ov.qed", "t-\(mode).qed")
            #expect(try box.qemuIdentical("t-\(mode).qed", "ov.qed"), "\(mode)")
            #expect(try box.qemuCheckStatus("t-\(mode).qed") == 0, "\(mode)")
        }
        let bad = try box.ours("convert", "-t", "bogus", "ov.qed", "bad.qed")
        #expect(bad.status == 1 && bad.stderr == "qed-img: Invalid cache option: bogus\n", "\(bad)")
    }

    @Test func measureEqualsTheConvertedFileSize() throws {
        let box = try Sandbox()
        try box.makeOverlayOnRaw()
        try box.makeQEDChain()
        for (source, options) in [
            ("ov.qed", "cluster_size=64k"), ("ov.qed", "cluster_size=4k,table_size=2"),
            ("top.qed", "table_size=8"), ("base.raw", "cluster_size=16k"),
        ] {
            let m = try box.ours("measure", "-O", "qed", "-o", options, "--output=json", source)
            #expect(m.status == 0, "\(m)")
            let json = try parseJSON(m.stdout) as? [String: Any]
            try box.mustOurs("convert", "-O", "qed", "-o", options, source, "m.qed")
            #expect(
                (json?["required"] as? NSNumber)?.uint64Value == (try box.fileSize("m.qed")), "\(source) \(options)")
            try box.mustOurs("convert", "-S", "0", "-O", "qed", "-o", options, source, "mfull.qed")
            #expect(
                (json?["fully-allocated"] as? NSNumber)?.uint64Value == (try box.fileSize("mfull.qed")),
                "\(source) \(options)")
        }
        #expect(
            m(try box.ours("measure", "-O", "qed", "--size", "1G")) == [
                "required size: 327680", "fully allocated size: 1074331648",
            ])
        for args in [
            ["measure", "-O", "raw", "ov.qed"], ["measure", "-O", "raw", "--size", "1G"],
            ["measure", "-O", "raw", "--output=json", "base.raw"],
        ] {
            try expectSameAsQemu(box, args)
        }
    }

    private func m(_ o: Outcome) -> [String] { o.lines.filter { !$0.isEmpty } }

    @Test func commitMatchesQemuForRawAndQEDBases() throws {
        let box = try Sandbox()
        for baseFormat in ["raw", "qed"] {
            for side in ["o", "q"] {
                try box.mustQemu("create", "-f", baseFormat, "\(side)base", "1M")
                try box.qemuIO("-f", baseFormat, "-c", "write -P 0xa1 0 512k", "\(side)base")
                try box.mustQemu("create", "-f", "qed", "-b", "\(side)base", "-F", baseFormat, "\(side)ov.qed")
                try box.qemuIO(
                    "-c", "write -P 0xcc 64k 64k", "-c", "write -z 256k 64k", "-c", "write -P 0xdd 900k 10k",
                    "\(side)ov.qed")
            }
            let ours = try box.ours("commit", "oov.qed")
            #expect(ours.status == 0 && ours.stdout == "Image committed.\n", "\(ours)")
            try box.mustQemu("commit", "qov.qed")
            #expect(try box.qemuIdentical("obase", "qbase"), "\(baseFormat)")
            #expect(try box.qemuIdentical("oov.qed", "qov.qed"))
            // Ours is emptied (qemu-img cannot empty a QED overlay): nothing left at depth 0.
            let map = try parseJSON(try box.qemu("map", "--output=json", "oov.qed").stdout) as? [[String: Any]] ?? []
            #expect(!map.contains { ($0["depth"] as? Int) == 0 && ($0["present"] as? Bool) == true }, "\(map)")
            #expect(try box.fileSize("oov.qed") == 327680)
            #expect(try box.qemuCheckStatus("oov.qed") == 0)
            if baseFormat == "qed" { #expect(try box.qemuCheckStatus("obase") == 0) }
        }
    }

    @Test func commitKeepsTheOverlayWithDropAndReachesDeeperBases() throws {
        let box = try Sandbox()
        try box.makeQEDChain()
        try box.copy("top.qed", "keep.qed")
        let before = try box.bytes("top.qed")
        try box.mustOurs("commit", "-d", "-p", "top.qed")
        #expect(try box.bytes("top.qed") == before)
        // -b: top's and mid's data go into b1.qed, which then shows what top showed.
        try box.mustOurs("convert", "-O", "raw", "top.qed", "want.raw")
        try box.mustOurs("commit", "-b", "b1.qed", "top.qed")
        #expect(try box.qemuIdentical("b1.qed", "want.raw"))
        #expect(try box.qemuCheckStatus("b1.qed") == 0)
        let err = try box.ours("commit", "b1.qed")
        #expect(err.status == 1 && err.stderr == "qed-img: Image does not have a backing file\n")
    }

    @Test func rebaseMatchesQemuSafeAndUnsafe() throws {
        let box = try Sandbox()
        for side in ["o", "q"] {
            try box.mustQemu("create", "-f", "raw", "\(side)1.raw", "1M")
            try box.qemuIO("-f", "raw", "-c", "write -P 0xa1 0 512k", "\(side)1.raw")
            try box.mustQemu("create", "-f", "qed", "\(side)2.qed", "768k")
            try box.qemuIO("-c", "write -P 0xb2 256k 256k", "\(side)2.qed")
            try box.mustQemu("create", "-f", "qed", "-b", "\(side)1.raw", "-F", "raw", "\(side).qed")
            try box.qemuIO("-c", "write -P 0xcc 64k 64k", "\(side).qed")
        }
        try box.mustOurs("rebase", "-p", "-b", "o2.qed", "-F", "qed", "o.qed")
        try box.mustQemu("rebase", "-b", "q2.qed", "-F", "qed", "q.qed")
        #expect(try box.qemuIdentical("o.qed", "q.qed"))
        #expect(try box.qemuIdentical("o.qed", "q1.raw") == false)
        #expect(try box.qemuCheckStatus("o.qed") == 0)
        let info = try parseJSON(try box.qemu("info", "--output=json", "o.qed").stdout) as? [String: Any]
        #expect(info?["backing-filename"] as? String == "o2.qed" && info?["backing-filename-format"] == nil)
        // Removing the backing file keeps the content too.
        try box.mustOurs("rebase", "-b", "", "o.qed")
        try box.mustQemu("rebase", "-b", "", "q.qed")
        #expect(try box.qemuIdentical("o.qed", "q.qed"))
        #expect(try box.qemu("info", "o.qed").stdout.contains("backing file") == false)
        // -u only renames: same header as qemu-img's.
        try box.mustOurs("rebase", "-u", "-b", "o1.raw", "-F", "raw", "o.qed")
        try box.mustQemu("rebase", "-u", "-b", "o1.raw", "-F", "raw", "q.qed")
        try expectSameAsQemu(box, ["info", "--output=json", "o.qed"], json: true)
        #expect(try Array(box.bytes("o.qed")[0..<64]) == Array(box.bytes("q.qed")[0..<64]))
        #expect(try Array(box.bytes("o.qed")[64..<70]) == Array("o1.raw".utf8))
    }

    @Test func resizeMatchesQemu() throws {
        let box = try Sandbox()
        try box.mustQemu("create", "-f", "qed", "o.qed", "1M")
        try box.copy("o.qed", "q.qed")
        for size in ["2M", "+1M", "+512"] {
            let ours = try box.ours("resize", "o.qed", size)
            let theirs = try box.qemu("resize", "q.qed", size)
            #expect(ours.stdout == "Image resized.\n" && theirs.stdout == ours.stdout && ours.status == 0)
            try expectSameAsQemu(box, ["info", "--output=json", "o.qed"], json: true)
            #expect(try box.qemu("info", "o.qed").lines[2] == box.qemu("info", "q.qed").lines[2])
        }
        #expect(try box.qemuCheckStatus("o.qed") == 0)
        let shrink = try box.ours("resize", "o.qed", "-1M")
        #expect(
            shrink.status == 1
                && shrink.stderr.hasPrefix("qed-img: o.qed: Use the --shrink option to perform a shrink operation.\n"))
        #expect(try box.qemu("resize", "q.qed", "-1M").status == 1)
        let forced = try box.ours("resize", "--shrink", "o.qed", "1M")
        #expect(forced.status == 1 && forced.stderr == "qed-img: o.qed: Shrinking images is currently not supported\n")
        #expect(try box.ours("resize", "o.qed", "100T").status == 1)
        #expect(try box.qemu("info", "o.qed").lines[2] == "virtual size: 3 MiB (3146240 bytes)")
        // raw grows and, with --shrink, shrinks.
        try box.mustOurs("create", "-f", "raw", "r.raw", "1M")
        try box.mustOurs("resize", "r.raw", "+1M")
        try box.mustOurs("resize", "--shrink", "r.raw", "512k")
        #expect(try box.fileSize("r.raw") == 524288)
    }

    @Test func ddMatchesQemu() throws {
        let box = try Sandbox()
        try box.makeOverlayOnRaw()
        for (name, operands) in [
            ("a", ["bs=64k", "count=4"]), ("b", ["bs=64k", "skip=1"]), ("c", ["bs=1M", "count=1", "skip=1"]),
            ("d", ["bs=3000", "count=5", "skip=2"]),
        ] {
            for fmt in ["raw", "qed"] {
                let ours = try box.ours(["dd", "-O", fmt, "if=ov.qed", "of=o\(name).\(fmt)"] + operands)
                let theirs = try box.qemu(["dd", "-O", fmt, "if=ov.qed", "of=q\(name).\(fmt)"] + operands)
                #expect(ours.status == 0 && theirs.status == 0 && ours.stdout == theirs.stdout, "\(ours) \(theirs)")
                #expect(try box.qemuIdentical("o\(name).\(fmt)", "q\(name).\(fmt)"), "\(name) \(fmt)")
                if fmt == "raw" { #expect(try box.bytes("o\(name).raw") == box.bytes("q\(name).raw")) }
            }
        }
        #expect(try box.fileSize("oc.raw") == 0)
    }
}
