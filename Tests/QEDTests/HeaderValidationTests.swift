import QED
import Testing

/// One test per open-time validity rule (docs/qed-format.md §1.3), each on a crafted header.
@Suite("Bad input: header rules (§1.3)")
struct HeaderValidationTests {
    func open(_ file: MemoryFile, readOnly: Bool = true) throws -> Image {
        try Image.open(file: file, options: .quiet(readOnly: readOnly))
    }

    @Test func validBaselineOpens() throws {
        let image = try open(Craft.file(Craft.header()))
        #expect(image.virtualSize == 8 << 20)
        #expect(try image.read(at: 0, count: 512) == bytes(0, 512))
        try image.close()
    }

    @Test func badMagic() {
        var h = Craft.header()
        h.magic = 0x0044_4552  // "RED\0"
        expectQEDError(.notQED) { try open(Craft.file(h)) }
        expectQEDError(.notQED, "file shorter than a header") { try open(MemoryFile([0x51, 0x45, 0x44, 0])) }
        expectQEDError(.notQED, "empty file") { try open(MemoryFile([])) }
    }

    static let unknownFeatures: [UInt64] = [0x08, 0x10, 0xa0, 0x8000_0000_0000_0000, 0xffff_ffff_ffff_fff8]

    @Test(arguments: unknownFeatures)
    func unknownFeatureBits(_ unknown: UInt64) throws {
        var h = Craft.header()
        h.features = FeatureFlags(rawValue: unknown | 0x02)  // mixed with a known bit
        let error = try #require(expectQEDError(.unsupportedFeatures) { try open(Craft.file(h)) })
        #expect(error.value == unknown)
        #expect(error.message.contains(String(unknown, radix: 16)), "\(error.message)")
    }

    static let badClusterSizes: [UInt32] = [0, 512, 2048, 3000, 4097, 12288, 1 << 27, 0x8000_0000, UInt32.max]

    @Test(arguments: badClusterSizes)
    func badClusterSize(_ cs: UInt32) {
        var h = Craft.header()
        h.clusterSize = cs
        expectQEDError(.invalidClusterSize, "cluster size \(cs)") { try open(Craft.file(h, length: 5 * 4096)) }
    }

    @Test(arguments: [UInt32(4096), 65536, 1 << 20, 8 << 20])
    func goodClusterSizes(_ cs: UInt32) throws {
        // (64 MiB is valid too — see GeometryTests — but would need a 128 MiB memory file.)
        let ts: UInt32 = cs >= 8 << 20 ? 1 : 2
        let image = try open(
            Craft.file(Header(clusterSize: cs, tableSize: ts, l1TableOffset: UInt64(cs), imageSize: 1 << 20)))
        #expect(image.clusterSize == UInt64(cs))
        try image.close()
    }

    static let badTableSizes: [UInt32] = [0, 3, 5, 17, 32, 1 << 31]

    @Test(arguments: badTableSizes)
    func badTableSize(_ ts: UInt32) {
        var h = Craft.header()
        h.tableSize = ts
        expectQEDError(.invalidTableSize, "table size \(ts)") { try open(Craft.file(h, length: 40 * 4096)) }
    }

    static let unalignedSizes: [UInt64] = [1, 511, 1000, (1 << 20) + 1, (1 << 20) + 256]

    @Test(arguments: unalignedSizes)
    func imageSizeNotMultipleOf512(_ size: UInt64) {
        var h = Craft.header()
        h.imageSize = size
        expectQEDError(.invalidImageSize, "size \(size)") { try open(Craft.file(h)) }
    }

    @Test func imageSizeLimits() throws {
        // 4 KiB clusters, table_size 2: 1024 entries per table → 1024·1024·4096 = 4 GiB.
        var h = Craft.header(cs: 4096, ts: 2)
        h.imageSize = 4 << 30
        let atMax = try open(Craft.file(h))
        #expect(atMax.virtualSize == 4 << 30)
        try atMax.close()
        for size in [(UInt64(4) << 30) + 512, UInt64.max & ~511, 1 << 62] {
            h.imageSize = size
            expectQEDError(.invalidImageSize, "size \(size)") { try open(Craft.file(h)) }
        }
        h.imageSize = 0
        let empty = try open(Craft.file(h))
        #expect(empty.virtualSize == 0)
        try empty.close()
    }

    static let badL1Offsets: [(String, UInt64, UInt64?)] = [
        ("misaligned", 4096 + 512, nil),
        ("inside the header", 0, nil),
        ("past EOF", 5 * 4096, nil),
        ("last table cluster past EOF", 2 * 4096, nil),
        ("table ends in a partial tail cluster", 4096, 5 * 4096 - 1),
        ("far past EOF", 1 << 50, nil),
        ("offset near 2^64", UInt64.max & ~4095, nil),
    ]

    @Test(arguments: badL1Offsets)
    func badL1Offset(_ name: String, _ offset: UInt64, _ length: UInt64?) {
        var h = Craft.header(cs: 4096, ts: 4)
        h.l1TableOffset = offset
        // Default file: header + 4 L1 clusters = 5 clusters.
        expectQEDError(.invalidTableOffset, name) { try open(Craft.file(h, length: length ?? 5 * 4096)) }
    }

