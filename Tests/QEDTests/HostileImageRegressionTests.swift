import Foundation
import QED
import QEDTools
import TestSupport
import Testing

/// Reproducers of what hostile images did before the engine refused them, one test each.
@Suite("Hostile images: regressions")
struct HostileImageRegressionTests {
    /// `image_size` 2^64 − 512 passed validation wherever N²·cluster_size does not fit 64 bits,
    /// and a write of the last sector then trapped on overflow (over NBD: one WRITE killed the
    /// server). Now every size above 2^63 − 2^30 is refused at open in QEMU's words (iotest 116),
    /// the error carrying the value (and its debug description naming it).
    @Test(arguments: [(UInt32(2 << 20), UInt32(16)), (4 << 20, 4), (64 << 20, 16), (2 << 20, 8)])
    func sizeNear2To64IsRefusedAtOpen(_ cs: UInt32, _ ts: UInt32) throws {
        for size in [UInt64.max - 511, 1 << 63, Geometry.maxAddressableSize + 512] {
            let header = Header(clusterSize: cs, tableSize: ts, l1TableOffset: UInt64(cs), imageSize: size)
            let file = Craft.file(header, length: 4096)  // the size rule comes before the L1 offset rule
            let error = expectQEDError(.invalidImageSize, "cs=\(cs) ts=\(ts) size=\(size)") {
                try Image.open(file: file, options: .quiet(readOnly: true))
            }
            #expect(error?.value == size)
            #expect(error?.message == "QED image size is invalid", "\(String(describing: error))")
            #expect(error?.debugDescription.contains("value \(size)") == true, "\(String(reflecting: error))")
        }
    }

    /// The largest size still accepted: its last sector writes and reads back (2 MiB clusters,
    /// table_size 8: N²·cs is exactly 2^63, capped to 2^63 − 2^30 as QEMU's block layer does).
    @Test func lastSectorAtTheAddressableLimitWrites() throws {
        let dir = try TemporaryDirectory(prefix: "qed-limit")
        var options = CreateOptions(size: Geometry.maxAddressableSize, clusterSize: 2 << 20, tableSize: 8)
        options.allowQEMUIncompatible = true
        try Image.create(path: dir.file("edge.qed"), options: options)
        let image = try openImage(dir.file("edge.qed"), .quiet())
        let last = Geometry.maxAddressableSize - 512
        try image.write([UInt8](repeating: 0xe5, count: 512), at: last)
        #expect(try image.read(at: last, count: 512) == [UInt8](repeating: 0xe5, count: 512))
        expectQEDError(.outOfRange) { try image.write([1], at: Geometry.maxAddressableSize) }
        #expect(try image.check().isClean)
        try image.close()
    }

    /// `map` asked for 1 GiB at a time, so an empty disk of 2^62 bytes (1 MiB clusters,
    /// table_size 16) took 2^32 calls: a hang. Empty stretches now grow the window.
    @Test func mapOfAHugeEmptyDiskTakesFewCalls() throws {
        let dir = try TemporaryDirectory(prefix: "qed-map")
        try Image.create(
            path: dir.file("huge.qed"), options: CreateOptions(size: 1 << 62, clusterSize: 1 << 20, tableSize: 16))
        let image = try openImage(dir.file("huge.qed"), .quiet(readOnly: true))
        let counting = CountingDisk(image, limit: 1000)
        let map = try mapExtents(counting)
        #expect(map.count == 1 && map[0].length == 1 << 62 && !map[0].data, "\(map)")
        #expect(counting.calls <= 64, "\(counting.calls) extents calls")
        try image.close()
    }

