import Foundation
import QED
import TestSupport
import Testing

/// Lookup rules (§2.1): bad L1/L2 entries make I/O fail with a specific error, never crash or
/// follow the pointer; a repairing check clears them.
@Suite("Bad input: table entries (§2.1) and repair")
struct TableValidationTests {
    /// 4 KiB clusters, table_size 2 (an L2 table maps 4 MiB), a two-cluster header (so "inside
    /// the header" can be cluster-aligned), 12 MiB; data in guest clusters 0, 1, 2 and at 4 MiB.
    static func makeImage() throws -> MemoryFile {
        let h = Header(clusterSize: 4096, tableSize: 2, headerSize: 2, l1TableOffset: 8192, imageSize: 12 << 20)
        let file = Craft.file(h)
        let image = try Image.open(file: file, options: .quiet())
        try image.write(bytes(0x11, 3 * 4096), at: 0)
        try image.write(bytes(0x44, 4096), at: 4 << 20)
        try image.close()
        return file
    }

    /// Offsets of L1 entry `i` and of the L2 entry for guest cluster `c` (table 0 or 1).
    static func l1Entry(_ i: UInt64) -> UInt64 { 8192 + 8 * i }
    static func l2Entry(_ file: MemoryFile, guestCluster c: UInt64) -> UInt64 {
        Craft.readLE64(file, at: l1Entry(c / 1024)) + 8 * (c % 1024)
    }

    enum Corruption: String, CaseIterable, Sendable {
        case l1PastEOF, l1Misaligned, l1One, l1TableEndsPastEOF, l1InHeader
        case l2PastEOF, l2Misaligned, l2InHeader, l2LowBits, l2AtEOF

        /// Which guest cluster becomes unreadable, and the error code.
        var guestCluster: UInt64 { isL1 ? 1024 : 1 }
        var isL1: Bool { rawValue.hasPrefix("l1") }
        var code: QEDError.Code { isL1 ? .invalidTableOffset : .invalidClusterOffset }

        func apply(_ file: MemoryFile) throws {
            let length = try file.length()
            let l1 = TableValidationTests.l1Entry(1)
            let l2 = TableValidationTests.l2Entry(file, guestCluster: 1)
            let current = Craft.readLE64(file, at: isL1 ? l1 : l2)
            let (at, value): (UInt64, UInt64) =
                switch self {
                case .l1PastEOF: (l1, length + (1 << 30))
                case .l1Misaligned: (l1, current + 512)
                case .l1One: (l1, 1)
                case .l1TableEndsPastEOF: (l1, length - 4096)  // two-cluster table, only one inside
                case .l1InHeader: (l1, 4096)
                case .l2PastEOF: (l2, 1 << 40)
                case .l2Misaligned: (l2, current + 2048)
                case .l2InHeader: (l2, 4096)
                case .l2LowBits: (l2, current | 1)
                case .l2AtEOF: (l2, length)
                }
            try Craft.writeLE64(file, value, at: at)
        }
    }

    @Test(arguments: Corruption.allCases)
    func readOnlyReadsFail(_ corruption: Corruption) throws {
        let file = try Self.makeImage()
        try corruption.apply(file)
        let before = file.contents
        let image = try Image.open(file: file, options: .quiet(readOnly: true))
        let pos = corruption.guestCluster * 4096
        expectQEDError(corruption.code, "read") { try image.read(at: pos, count: 512) }
        expectQEDError(corruption.code, "read spanning into it") { try image.read(at: pos - 100, count: 200) }
        expectQEDError(corruption.code, "extents") { try image.extents(at: pos, length: 4096) }
        // Other clusters stay readable.
        #expect(try image.read(at: 0, count: 4096) == bytes(0x11, 4096))
        let report = try image.check()
        #expect(report.corruptions == 1 && report.corruptionsFixed == 0, "\(report)")
        try image.close()
        #expect(file.contents == before)
    }

    @Test(arguments: Corruption.allCases)
    func writesRefuseToFollowBadEntries(_ corruption: Corruption) throws {
        let file = try Self.makeImage()
        try corruption.apply(file)
        let length = try file.length()
        let image = try Image.open(file: file, options: .quiet())
        let pos = corruption.guestCluster * 4096
        expectQEDError(corruption.code, "write") { try image.write(bytes(0xee, 100), at: pos + 10) }
        expectQEDError(corruption.code, "write zeroes") { try image.writeZeroes(at: pos, length: 4096) }
        #expect(try file.length() == length, "a refused write allocated clusters")
        try image.close()
    }

