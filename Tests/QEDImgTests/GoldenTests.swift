import Foundation
import TestSupport
import Testing

/// qed-img's info, check, map and compare against qemu-img 7.2 on the same images.
@Suite struct GoldenTests {
    @Test func infoMatchesQemuForQemuAndOurImages() throws {
        let box = try Sandbox()
        try box.makeOverlayOnRaw()
        try box.makeQEDChain()
        try box.mustQemu("create", "-f", "qed", "-o", "cluster_size=4096,table_size=2", "small.qed", "1000")
        try FileManager.default.createDirectory(atPath: box.path("sub"), withIntermediateDirectories: true)
        try box.mustOurs("create", "-b", "../base.raw", "-F", "raw", "sub/rel.qed", "3M")
        try box.mustOurs("create", "-u", "-b", "missing.raw", "-F", "raw", "dangling.qed", "1M")
        for image in ["ov.qed", "base.raw", "top.qed", "mid.qed", "small.qed", "sub/rel.qed", "dangling.qed"] {
            try expectSameAsQemu(box, ["info", image])
            try expectSameAsQemu(box, ["info", "--output=json", image], json: true)
        }
        for image in ["ov.qed", "top.qed", "sub/rel.qed"] {
            try expectSameAsQemu(box, ["info", "--backing-chain", image])
            try expectSameAsQemu(box, ["info", "--backing-chain", "--output=json", image], json: true)
        }
        // The relative backing file shows its actual path, as qemu-img does.
        let rel = try box.ours("info", "sub/rel.qed")
        #expect(rel.stdout.contains("backing file: ../base.raw (actual path: sub/../base.raw)"))
        // A missing backing file only matters for --backing-chain.
        #expect(try box.ours("info", "--backing-chain", "dangling.qed").status == 1)
        #expect(try box.qemu("info", "--backing-chain", "dangling.qed").status == 1)
    }

    @Test func infoReportsTheDirtyBitAsStored() throws {
        let box = try Sandbox()
        try box.mustOurs("create", "d.qed", "1M")
        // NEED_CHECK set on disk (a crashed writer): we say so; qemu-img 7.2 clears it in memory first.
        try box.poke64("d.qed", at: 16, 0x02)
        let human = try box.ours("info", "d.qed")
        #expect(human.lines.contains("cleanly shut down: no"))
        let json = try parseJSON(try box.ours("info", "--output=json", "d.qed").stdout) as? [String: Any]
        #expect(json?["dirty-flag"] as? Bool == true)
        let theirs = try parseJSON(try box.qemu("info", "--output=json", "d.qed").stdout) as? [String: Any]
        #expect(theirs?["dirty-flag"] as? Bool == false)
    }

    /// Images with leaks and corruptions, made by patching tables.
    private func makeDamaged(_ box: Sandbox) throws {
        try box.mustQemu("create", "-f", "qed", "d.qed", "1M")
        try box.qemuIO("-c", "write -P 0xab 0 64k", "d.qed")
        // L1 at 64k; its first entry points at the L2 table; entry 0 of L2 at the data cluster.
        let l2 = try box.peek64("d.qed", at: 65536)
        let data = try box.peek64("d.qed", at: Int(l2))
        #expect(l2 == 0x60000 && data == 0x50000)
        try box.copy("d.qed", "leak.qed")
        try Files.truncate(box.path("leak.qed"), try box.fileSize("d.qed") + 131072)
        try box.copy("d.qed", "corrupt.qed")
        try box.poke64("corrupt.qed", at: l2 + 8, 0x200000)  // past the end of the file
        try box.poke64("corrupt.qed", at: l2 + 16, data)  // a second reference to the data cluster
    }

    @Test func checkMatchesQemuOnCleanLeakingAndCorruptImages() throws {
        let box = try Sandbox()
        try makeDamaged(box)
        try box.makeOverlayOnRaw()
        for image in ["d.qed", "leak.qed", "corrupt.qed", "ov.qed"] {
            try expectSameAsQemu(box, ["check", image], comment: image)
            try expectSameAsQemu(box, ["check", "--output=json", image], json: true, comment: image)
        }
        #expect(try box.ours("check", "leak.qed").status == 3)
        #expect(try box.ours("check", "corrupt.qed").status == 2)
        #expect(try box.ours("check", "d.qed").stdout.contains("No errors were found on the image."))
        // raw has no check: qemu-img's message and status 63.
        let raw = try box.ours("check", "base.raw")
        #expect(raw.status == 63 && raw.stderr.contains("This image format does not support checks"))
        #expect(try box.qemu("check", "base.raw").status == 63)
    }