    @Test func headerSizeTooLarge() throws {
        var h = Craft.header(cs: 4096)
        // QEMU checks the L1 offset before the header size (iotest 116: "QED table offset is
        // invalid" for header_size 0xffffffff): an L1 table inside a too-large header fails first.
        h.headerSize = UInt32.max / 4096 + 1
        expectQEDError(.invalidTableOffset) { try open(Craft.file(h, length: 5 * 4096)) }
        h.headerSize = UInt32.max
        expectQEDError(.invalidTableOffset) { try open(Craft.file(h, length: 5 * 4096)) }
        // A zero header size passes the offset check (the L1 is past byte 0) and is refused after it.
        h.headerSize = 0
        expectQEDError(.headerSizeTooLarge) { try open(Craft.file(h, length: 5 * 4096)) }
        // At the limit the size itself is fine; the L1 table then lies inside the header area.
        h.headerSize = UInt32.max / 4096
        expectQEDError(.invalidTableOffset) { try open(Craft.file(h, length: 5 * 4096)) }
        // A two-cluster header with the L1 after it is valid.
        h.headerSize = 2
        h.l1TableOffset = 2 * 4096
        let image = try open(Craft.file(h))
        #expect(image.geometry.headerBytes == 8192)
        try image.close()
    }

    static let badNameFields: [(String, UInt32, UInt32)] = [
        ("ends past the header cluster", 4000, 200),
        ("starts past the header cluster", 4096, 1),
        ("offset near 2^32", UInt32.max, 16),
        ("size near 2^32", 64, UInt32.max),
    ]

    @Test(arguments: badNameFields)
    func backingNameOutsideHeader(_ name: String, _ offset: UInt32, _ size: UInt32) {
        var h = Craft.header(cs: 4096)
        h.features = .backingFile
        h.backingNameOffset = offset
        h.backingNameSize = size
        expectQEDError(.invalidBackingName, name) { try open(Craft.file(h)) }
    }

    @Test func backingNameTooLong() {
        // Two header clusters hold 8 KiB, but QEMU reads names into a 4 KiB (PATH_MAX) buffer.
        let name = [UInt8](repeating: UInt8(ascii: "a"), count: 4096)
        var h = Craft.header(cs: 4096)
        h.headerSize = 2
        h.l1TableOffset = 8192
        h.features = .backingFile
        h.backingNameOffset = 64
        h.backingNameSize = 4096
        expectQEDError(.invalidBackingName, "4096-byte name") { try open(Craft.file(h, extra: [(64, name)])) }
        // 4095 bytes pass validation; the file just does not exist.
        h.backingNameSize = 4095
        expectQEDError(.backingFile, "4095-byte name") { try open(Craft.file(h, extra: [(64, name)])) }
    }

    @Test func backingNameFieldsIgnoredWithoutTheFeature() throws {
        var h = Craft.header(cs: 4096)
        h.features = .backingFormatNoProbe  // NO_PROBE alone means nothing
        h.backingNameOffset = UInt32.max
        h.backingNameSize = UInt32.max
        let image = try open(Craft.file(h))
        #expect(image.backingName == nil)
        #expect(try image.read(at: 0, count: 8) == bytes(0, 8))
        try image.close()
    }

    @Test func emptyOrNULBackingNameRefused() {
        var h = Craft.header(cs: 4096)
        h.features = .backingFile
        h.backingNameOffset = 64
        h.backingNameSize = 0
        expectQEDError(.invalidBackingName, "empty name") { try open(Craft.file(h)) }
        h.backingNameSize = 3
        expectQEDError(.invalidBackingName, "name with NUL") {
            try open(Craft.file(h, extra: [(64, [0x61, 0, 0x62])]))
        }
    }

    @Test func unknownAutoclearBitsClearedOnReadWriteOpenOnly() throws {
        var h = Craft.header()
        h.autoclearFeatures = 0x05
        let file = Craft.file(h)
        let before = file.contents
        let ro = try open(file, readOnly: true)
        #expect(ro.currentHeader.autoclearFeatures == 0x05)
        try ro.close()
        #expect(file.contents == before, "a read-only open wrote to the file")

        let rw = try open(file, readOnly: false)
        let onDisk = try Header(decoding: file.contents.prefix(64))
        #expect(onDisk.autoclearFeatures == 0)
        #expect(rw.currentHeader.autoclearFeatures == 0)
        var expected = h
        expected.autoclearFeatures = 0
        #expect(onDisk == expected, "only the autoclear field may change")
        try rw.close()
    }

    @Test func unknownCompatBitsIgnored() throws {
        var h = Craft.header()
        h.compatFeatures = 0xdead_0000_0000_0001
        let file = Craft.file(h)
        let image = try open(file, readOnly: false)
        try image.write(bytes(0x5c, 5000), at: 3000)
        #expect(try image.read(at: 3000, count: 5000) == bytes(0x5c, 5000))
        // They do block recording a backing file (QEMU refuses too).
        expectQEDError(.unsupported) { try image.setBacking(name: "x.raw", format: .raw, open: false) }
        try image.close()
        #expect(try Header(decoding: file.contents.prefix(64)).compatFeatures == 0xdead_0000_0000_0001)
    }

    @Test func tableSizeOneOpensAndWorks() throws {
        // QEMU cannot open these (§9.1); the spec allows them and so do we.
        let h = Header(clusterSize: 4096, tableSize: 1, l1TableOffset: 4096, imageSize: 8 << 20)
        let file = Craft.file(h)
        let image = try open(file, readOnly: false)
        // L2 covers 512 clusters = 2 MiB: write across the boundary.
        let data = (0..<20000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try image.write(data, at: (2 << 20) - 10000)
        try image.write(bytes(0x77, 4096), at: 6 << 20)
        #expect(try image.read(at: (2 << 20) - 10000, count: 20000) == data)
        let report = try image.check()
        #expect(report.isClean && report.allocatedClusters == 7, "\(report)")
        try image.close()
        let again = try open(file)
        #expect(try again.read(at: 6 << 20, count: 4096) == bytes(0x77, 4096))
        try again.close()
    }
}
