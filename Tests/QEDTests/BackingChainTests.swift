import Foundation
import QED
import TestSupport
import Testing

/// Backing chains: reads, copy-on-write fills, zero clusters and extents through the chain.
@Suite("Backing chains")
struct BackingChainTests {
    static let kib: UInt64 = 1024

    static func create(
        _ dir: TemporaryDirectory, _ name: String, size: UInt64?, cs: UInt32 = 4096,
        backing: String? = nil, format: BackingFormat? = nil
    ) throws {
        var options = CreateOptions(size: size, clusterSize: cs, tableSize: 2)
        options.backingFile = backing
        options.backingFormat = format
        try Image.create(path: dir.file(name), options: options)
    }

    static func openRW(_ dir: TemporaryDirectory, _ name: String) throws -> Image {
        try openImage(dir.file(name), .quiet())
    }

    static func openRO(_ dir: TemporaryDirectory, _ name: String) throws -> Image {
        try openImage(dir.file(name), OpenOptions(readOnly: true))
    }

    /// base.qed (64 KiB, data in its first 8 KiB) under top.qed (256 KiB): data at depth 1,
    /// unallocated in both layers at depth 1, past the base's end as unallocated at depth 0 (as
    /// `qemu-img map` reports it), zero and data clusters of the top at depth 0.
    @Test func extentsThroughAQEDBacking() throws {
        let dir = try TemporaryDirectory()
        try Self.create(dir, "base.qed", size: 64 * Self.kib)
        let base = try Self.openRW(dir, "base.qed")
        try base.write(bytes(0xaa, 8192), at: 0)
        let baseHost = try #require(base.extents(at: 0, length: 4096).first?.hostOffset)
        try base.close()
        try Self.create(dir, "top.qed", size: 256 * Self.kib, backing: "base.qed", format: .qed)
        let top = try Self.openRW(dir, "top.qed")
        try top.writeZeroes(at: 4096, length: 4096)
        try top.write(bytes(0xbb, 4096), at: 16384)
        let ext = try top.extents(at: 0, length: top.virtualSize)
        let topHost = try #require(ext.first { $0.offset == 16384 }?.hostOffset)
        let expected = [
            Extent(offset: 0, length: 4096, depth: 1, present: true, zero: false, data: true, hostOffset: baseHost),
            Extent(offset: 4096, length: 4096, depth: 0, present: true, zero: true, data: false, hostOffset: nil),
            Extent(offset: 8192, length: 8192, depth: 1, present: false, zero: true, data: false, hostOffset: nil),
            Extent(offset: 16384, length: 4096, depth: 0, present: true, zero: false, data: true, hostOffset: topHost),
            Extent(offset: 20480, length: 45056, depth: 1, present: false, zero: true, data: false, hostOffset: nil),
            Extent(offset: 65536, length: 196_608, depth: 0, present: false, zero: true, data: false, hostOffset: nil),
        ]
        #expect(ext == expected, "\(ext)")
        #expect(try top.read(at: 0, count: 4096) == bytes(0xaa, 4096))
        #expect(try top.read(at: 4096, count: 4096) == bytes(0, 4096), "the zero cluster hides backing data")
        #expect(try top.read(at: 16384, count: 4096) == bytes(0xbb, 4096))
        // A sub-range query covers exactly the range asked for.
        let part = try top.extents(at: 2048, length: 4096)
        #expect(part.map(\.offset) == [2048, 4096] && part.map(\.length) == [2048, 2048])
        try top.close()
    }