    @Test(arguments: Corruption.allCases)
    func repairingCheckFixes(_ corruption: Corruption) throws {
        let file = try Self.makeImage()
        try corruption.apply(file)
        let image = try Image.open(file: file, options: .quiet())
        let report = try image.check(repair: true)
        #expect(report.corruptionsFixed == 1 && report.corruptions == 0, "\(report)")
        let pos = corruption.guestCluster * 4096
        #expect(try image.read(at: pos, count: 4096) == bytes(0, 4096))
        #expect(try image.read(at: 0, count: 4096) == bytes(0x11, 4096))
        // The cleared cluster can be written again.
        try image.write(bytes(0x99, 4096), at: pos)
        #expect(try image.read(at: pos, count: 4096) == bytes(0x99, 4096))
        let again = try image.check()
        #expect(again.corruptions == 0 && again.checkErrors == 0, "\(again)")
        try image.close()
    }

    /// A repaired cluster of an image with a backing file shows the backing data again.
    @Test func repairedClusterReadsBackingData() throws {
        let dir = try TemporaryDirectory()
        try dir.create("base.raw", bytes(0xb0, 64 << 10))
        var options = CreateOptions(size: 1 << 20, clusterSize: 4096, tableSize: 2)
        options.backingFile = "base.raw"
        options.backingFormat = .raw
        try Image.create(path: dir.file("top.qed"), options: options)
        let top = try openImage(dir.file("top.qed"))
        try top.write(bytes(0x70, 100), at: 8192 + 50)
        try top.close()
        // Point guest cluster 2's L2 entry past EOF.
        let raw = try dir.read("top.qed")
        let l2 = raw[4096..<4104].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        try dir.patch("top.qed", Files.le64(1 << 40), at: l2 + 16)

        let ro = try openImage(dir.file("top.qed"), OpenOptions(readOnly: true))
        expectQEDError(.invalidClusterOffset) { try ro.read(at: 8192, count: 4096) }
        try ro.close()
        let rw = try openImage(dir.file("top.qed"))
        let report = try rw.check(repair: true)
        #expect(report.corruptionsFixed == 1, "\(report)")
        #expect(try rw.read(at: 8192, count: 4096) == bytes(0xb0, 4096))
        try rw.close()
    }

    /// NEED_CHECK + an out-of-range L2 entry: a read-write open checks and repairs, reads are
    /// zeroes, and the bit is clear after close. A read-only open does none of that.
    @Test func needCheckImageIsRepairedOnReadWriteOpen() throws {
        let file = try Self.makeImage()
        try Corruption.l2PastEOF.apply(file)
        var flags = file.contents[16]
        flags |= 0x02
        try file.writeBytes([flags], at: 16)

        let ro = try Image.open(file: file, options: .quiet(readOnly: true))
        #expect(ro.isDirty && ro.checkOnOpen == nil)
        expectQEDError(.invalidClusterOffset) { try ro.read(at: 4096, count: 16) }
        try ro.close()
        #expect(file.contents[16] & 2 != 0)

        let rw = try Image.open(file: file, options: .quiet())
        let report = try #require(rw.checkOnOpen)
        #expect(report.corruptionsFixed == 1 && report.corruptions == 0, "\(report)")
        #expect(try rw.read(at: 4096, count: 4096) == bytes(0, 4096))
        #expect(try rw.read(at: 0, count: 4096) == bytes(0x11, 4096))
        #expect(try rw.read(at: 8192, count: 4096) == bytes(0x11, 4096))
        try rw.close()
        #expect(file.contents[16] & 2 == 0, "NEED_CHECK survived close")
        let reopened = try Image.open(file: file, options: .quiet())
        #expect(reopened.checkOnOpen == nil && !reopened.isDirty)
        try reopened.close()
    }

    /// A double reference cannot be repaired; the image still opens and reads.
    @Test func doubleReferenceIsReportedNotRepaired() throws {
        let file = try Self.makeImage()
        let l2 = Self.l2Entry(file, guestCluster: 1)
        let first = Craft.readLE64(file, at: Self.l2Entry(file, guestCluster: 0))
        try Craft.writeLE64(file, first, at: l2)
        let image = try Image.open(file: file, options: .quiet())
        let report = try image.check(repair: true)
        #expect(report.corruptions == 1 && report.corruptionsFixed == 0, "\(report)")
        #expect(report.leaks + report.leaksFixed == 1, "the orphaned cluster: \(report)")
        #expect(try image.read(at: 4096, count: 4096) == bytes(0x11, 4096))
        try image.close()
    }
}
