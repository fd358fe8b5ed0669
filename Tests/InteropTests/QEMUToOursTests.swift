import Foundation
import QED
import TestSupport
import Testing

/// Images made by qemu-img and written by qemu-io, read through our engine.
@Suite("Interop: QEMU's images, read by us")
struct QEMUToOursTests {
    /// A recipe for an image made with the QEMU tools; returns the path of the top image.
    struct Recipe: Sendable, CustomTestStringConvertible {
        var name: String
        var build: @Sendable (TemporaryDirectory) throws -> String
        var testDescription: String { name }
    }

    static let recipes: [Recipe] = [
        Recipe(name: "64k clusters, patterns, zero clusters, in-place zeroes") { dir in
            let img = dir.file("a.qed")
            try QEMU.imgOK("create", "-f", "qed", img, "8M")
            try QEMU.ioOK(
                img,
                [
                    "write -P 0xab 0 64k", "write -P 0x11 100k 3k", "write -z 1M 128k",
                    "write -P 0x22 2M 300k", "write -z 2176k 64k", "write -P 0x33 7M 1M",
                    "write -P 0x44 3000k 700", "write -z 5M 4k",
                ])
            return img
        },
        Recipe(name: "4k clusters, table_size 16, writes across an L2 boundary") { dir in
            let img = dir.file("b.qed")
            try QEMU.imgOK("create", "-f", "qed", "-o", "cluster_size=4096,table_size=16", img, "72M")
            try QEMU.ioOK(
                img,
                [
                    "write -P 0x5a 0 10k", "write -P 0x6b 32760k 16k", "write -z 32M 64k",
                    "write -P 0x7c 64M 1M", "write -P 0x8d 75496960 512", "write -P 0x9e 1234k 1",
                ])
            return img
        },
        Recipe(name: "4k clusters, table_size 2, many L2 tables") { dir in
            let img = dir.file("c.qed")
            try QEMU.imgOK("create", "-f", "qed", "-o", "cluster_size=4096,table_size=2", img, "20M")
            try QEMU.ioOK(
                img,
                [
                    "write -P 1 4192256 4k", "write -P 2 8386560 4k", "write -P 3 12M 4M",
                    "write -z 16M 4M", "write -P 4 19923044 2000",
                ])
            return img
        },
        Recipe(name: "raw backing, relative name, shorter than the image") { dir in
            let base = dir.file("base.raw"), top = dir.file("top.qed")
            try QEMU.imgOK("create", "-f", "raw", base, "300k")
            try QEMU.ioOK(base, ["write -P 0xbb 0 300k", "write -P 0xcc 128k 20k"], extra: ["-f", "raw"])
            try QEMU.imgOK(
                "create", "-f", "qed", "-b", "base.raw", "-F", "raw", "-o", "cluster_size=4096", top, "1M",
                cwd: dir.path)
            try QEMU.ioOK(
                top,
                [
                    "write -P 0x01 4k 4k", "write -P 0x02 10000 100", "write -z 64k 64k",
                    "write -P 0x03 290k 20k", "write -P 0x04 900k 1k",
                ])
            return top
        },
        Recipe(name: "qed backing in another directory, relative name") { dir in
            try FileManager.default.createDirectory(atPath: dir.file("base"), withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: dir.file("top"), withIntermediateDirectories: true)
            let base = dir.file("base/base.qed"), top = dir.file("top/top.qed")
            try QEMU.imgOK("create", "-f", "qed", "-o", "cluster_size=4096", base, "2M")
            try QEMU.ioOK(base, ["write -P 0xa1 0 1M", "write -z 256k 64k", "write -P 0xa2 1536k 512k"])
            try QEMU.imgOK(
                "create", "-f", "qed", "-b", "../base/base.qed", "-F", "qed", top, "3M", cwd: dir.file("top"))
            try QEMU.ioOK(
                top,
                [
                    "write -P 0xb1 512k 4k", "write -z 1M 64k", "write -P 0xb2 1999k 2k",
                    "write -P 0xb3 2560k 1k",
                ])
            return top
        },
        Recipe(name: "two-level chain: raw <- qed <- qed") { dir in
            let raw = dir.file("r.raw"), mid = dir.file("m.qed"), top = dir.file("t.qed")
            try QEMU.imgOK("create", "-f", "raw", raw, "1M")
            try QEMU.ioOK(raw, ["write -P 0x10 0 1M"], extra: ["-f", "raw"])
            try QEMU.imgOK(
                "create", "-f", "qed", "-b", "r.raw", "-F", "raw", "-o", "cluster_size=4096", mid, "1M",
                cwd: dir.path)
            try QEMU.ioOK(mid, ["write -P 0x20 64k 64k", "write -z 256k 64k"])
            try QEMU.imgOK(
                "create", "-f", "qed", "-b", "m.qed", "-F", "qed", "-o", "cluster_size=4096", top, "2M",
                cwd: dir.path)
            try QEMU.ioOK(top, ["write -P 0x30 100k 8k", "write -z 0 4k"])
            return top
        },
    ]

