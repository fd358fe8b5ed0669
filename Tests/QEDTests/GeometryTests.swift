import QED
import Testing

@Suite("Geometry math")
struct GeometryTests {
    struct Expected: Sendable, CustomTestStringConvertible {
        var cs: UInt32, ts: UInt32
        var entries: UInt64, bytesPerL2: UInt64, maxImageSize: UInt64
        var testDescription: String { "cs=\(cs) ts=\(ts)" }
    }

    static let table: [Expected] = [
        // Default geometry: 64 TiB (docs/qed-format.md §1.3 step 7, observed with qemu-img).
        Expected(cs: 65536, ts: 4, entries: 32768, bytesPerL2: 2 << 30, maxImageSize: 64 << 40),
        Expected(cs: 4096, ts: 4, entries: 2048, bytesPerL2: 8 << 20, maxImageSize: 16 << 30),
        Expected(cs: 65536, ts: 16, entries: 131_072, bytesPerL2: 8 << 30, maxImageSize: 1 << 50),
        Expected(cs: 4096, ts: 1, entries: 512, bytesPerL2: 2 << 20, maxImageSize: 1 << 30),
        Expected(cs: 4096, ts: 2, entries: 1024, bytesPerL2: 4 << 20, maxImageSize: 4 << 30),
        Expected(cs: 1 << 20, ts: 16, entries: 2 << 20, bytesPerL2: 2 << 40, maxImageSize: 1 << 62),
    ]

    @Test(arguments: table)
    func derivedSizes(_ e: Expected) {
        let g = Geometry(clusterSize: e.cs, tableSize: e.ts)
        #expect(g.entriesPerTable == e.entries)
        #expect(g.bytesPerL2 == e.bytesPerL2)
        #expect(g.maxImageSize == e.maxImageSize)
        #expect(g.qemuMaxImageSize == e.maxImageSize)
        #expect(g.tableBytes == UInt64(e.ts) * UInt64(e.cs))
        #expect(g.headerBytes == UInt64(e.cs))
        #expect(UInt64(1) << g.l1Shift == e.bytesPerL2)
        #expect(UInt64(1) << g.clusterBits == UInt64(e.cs))
    }

    @Test(arguments: [(UInt32(4 << 20), UInt32(4)), (2 << 20, 16), (64 << 20, 16), (16 << 20, 1)])
    func qemuMaximumWrapsToZero(_ cs: UInt32, _ ts: UInt32) {
        // 2·log2(ts) + 3·log2(cs) ≥ 70 → N²·cs ≡ 0 mod 2^64 (§9.4); we saturate instead, and cap
        // what we accept at the engine's (and QEMU's block layer's) 2^63 − 2^30.
        let g = Geometry(clusterSize: cs, tableSize: ts)
        #expect(g.qemuMaxImageSize == 0)
        #expect(g.tablesMaxImageSize == UInt64.max)
        #expect(g.maxImageSize == Geometry.maxAddressableSize)
    }

    @Test func maximumIsCappedAtTheAddressableSize() {
        let twoTo63: UInt64 = 1 << 63
        #expect(Geometry.maxAddressableSize == twoTo63 - (1 << 30), "QEMU's BDRV_MAX_LENGTH")
        // 2 MiB clusters, table_size 8: N = 2^21 entries, N²·cs = 2^63 exactly (QEMU's product does
        // not wrap, but its block layer refuses more than 2^63 − 2^30 with "File too large").
        let g = Geometry(clusterSize: 2 << 20, tableSize: 8)
        #expect(g.tablesMaxImageSize == twoTo63)
        #expect(g.qemuMaxImageSize == twoTo63)
        #expect(g.maxImageSize == twoTo63 - (1 << 30))
        // Below the cap the tables decide.
        let small = Geometry(clusterSize: 1 << 20, tableSize: 16)
        #expect(small.maxImageSize == small.tablesMaxImageSize && small.maxImageSize == 1 << 62)
    }

    @Test func indexMath() {
        let g = Geometry(clusterSize: 65536, tableSize: 4)
        let pos: UInt64 = 3 * (2 << 30) + 5 * 65536 + 17
        #expect(g.l1Index(pos) == 3)
        #expect(g.l2Index(pos) == 5)
        #expect(g.offsetInCluster(pos) == 17)
        #expect(g.bytesToL2Boundary(pos) == (2 << 30) - 5 * 65536 - 17)
        #expect(g.bytesToL2Boundary(2 << 30) == 2 << 30)
        #expect(g.l2Index((2 << 30) - 1) == 32767)
        let small = Geometry(clusterSize: 4096, tableSize: 2)
        #expect(small.l1Index((4 << 20) - 1) == 0 && small.l1Index(4 << 20) == 1)
        #expect(small.l2Index((4 << 20) + 4096 * 3 + 4095) == 3)
    }