    @Test func shortRawBackingReadsZeroesPastItsEnd() throws {
        let dir = try TemporaryDirectory()
        try dir.create("base.raw", bytes(0xcc, 10000))  // not even a multiple of 512
        try Self.create(dir, "top.qed", size: 64 * Self.kib, backing: "base.raw", format: .raw)
        let top = try Self.openRW(dir, "top.qed")
        #expect(try top.read(at: 0, count: 65536) == bytes(0xcc, 10000) + bytes(0, 65536 - 10000))
        // A partial write into the cluster that straddles the backing's end: the fill copies the
        // backing up to its end and zeroes after it.
        try top.write(bytes(0x01, 100), at: 9000)
        #expect(
            try top.read(at: 8192, count: 4096) == bytes(0xcc, 808) + bytes(0x01, 100) + bytes(0xcc, 900)
                + bytes(0, 2288))
        // A write past the end of the backing file: fill is zeroes.
        try top.write(bytes(0x02, 10), at: 40000)
        #expect(try top.read(at: 36864, count: 4096) == bytes(0, 3136) + bytes(0x02, 10) + bytes(0, 950))
        let ext = try top.extents(at: 0, length: top.virtualSize)
        let hosts = ext.map(\.hostOffset)
        #expect(
            ext == [
                Extent(offset: 0, length: 8192, depth: 1, present: true, zero: false, data: true, hostOffset: 0),
                Extent(
                    offset: 8192, length: 4096, depth: 0, present: true, zero: false, data: true, hostOffset: hosts[1]),
                Extent(
                    offset: 12288, length: 24576, depth: 0, present: false, zero: true, data: false, hostOffset: nil),
                Extent(
                    offset: 36864, length: 4096, depth: 0, present: true, zero: false, data: true, hostOffset: hosts[3]),
                Extent(
                    offset: 40960, length: 24576, depth: 0, present: false, zero: true, data: false, hostOffset: nil),
            ], "\(ext)")
        #expect(hosts.count == 5 && hosts[1] != nil && hosts[3] != nil)
        // An unallocated run that straddles the backing's end: backing data up to it, then nothing.
        let straddle = try top.extents(at: 4096, length: 4096)
        #expect(straddle.count == 1 && straddle[0].depth == 1)
        try top.close()
    }

    @Test func partialWriteIntoZeroClusterFillsWithZeroes() throws {
        // §9.3: QEMU resurrects backing data here; the spec (and we) fill with zeroes.
        let dir = try TemporaryDirectory()
        try dir.create("base.raw", bytes(0xbb, 64 * 1024))
        try Self.create(dir, "top.qed", size: 64 * Self.kib, backing: "base.raw", format: .raw)
        let top = try Self.openRW(dir, "top.qed")
        try top.writeZeroes(at: 0, length: 8192)
        #expect(
            try top.extents(at: 0, length: 8192) == [
                Extent(offset: 0, length: 8192, depth: 0, present: true, zero: true, data: false, hostOffset: nil)
            ])
        try top.write(bytes(0x5a, 512), at: 1024)
        let expected = bytes(0, 1024) + bytes(0x5a, 512) + bytes(0, 4096 - 1536)
        #expect(try top.read(at: 0, count: 4096) == expected)
        #expect(try top.read(at: 4096, count: 4096) == bytes(0, 4096))
        #expect(try top.read(at: 8192, count: 4096) == bytes(0xbb, 4096))
        // An unallocated cluster, by contrast, is filled from the backing file.
        try top.write(bytes(0x5a, 512), at: 8192 + 1024)
        #expect(try top.read(at: 8192, count: 4096) == bytes(0xbb, 1024) + bytes(0x5a, 512) + bytes(0xbb, 2560))
        try top.close()
        let again = try Self.openRO(dir, "top.qed")
        #expect(try again.read(at: 0, count: 4096) == expected)
        try again.close()
    }

    @Test func zeroWritesOverAllocatedClustersStayAllocated() throws {
        let dir = try TemporaryDirectory()
        try dir.create("base.raw", bytes(0xbb, 64 * 1024))
        try Self.create(dir, "top.qed", size: 64 * Self.kib, backing: "base.raw", format: .raw)
        let top = try Self.openRW(dir, "top.qed")
        try top.write(bytes(0x11, 8192), at: 0)
        try top.writeZeroes(at: 0, length: 8192, unmap: true)
        #expect(try top.read(at: 0, count: 8192) == bytes(0, 8192))
        let ext = try top.extents(at: 0, length: 8192)
        #expect(ext.count == 1 && ext[0].data && ext[0].depth == 0, "\(ext)")
        // Discard of allocated clusters: zeroes, not backing data.
        try top.write(bytes(0x22, 4096), at: 16384)
        try top.discard(at: 16384, length: 4096)
        #expect(try top.read(at: 16384, count: 4096) == bytes(0, 4096))
        // Discard of unallocated or partial clusters changes nothing.
        try top.discard(at: 20480, length: 4096)
        try top.discard(at: 100, length: 5000)
        #expect(try top.read(at: 20480, count: 4096) == bytes(0xbb, 4096))
        try top.close()
    }

    @Test func growingPastTheOldSizeRevealsLargerBacking() throws {
        let dir = try TemporaryDirectory()
        try dir.create("base.raw", (0..<(128 * 1024)).map { UInt8(truncatingIfNeeded: $0 / 512) })
        try Self.create(dir, "top.qed", size: 32 * Self.kib, backing: "base.raw", format: .raw)
        let top = try Self.openRW(dir, "top.qed")
        try top.write(bytes(0xee, 10), at: 32 * 1024 - 10)
        try top.resize(to: 256 * Self.kib)
        let all = try top.read(at: 0, count: 256 * 1024)
        var expected = (0..<(128 * 1024)).map { UInt8(truncatingIfNeeded: $0 / 512) } + bytes(0, 128 * 1024)
        expected.replaceSubrange((32 * 1024 - 10)..<(32 * 1024), with: bytes(0xee, 10))
        #expect(all == expected)
        try top.close()
    }

    @Test func rawFormatIsNeverProbed() throws {
        // A raw backing file that happens to start with the QED magic stays raw (NO_PROBE).
        let dir = try TemporaryDirectory()
        let fake = Header(clusterSize: 4096, tableSize: 4, l1TableOffset: 4096, imageSize: 1 << 30).encoded()
        try dir.create("base.raw", fake + bytes(0x33, 8192 - 64))
        try Self.create(dir, "top.qed", size: 8192, backing: "base.raw", format: .raw)
        let top = try Self.openRO(dir, "top.qed")
        #expect(top.backingFormat == .raw)
        #expect(try top.read(at: 0, count: 8192) == fake + bytes(0x33, 8192 - 64))
        try top.close()
        // Without the flag, the same file is probed as QED (and is then too short to open).
        try Self.create(dir, "probe.qed", size: 8192, backing: "base.raw", format: nil)
        expectQEDError(.invalidTableOffset) { try Self.openRO(dir, "probe.qed") }
    }

    @Test func threeLevelChain() throws {
        let dir = try TemporaryDirectory()
        try dir.create("r.raw", bytes(0x10, 64 * 1024))
        try Self.create(dir, "m.qed", size: 64 * Self.kib, backing: "r.raw", format: .raw)
        let mid = try Self.openRW(dir, "m.qed")
        try mid.write(bytes(0x20, 4096), at: 4096)
        try mid.writeZeroes(at: 8192, length: 4096)
        try mid.close()
        try Self.create(dir, "t.qed", size: 64 * Self.kib, backing: "m.qed", format: .qed)
        let top = try Self.openRW(dir, "t.qed")
        try top.write(bytes(0x30, 100), at: 12288 + 7)
        #expect(
            try top.read(at: 0, count: 16384)
                == bytes(0x10, 4096) + bytes(0x20, 4096) + bytes(0, 4096) + bytes(0x10, 7) + bytes(0x30, 100)
                + bytes(0x10, 3989))
        let ext = try top.extents(at: 0, length: 16384)
        #expect(ext.map(\.depth) == [2, 1, 1, 0], "\(ext)")
        #expect(ext[0].data && ext[0].hostOffset == 0 && ext[2].zero && !ext[2].data)
        try top.close()
    }

    @Test func relativeNamesResolveAgainstTheImageDirectory() throws {
        let dir = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.file("sub"), withIntermediateDirectories: true)
        try dir.create("base.raw", bytes(0x61, 4096))
        try Self.create(dir, "sub/top.qed", size: 4096, backing: "../base.raw", format: .raw)
        let top = try Self.openRO(dir, "sub/top.qed")
        #expect(top.backingName == "../base.raw")
        #expect(try top.read(at: 0, count: 4096) == bytes(0x61, 4096))
        try top.close()
    }

    @Test(.timeLimit(.minutes(1)))
    func loopingChainsAreRefused() throws {
        let dir = try TemporaryDirectory()
        try Self.create(dir, "a.qed", size: 1 << 20, backing: "b.qed", format: .qed)
        try Self.create(dir, "b.qed", size: 1 << 20, backing: "a.qed", format: .qed)
        try Self.create(dir, "self.qed", size: 1 << 20, backing: "self.qed", format: .qed)
        try Self.create(dir, "c.qed", size: 1 << 20, backing: "./a.qed", format: .qed)
        expectQEDError(.backingFile, "a → b → a") { try Self.openRO(dir, "a.qed") }
        expectQEDError(.backingFile, "a → b → a, read-write") { try Self.openRW(dir, "a.qed") }
        expectQEDError(.backingFile, "self → self") { try Self.openRO(dir, "self.qed") }
        expectQEDError(.backingFile, "c → a → b → a") { try Self.openRO(dir, "c.qed") }
        expectQEDError(.backingFile, "missing") {
            try Self.create(dir, "d.qed", size: 1 << 20, backing: "nope.qed", format: .qed)
            return try Self.openRO(dir, "d.qed")
        }
        // The files are still usable by fixing the chain.
        let a = try openImage(
            dir.file("a.qed"),
            {
                var o = OpenOptions()
                o.openBacking = false
                return o
            }())
        try a.setBacking(name: nil, format: nil)
        try a.close()
        let fixed = try Self.openRO(dir, "c.qed")
        #expect(try fixed.read(at: 0, count: 16) == bytes(0, 16))
        try fixed.close()
    }
}