    /// Repair gave back "leaked" clusters at the end of the file even when a table had been
    /// skipped as a double reference, whose entries were never marked: data that table mapped
    /// was truncated away. Now nothing is given back while a corruption remains.
    @Test func repairKeepsClustersMappedByASkippedTable() throws {
        // 4 KiB clusters, table_size 2 (8 KiB tables, an L2 table maps 4 MiB). Layout after one
        // write: header 0, L1 4K–12K, L2 table T0 12K–20K, guest cluster 0 at 20K.
        let file = MemoryFile(path: "skipped.qed")
        try Image.create(on: file, options: CreateOptions(size: 8 << 20, clusterSize: 4096, tableSize: 2))
        let image = try Image.open(file: file, options: .quiet())
        var cluster0 = [UInt8](repeating: 0, count: 4096)
        cluster0.replaceSubrange(0..<8, with: Files.le64(28 << 10))  // read as an entry: → 28K
        try image.write(cluster0, at: 0)
        try image.close()
        #expect(try file.length() == 24 << 10)
        // L1[1] → 16K: a table overlapping T0's second cluster and guest cluster 0's data, whose
        // entry 512 (file bytes 20K..) points at a cluster at 28K that holds 0x77s.
        try file.setLength(32 << 10)
        try file.writeBytes([UInt8](repeating: 0x77, count: 4096), at: 28 << 10)
        try Craft.writeLE64(file, 16 << 10, at: 4096 + 8)
        let guest: UInt64 = (4 << 20) + 512 * 4096

        let repaired = try Image.open(file: file, options: .quiet())
        #expect(try repaired.read(at: guest, count: 4096) == [UInt8](repeating: 0x77, count: 4096))
        let report = try repaired.check(repair: true)
        #expect(report.corruptions > 0 && report.leaksFixed == 0, "\(report)")
        #expect(try file.length() == 32 << 10, "repair truncated clusters a skipped table maps")
        #expect(try repaired.read(at: guest, count: 4096) == [UInt8](repeating: 0x77, count: 4096))
        #expect(try repaired.read(at: 0, count: 8) == Files.le64(28 << 10))
        try repaired.close()
    }
}

/// A disk that counts ``Disk/extents(at:length:)`` calls and fails past `limit` of them, so a
/// regression to one call per GiB fails fast instead of running for hours. Everything else is
/// forwarded to `base`.
final class CountingDisk: Disk, @unchecked Sendable {
    // @unchecked: `calls` is touched by the one test thread that owns this object.
    let base: any Disk
    let limit: Int
    private(set) var calls = 0

    init(_ base: any Disk, limit: Int) {
        self.base = base
        self.limit = limit
    }

    var format: DiskFormat { base.format }
    var path: String { base.path }
    var isReadOnly: Bool { base.isReadOnly }
    var virtualSize: UInt64 { base.virtualSize }
    var backing: (any Disk)? { base.backing }
    var clusterSize: UInt64? { base.clusterSize }
    var isDirty: Bool { base.isDirty }
    var backingFile: BackingFileReference? { base.backingFile }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try base.read(into: buffer, at: offset)
    }
    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool { false }
    func extents(at offset: UInt64, length: UInt64) throws -> [Extent] {
        calls += 1
        if calls > limit { throw QEDError(.unsupported, "more than \(limit) extents calls") }
        return try base.extents(at: offset, length: length)
    }
    func allocatedBytes() -> UInt64? { base.allocatedBytes() }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws { try base.write(bytes, at: offset) }
    func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws {
        try base.writeZeroes(at: offset, length: length, unmap: unmap)
    }
    func discard(at offset: UInt64, length: UInt64) throws { try base.discard(at: offset, length: length) }
    func flush() throws { try base.flush() }
    func resize(to newSize: UInt64) throws { try base.resize(to: newSize) }
    func check(repair: Bool) throws -> CheckReport { try base.check(repair: repair) }
    func close() throws {}
}

/// The whole disk's map rows as extents (qemu-img map's view, merged by ``Extent``'s rule).
func mapExtents(_ disk: any Disk) throws -> [Extent] {
    try Map.run(disk: disk, options: Map.Options()).rows.map(\.extent)
}