    @Test func clusterCountIsExact() {
        // QEMU divides by cluster_size − 1 (§9.2) and is one too high from cs·(cs−1) bytes on.
        let g = Geometry(clusterSize: 4096, tableSize: 4)
        let cs: UInt64 = 4096
        func qemu(_ bytes: UInt64) -> UInt64 { ((bytes + cs - 1) & ~(cs - 1)) / (cs - 1) }
        let cases: [(UInt64, UInt64)] = [
            (0, 0), (1, 1), (cs, 1), (cs + 1, 2), (cs * (cs - 2), cs - 2),
            (cs * (cs - 1), cs - 1), (cs * (cs - 1) + 1, cs), (cs * 5000, 5000),
        ]
        for (bytes, clusters) in cases {
            #expect(g.clusters(coveringBytes: bytes) == clusters, "\(bytes) bytes")
        }
        #expect(qemu(cs * (cs - 2)) == cs - 2, "QEMU is exact below cs−1 clusters")
        #expect(qemu(cs * (cs - 1)) == cs, "QEMU is one too high at cs−1 clusters")
    }

    @Test func validityRanges() {
        for cs in [UInt64(4096), 8192, 65536, 1 << 20, 64 << 20] { #expect(Geometry.isValidClusterSize(cs), "\(cs)") }
        for cs in [UInt64(0), 2048, 4095, 6144, 128 << 20, 1 << 40] {
            #expect(!Geometry.isValidClusterSize(cs), "\(cs)")
        }
        for ts in [UInt64(1), 2, 4, 8, 16] { #expect(Geometry.isValidTableSize(ts), "\(ts)") }
        for ts in [UInt64(0), 3, 6, 32, 1 << 33] { #expect(!Geometry.isValidTableSize(ts), "\(ts)") }
    }

    @Test func tableOffsetRule() {
        let g = Geometry(clusterSize: 4096, tableSize: 4)
        let fileSize: UInt64 = 20 * 4096
        #expect(g.isValidTableOffset(4096, fileSize: fileSize))
        #expect(g.isValidTableOffset(16 * 4096, fileSize: fileSize), "last cluster at 19·4096 < file size")
        #expect(!g.isValidTableOffset(17 * 4096, fileSize: fileSize), "last cluster at the file size")
        #expect(!g.isValidTableOffset(0, fileSize: fileSize), "inside the header")
        #expect(!g.isValidTableOffset(4096 + 512, fileSize: fileSize), "misaligned")
        #expect(!g.isValidTableOffset(UInt64.max & ~4095, fileSize: UInt64.max & ~4095), "overflows")
        // table_size 1: QEMU's overflow guard rejects every such table (§9.1); the rule itself does not.
        let one = Geometry(clusterSize: 4096, tableSize: 1)
        #expect(one.isValidTableOffset(19 * 4096, fileSize: fileSize))
        #expect(!one.isValidTableOffset(20 * 4096, fileSize: fileSize))
        let twoClusterHeader = Geometry(clusterSize: 4096, tableSize: 2, headerSize: 2)
        #expect(!twoClusterHeader.isValidTableOffset(4096, fileSize: fileSize))
        #expect(twoClusterHeader.isValidTableOffset(8192, fileSize: fileSize))
    }

    @Test func clusterOffsetRule() {
        let g = Geometry(clusterSize: 65536, tableSize: 4, headerSize: 2)
        let fileSize: UInt64 = 10 * 65536
        #expect(g.isValidClusterOffset(2 * 65536, fileSize: fileSize))
        #expect(g.isValidClusterOffset(9 * 65536, fileSize: fileSize))
        #expect(!g.isValidClusterOffset(10 * 65536, fileSize: fileSize))
        #expect(!g.isValidClusterOffset(65536, fileSize: fileSize), "header area")
        #expect(!g.isValidClusterOffset(0, fileSize: fileSize))
        #expect(!g.isValidClusterOffset(3 * 65536 + 4096, fileSize: fileSize), "4 KiB aligned is not enough")
        #expect(!g.isValidClusterOffset(3 * 65536 + 1, fileSize: fileSize), "low flag bits")
    }

    @Test func headerEncodingIsQEMUs() throws {
        let h = Header(
            clusterSize: 65536, tableSize: 4, headerSize: 1, features: [.backingFile, .backingFormatNoProbe],
            compatFeatures: 0x0102, autoclearFeatures: 0x0304, l1TableOffset: 0x10000, imageSize: 0x4000_0000,
            backingNameOffset: 64, backingNameSize: 8)
        let expected: [UInt8] = [
            0x51, 0x45, 0x44, 0x00, 0x00, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
            0x05, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0,
            0x04, 0x03, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0,
            0x00, 0x00, 0x00, 0x40, 0, 0, 0, 0, 0x40, 0, 0, 0, 0x08, 0, 0, 0,
        ]
        #expect(h.encoded() == expected)
        #expect(try Header(decoding: expected) == h)
        #expect(throws: QEDError.self) { try Header(decoding: expected.prefix(63)) }
    }
}