    /// Whole content equals `qemu-img convert -O raw`; extents equal `qemu-img map`; our check
    /// agrees with `qemu-img check`.
    @Test(arguments: recipes)
    func readsLikeQEMU(_ recipe: Recipe) throws {
        let dir = try TemporaryDirectory()
        let path = try recipe.build(dir)
        let raw = dir.file("converted.raw")
        try QEMU.imgOK("convert", "-O", "raw", path, raw)
        let expected = try Files.read(raw)

        let image = try openImage(path, OpenOptions(readOnly: true))
        defer { try? image.close() }
        #expect(image.virtualSize == UInt64(expected.count))
        let ours = try image.read(at: 0, count: expected.count)
        if ours != expected {
            let first = zip(ours, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1
            Issue.record("content differs from qemu-img convert; first difference at byte \(first)")
        }
        let map = try QEMU.map(path)
        let extents = try image.extents(at: 0, length: image.virtualSize)
        #expect(extents.map(MapView.init) == map.map(MapView.init), "ours \(extents.map(MapView.init))\nqemu \(map)")

        let theirs = try QEMU.check(path)
        let report = try image.check()
        #expect(theirs.status == 0 && report.isClean, "\(theirs) / \(report)")
        #expect(CheckCounts(report) == CheckCounts(theirs))
    }

    /// A sparse 6 GiB image with data past 4 GiB: sampled regions and the map agree.
    @Test func sparseImageLargerThan4GiB() throws {
        let dir = try TemporaryDirectory()
        let img = dir.file("big.qed")
        try QEMU.imgOK("create", "-f", "qed", img, "6G")
        let regions: [(UInt64, UInt64)] = [
            (0, 65536), ((4 << 30) - 32768, 65536), ((4 << 30) + 12345, 70000),
            ((5 << 30) + 3 * 65536, 3 * 65536), ((6 << 30) - 4096, 4096),
        ]
        try QEMU.ioOK(
            img,
            [
                "write -P 0x11 0 64k", "write -P 0x22 4194272k 64k", "write -P 0x33 4294979641 70000",
                "write -z 5G 64k", "write -P 0x44 5368905728 196608", "write -P 0x55 6442446848 4k",
            ])
        let raw = dir.file("big.raw")
        try QEMU.imgOK("convert", "-O", "raw", img, raw)
        let image = try openImage(img, OpenOptions(readOnly: true))
        defer { try? image.close() }
        #expect(image.virtualSize == 6 << 30)
        var rng = SplitMix64(seed: 4242)
        var samples = regions.map { ($0.0 >= 4096 ? $0.0 - 4096 : 0, $0.1 + 8192) }
        for _ in 0..<16 { samples.append((UInt64.random(in: 0...((6 << 30) - 8192), using: &rng), 8192)) }
        for (off, len) in samples {
            let n = Int(min(len, (6 << 30) - off))
            let ours = try image.read(at: off, count: n)
            let theirs = try Files.read(raw, at: off, count: n)
            #expect(ours == theirs, "region \(off)+\(n) differs")
        }
        #expect(try image.read(at: (4 << 30) + 12345, count: 4) == [0x33, 0x33, 0x33, 0x33])
        let extents = try image.extents(at: 0, length: image.virtualSize)
        let map = try QEMU.map(img)
        #expect(extents.map(MapView.init) == map.map(MapView.init), "ours \(extents.map(MapView.init))\nqemu \(map)")
        let report = try image.check()
        let theirs = try QEMU.check(img)
        #expect(report.isClean && theirs.status == 0)
        #expect(CheckCounts(report) == CheckCounts(theirs))
    }

    /// A qemu-made image with NEED_CHECK set: read-only opens leave it alone and read the same
    /// content; a read-write open checks it and the bit is gone after close.
    @Test func dirtyImage() throws {
        let dir = try TemporaryDirectory()
        let img = dir.file("dirty.qed")
        try QEMU.imgOK("create", "-f", "qed", "-o", "cluster_size=4096", img, "4M")
        try QEMU.ioOK(img, ["write -P 0x61 0 12k", "write -P 0x62 1048583 5000", "write -z 2M 16k"])
        let raw = dir.file("dirty.raw")
        try QEMU.imgOK("convert", "-O", "raw", img, raw)
        let expected = try Files.read(raw)
        var flags = try Files.read(img, at: 16, count: 1)
        flags[0] |= 2
        try Files.write(img, flags, at: 16)
        let before = try Files.read(img)

        let ro = try openImage(img, OpenOptions(readOnly: true))
        #expect(ro.isDirty)
        #expect(try ro.read(at: 0, count: expected.count) == expected)
        #expect(ro.checkOnOpen == nil)
        try ro.closeReleasingLocks()
        #expect(try Files.read(img) == before, "a read-only open changed the file")

        let rw = try openImage(img)
        let report = try #require(rw.checkOnOpen, "NEED_CHECK did not trigger a check")
        #expect(report.isClean && report.corruptionsFixed == 0, "\(report)")
        #expect(try rw.read(at: 0, count: expected.count) == expected)
        try rw.closeReleasingLocks()
        #expect(try Files.read(img, at: 16, count: 1)[0] & 2 == 0, "NEED_CHECK still set after close")
        let check = try QEMU.check(img)
        #expect(check.status == 0, "\(check)")
        let info = try QEMU.imgOK("info", "--output=json", img)
        #expect(info.stdout.contains("\"dirty-flag\": false"), "\(info)")
    }

    /// QEMU and we repair the same dirty image with a bad L2 entry the same way.
    @Test func dirtyImageWithBadEntryRepairsLikeQEMU() throws {
        let dir = try TemporaryDirectory()
        let a = dir.file("a.qed"), b = dir.file("b.qed")
        try QEMU.imgOK("create", "-f", "qed", "-o", "cluster_size=4096,table_size=2", a, "4M")
        try QEMU.ioOK(a, ["write -P 0x61 0 8k", "write -P 0x62 64k 4k"])
        let layout = try QEDLayout(path: a)
        // L2 entry of guest cluster 1 points far past EOF; set NEED_CHECK.
        try Files.writeU64(a, 1 << 40, at: layout.l2EntryOffset(guest: 4096))
        var flags = try Files.read(a, at: 16, count: 1)
        flags[0] |= 2
        try Files.write(a, flags, at: 16)
        try FileManager.default.copyItem(atPath: a, toPath: b)

        // QEMU auto-checks on a read-write open.
        try QEMU.ioOK(a, ["read -P 0 4k 4k"])
        let rw = try openImage(b)
        let report = try #require(rw.checkOnOpen)
        #expect(report.corruptionsFixed == 1 && report.corruptions == 0, "\(report)")
        #expect(try rw.read(at: 4096, count: 4096) == [UInt8](repeating: 0, count: 4096))
        #expect(try rw.read(at: 0, count: 4096) == [UInt8](repeating: 0x61, count: 4096))
        try rw.closeReleasingLocks()
        // Both leave the cluster the bad entry used to point at as a leak (neither repairs leaks
        // in the middle of the file).
        for path in [a, b] {
            let check = try QEMU.check(path)
            #expect(
                check.status == 3 && check.leaks == 1 && check.corruptions == 0 && check.allocatedClusters == 2,
                "\(path): \(check)")
            #expect(try Files.read(path, at: 16, count: 1)[0] & 2 == 0)
        }
        try QEMU.imgOK("convert", "-O", "raw", a, dir.file("a.raw"))
        try QEMU.imgOK("convert", "-O", "raw", b, dir.file("b.raw"))
        #expect(try Files.read(dir.file("a.raw")) == Files.read(dir.file("b.raw")))
    }
}