    @Test func checkRepairMatchesQemuOnCorruptions() throws {
        let box = try Sandbox()
        try makeDamaged(box)
        for mode in ["leaks", "all"] {
            for output in ["human", "json"] {
                try box.copy("corrupt.qed", "o.qed")
                try box.copy("corrupt.qed", "q.qed")
                let ours = try box.ours("check", "-r", mode, "--output=\(output)", "o.qed")
                let theirs = try box.qemu("check", "-r", mode, "--output=\(output)", "q.qed")
                #expect(ours.status == 2 && theirs.status == 2, "\(ours) \(theirs)")
                #expect(ours.stdout.replacingOccurrences(of: "o.qed", with: "q.qed") == theirs.stdout)
                if output == "human" {
                    #expect(
                        ours.stdout.hasPrefix(
                            "The following inconsistencies were found and repaired:\n\n    0 leaked clusters\n    1 corruptions\n\nDouble checking the fixed image now...\n"
                        ))
                }
                // Both leave the same image behind.
                try expectSameAsQemu(box, ["check", "--output=json", "o.qed"], json: false)
                #expect(try box.bytes("o.qed") == box.bytes("q.qed"))
            }
        }
    }

    @Test func checkRepairGivesBackTrailingLeaks() throws {
        let box = try Sandbox()
        try makeDamaged(box)
        let before = try box.fileSize("leak.qed")
        let o = try box.ours("check", "-r", "leaks", "leak.qed")
        #expect(o.status == 0, "\(o)")
        #expect(
            o.stdout == """
                The following inconsistencies were found and repaired:

                    2 leaked clusters
                    0 corruptions

                Double checking the fixed image now...
                No errors were found on the image.
                1/16 = 6.25% allocated, 0.00% fragmented, 0.00% compressed clusters

                """)
        #expect(try box.fileSize("leak.qed") == before - 131072)
        #expect(try box.qemuCheckStatus("leak.qed") == 0)
        let json = try parseJSON(try box.ours("check", "--output=json", "-r", "all", "d.qed").stdout) as? [String: Any]
        #expect(json?["leaks-fixed"] == nil && json?["check-errors"] as? Int == 0)
    }

    @Test func mapMatchesQemu() throws {
        let box = try Sandbox()
        try box.makeOverlayOnRaw()
        try box.makeQEDChain()
        try box.mustQemu("create", "-f", "qed", "empty.qed", "3M")
        for image in ["ov.qed", "base.raw", "top.qed", "mid.qed", "empty.qed"] {
            try expectSameAsQemu(box, ["map", image], comment: image)
            try expectSameAsQemu(box, ["map", "--output=json", image], json: true, comment: image)
        }
        try expectSameAsQemu(
            box, ["map", "--output=json", "--start-offset=64k", "--max-length=1M", "ov.qed"], json: true)
        // The past-the-backing-end range is depth 0, not present (QEMU's block status).
        let entries = try parseJSON(try box.ours("map", "--output=json", "ov.qed").stdout) as? [[String: Any]] ?? []
        let tail = entries.first { ($0["start"] as? Int) == 1 << 20 }
        #expect(tail?["depth"] as? Int == 0 && tail?["present"] as? Bool == false)
        #expect(entries.count == 10)
    }

    @Test func mapPictureShowsEveryKindOfRange() throws {
        let box = try Sandbox()
        try box.makeOverlayOnRaw()
        let o = try box.ours("map", "--output=picture", "ov.qed")
        #expect(o.status == 0)
        // 2 MiB at one 64 KiB cluster per cell: one row of 32 cells.
        #expect(o.lines[1] == "0x000000  b##z----b------- ........#.......", "\(o)")
        #expect(
            o.stdout.contains("Legend: # data here  z zero clusters  b backing data  - backing zeroes  . unallocated"))
        #expect(o.stdout.contains("backing chain: ov.qed -> base.raw"))
        let big = try box.ours("map", "--output=picture", "--width", "16", "base.raw")
        #expect(big.lines.filter { $0.hasPrefix("0x") }.count == 16)
    }

    @Test func compareMatchesQemu() throws {
        let box = try Sandbox()
        try box.makeOverlayOnRaw()
        try box.mustQemu("convert", "-O", "raw", "ov.qed", "flat.raw")
        try box.copy("flat.raw", "poked.raw")
        try box.qemuIO("-f", "raw", "-c", "write -P 1 1000 1", "poked.raw")
        try box.mustQemu("create", "-f", "raw", "z1.raw", "1M")
        try box.mustQemu("create", "-f", "raw", "z2.raw", "2M")
        try box.copy("z2.raw", "z3.raw")
        try box.qemuIO("-f", "raw", "-c", "write -P 1 1500k 1", "z3.raw")
        let pairs: [[String]] = [
            ["ov.qed", "flat.raw"], ["-s", "ov.qed", "flat.raw"], ["ov.qed", "base.raw"], ["base.raw", "ov.qed"],
            ["-s", "ov.qed", "base.raw"], ["flat.raw", "poked.raw"], ["z1.raw", "z2.raw"], ["z1.raw", "z3.raw"],
            ["-s", "z1.raw", "z1.raw"], ["ov.qed", "ov.qed"], ["-q", "ov.qed", "poked.raw"],
        ]
        for pair in pairs { try expectSameAsQemu(box, ["compare"] + pair) }
        let missing = try box.ours("compare", "z1.raw", "nope.raw")
        #expect(
            missing.status == 2
                && missing.stderr
                    == "qed-img: Could not open 'nope.raw': Could not open 'nope.raw': No such file or directory\n",
            "\(missing)")
        #expect(try box.ours("compare", "flat.raw", "poked.raw").stdout == "Content mismatch at offset 512!\n")
    }

    /// qemu-img's error messages and `file:` names: ours run under qemu-img's name (a link in the
    /// sandbox, as messages start with the name a program was run as) print the same.
    @Test func messagesAndFileNamesMatchQemu() throws {
        let box = try Sandbox()
        let link = box.path("qemu-img")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: Sandbox.qedImg)
        func same(_ args: [String], comment: String) throws {
            let ours = try box.run(link, args)
            let theirs = try box.qemu(args)
            #expect(ours.status == theirs.status, "\(comment): ours \(ours) / qemu \(theirs)")
            #expect(ours.stdout == theirs.stdout, "\(comment): ours \(ours) / qemu \(theirs)")
            #expect(ours.stderr == theirs.stderr, "\(comment): ours \(ours) / qemu \(theirs)")
        }
        try same(["create", "-f", "qed", "-b", "nothere.qed", "-F", "qed", "x.qed"], comment: "missing backing")
        try same(["info", "nope.qed"], comment: "missing image")
        try same(["info", "file:nope.qed"], comment: "missing image with file:")
        try same(["compare", "nope.qed", "nope.qed"], comment: "compare, missing image")
        for name in ["a:b.qed", "image:top.qed"] {
            try same(["create", "-f", "qed", "file:" + name, "1M"], comment: "create file:")
            try same(["info", "file:" + name], comment: "info file:")
        }
        // (A stored backing name is always a local path here, "a:b.qed" included: README's compatibility notes.)
        // A backing file naming its own image: the loop, and a missing backing file, in qemu-img's words.
        try box.mustQemu("create", "-q", "-f", "qed", "loop.qed", "1M")
        try box.mustQemu("rebase", "-u", "-f", "qed", "-b", "loop.qed", "-F", "qed", "loop.qed")
        try same(["info", "--backing-chain", "loop.qed"], comment: "loop")
        try box.mustQemu("create", "-q", "-f", "qed", "-u", "-b", "gone.qed", "-F", "qed", "orphan.qed", "1M")
        for verb in [["info", "--backing-chain"], ["check"], ["map"], ["convert", "-O", "qed"]] {
            try same(verb + ["orphan.qed"] + (verb[0] == "convert" ? ["out.qed"] : []), comment: "missing backing")
        }
        // rebase and commit refusals (none changes an image).
        try box.mustQemu("create", "-q", "-f", "qed", "base2.qed", "1M")
        try box.mustQemu("create", "-q", "-f", "qed", "-b", "base2.qed", "-F", "qed", "top2.qed")
        // --salvage on a readable image: the same copy, silently.
        try same(["convert", "--salvage", "-O", "qed", "top2.qed", "salvaged.qed"], comment: "salvage")
        for args in [
            ["rebase", "-b", "nothere.qed", "-F", "qed", "top2.qed"], ["rebase", "-b", "base2.qed", "top2.qed"],
            ["rebase", "-u", "-b", "nothere.qed", "top2.qed"],
            ["rebase", "-b", "base2.qed", "-F", "qed", "orphan.qed"],
            ["rebase", "-b", "base2.qed", "-F", "qed", "nothere.qed"], ["commit", "base2.qed"],
            ["commit", "orphan.qed"],
            ["commit", "nothere.qed"],
        ] {
            try same(args, comment: "rebase/commit")
        }
        // commit -b names a backing image as QEMU finds one: a relative name against the directory of
        // the layer above it. "sub/c.mid" from the top "sub/c.qed" would be sub/sub/c.mid: not found.
        try FileManager.default.createDirectory(atPath: box.path("sub"), withIntermediateDirectories: true)
        try box.mustQemu("create", "-q", "-f", "qed", "sub/c.base", "1M")
        try box.mustQemu("create", "-q", "-f", "qed", "-b", "c.base", "-F", "qed", "sub/c.mid")
        try box.mustQemu("create", "-q", "-f", "qed", "-b", "c.mid", "-F", "qed", "sub/c.qed")
        try same(["commit", "-b", "sub/c.mid", "sub/c.qed"], comment: "commit -b, name not in the chain")
        for name in ["c.mid", "c.base", box.path("sub/c.mid")] {
            try same(["commit", "-b", name, "sub/c.qed"], comment: "commit -b \(name)")
        }
        // Header fields QEMU validates, each broken in turn (cluster, table, header size, L1, size).
        for (offset, width) in [(4, 4), (8, 4), (12, 4), (40, 8), (48, 8)] {
            try box.mustQemu("create", "-q", "-f", "qed", "h.qed", "1M")
            if width == 4 {
                try box.poke32("h.qed", at: UInt64(offset), .max)
            } else {
                try box.poke64("h.qed", at: UInt64(offset), .max)
            }
            try same(["info", "h.qed"], comment: "header field at \(offset)")
            try same(["check", "h.qed"], comment: "header field at \(offset)")
        }
        try same(["info", "--image-opts", "driver=qed,file.driver=file,file.filename=loop.qed"], comment: "image-opts")
    }
}
