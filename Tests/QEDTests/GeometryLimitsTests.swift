import QED
import TestSupport
import Testing

/// Every geometry at the edge of what it can address: cluster sizes 4 KiB…64 MiB × table sizes
/// 1…16, each at its maximum image size and at crafted sizes up to 2^64 − 512. Opening either
/// fails with ``QEDError/Code/invalidImageSize`` or the first and last sector read and write, the
/// whole disk maps and the check is clean. A trap here kills the test process.
///
/// The images are sparse files (a 64 MiB × 16 table is 1 GiB of file but no disk space). The
/// cases run one at a time: the largest geometry holds three 1 GiB tables in memory (L1, one
/// cached L2, the check's scratch table), as QEMU would.
@Suite("Hostile images: geometry limits")
struct GeometryLimitsTests {
    static let clusterSizes: [UInt32] = (12...26).map { UInt32(1) << $0 }
    static let tableSizes: [UInt32] = [1, 2, 4, 8, 16]

    /// Sizes a hostile header may carry: the extremes of 64 bits and of the engine's range.
    static func craftedSizes(_ g: Geometry) -> [UInt64] {
        var sizes: [UInt64] = [UInt64.max - 511, 1 << 63, (1 << 63) - 512, Geometry.maxAddressableSize + 512]
        if g.tablesMaxImageSize < UInt64.max - 512 { sizes.append(g.tablesMaxImageSize + 512) }
        return sizes
    }

    @Test(.serialized, arguments: clusterSizes)
    func everyTableSizeAtItsLimits(_ cs: UInt32) throws {
        for ts in Self.tableSizes {
            let dir = try TemporaryDirectory(prefix: "qed-limits")
            let path = dir.file("limit.qed")
            let g = Geometry(clusterSize: cs, tableSize: ts)
            #expect(g.maxImageSize <= Geometry.maxAddressableSize && g.maxImageSize % 512 == 0)
            #expect(g.maxImageSize == min(g.tablesMaxImageSize, Geometry.maxAddressableSize))
            // In range: the maximum, and a size whose last sector is in the middle of a cluster.
            for size in [g.maxImageSize, (g.maxImageSize / 3) & ~511] where size > 0 {
                var options = CreateOptions(size: size, clusterSize: cs, tableSize: ts)
                options.allowQEMUIncompatible = true
                try Image.create(path: path, options: options)
                try exerciseWholeDisk(path, g, "cs=\(cs) ts=\(ts) size=\(size) (maximum \(g.maxImageSize))")
            }
            // Out of range: refused at open, read-only or not, with the size named.
            for size in Self.craftedSizes(g) {
                #expect(size > g.maxImageSize)
                try Files.writeU64(path, size, at: 48)
                let label = "cs=\(cs) ts=\(ts) size=\(size)"
                let error = expectQEDError(.invalidImageSize, label) { try openImage(path) }
                #expect(error?.value == size, "the error names the size: \(String(describing: error))")
                expectQEDError(.invalidImageSize, label + " read-only") {
                    try openImage(path, OpenOptions(readOnly: true))
                }
            }
            dir.remove()
        }
    }

    /// Opens the image read-write and writes, reads back, maps and checks its first and last sector.
    private func exerciseWholeDisk(_ path: String, _ g: Geometry, _ label: String) throws {
        var options = OpenOptions()
        options.needCheckDelay = 3600
        options.ignoreFlushes = true
        let image = try openImage(path, options)
        let size = image.virtualSize
        let last = size - 512
        let head = [UInt8](repeating: 0xa1, count: 512), tail = [UInt8](repeating: 0x5e, count: 512)
        #expect(try image.read(at: 0, count: 512) == [UInt8](repeating: 0, count: 512), "\(label)")
        #expect(try image.read(at: last, count: 512) == [UInt8](repeating: 0, count: 512), "\(label)")
        try image.write(head, at: 0)
        try image.write(tail, at: last)
        #expect(try image.read(at: 0, count: 512) == head, "\(label)")
        #expect(try image.read(at: last, count: 512) == tail, "\(label)")
        expectQEDError(.outOfRange, label) { try image.write(tail, at: last + 512) }
        expectQEDError(.outOfRange, label) { try image.read(at: UInt64.max - 511, count: 512) }

        let map = try mapExtents(image)
        #expect(
            map.first?.offset == 0 && map.last.map { $0.offset + $0.length } == size, "\(label): map covers the disk")
        let data = map.filter(\.data).map(\.length).reduce(0, +)
        // The clusters of the two writes are the only data, clipped at the end of the disk.
        let written = Set([0, last >> g.clusterBits]).map { min(g.clusterSize, size - ($0 << g.clusterBits)) }
        #expect(data == written.reduce(0, +), "\(label): data \(data) bytes, expected \(written)")

        let report = try image.check()
        #expect(report.isClean && report.corruptions == 0, "\(label): \(report)")
        #expect(report.totalClusters == g.clusters(coveringBytes: size), "\(label)")
        try image.close()
    }
}