/// The counts `qemu-img check` and ``CheckReport`` share.
struct CheckCounts: Equatable, CustomStringConvertible {
    var corruptions, leaks, checkErrors, total, allocated, fragmented: Int
    init(_ r: CheckReport) {
        (corruptions, leaks, checkErrors) = (r.corruptions, r.leaks, r.checkErrors)
        (total, allocated, fragmented) = (Int(r.totalClusters), Int(r.allocatedClusters), Int(r.fragmentedClusters))
    }
    init(_ c: QEMU.Check) {
        (corruptions, leaks, checkErrors) = (c.corruptions, c.leaks, c.checkErrors)
        (total, allocated, fragmented) = (c.totalClusters, c.allocatedClusters, c.fragmentedClusters)
    }
    var description: String {
        "corruptions \(corruptions) leaks \(leaks) errors \(checkErrors) total \(total) allocated \(allocated) fragmented \(fragmented)"
    }
}

/// Where things are in an image file, read straight from its header and L1 table.
struct QEDLayout {
    let path: String
    let clusterSize: UInt64, tableSize: UInt64, l1Offset: UInt64
    var entries: UInt64 { tableSize * clusterSize / 8 }
    var bytesPerL2: UInt64 { entries * clusterSize }

    init(path: String) throws {
        self.path = path
        let h = try Files.read(path, at: 0, count: 64)
        let header = try Header(decoding: h)
        clusterSize = UInt64(header.clusterSize)
        tableSize = UInt64(header.tableSize)
        l1Offset = header.l1TableOffset
    }

    func l1EntryOffset(guest: UInt64) -> UInt64 { l1Offset + 8 * (guest / bytesPerL2) }

    func l2TableOffset(guest: UInt64) throws -> UInt64 { try Files.readU64(path, at: l1EntryOffset(guest: guest)) }

    func l2EntryOffset(guest: UInt64) throws -> UInt64 {
        let table = try l2TableOffset(guest: guest)
        precondition(table != 0, "no L2 table for guest offset \(guest)")
        return table + 8 * ((guest / clusterSize) % entries)
    }

    func l2Entry(guest: UInt64) throws -> UInt64 { try Files.readU64(path, at: l2EntryOffset(guest: guest)) }
}
