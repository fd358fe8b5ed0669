import QED
import QEDTools
import TestSupport
import Testing

/// `qemu-img map`'s rows: an engine ``Extent`` plus the layer's file, merged by the extent's rule
/// and, in addition, only within one file.
@Suite("Map rows") struct MapTests {
    private func extent(_ offset: UInt64, _ length: UInt64, host: UInt64?, depth: Int = 0) -> Extent {
        Extent(offset: offset, length: length, depth: depth, present: true, zero: false, data: true, hostOffset: host)
    }

    @Test func rowsMergeByTheExtentRuleWithinOneFile() {
        let a = Map.Row(extent: extent(0, 4096, host: 65536), filename: "a.qed")
        #expect(a.canMerge(with: Map.Row(extent: extent(4096, 4096, host: 69632), filename: "a.qed")))
        // The extents continue each other, the files differ.
        #expect(!a.canMerge(with: Map.Row(extent: extent(4096, 4096, host: 69632), filename: "b.qed")))
        // Same file, host offsets not contiguous.
        #expect(!a.canMerge(with: Map.Row(extent: extent(4096, 4096, host: 131072), filename: "a.qed")))
        // Same file, other layer.
        #expect(!a.canMerge(with: Map.Row(extent: extent(4096, 4096, host: 69632, depth: 1), filename: "a.qed")))
        // An empty row merges with nothing.
        let empty = Map.Row(extent: extent(0, 0, host: 65536), filename: "a.qed")
        #expect(!empty.canMerge(with: Map.Row(extent: extent(0, 4096, host: 65536), filename: "a.qed")))
    }

    @Test func runCoversTheRangeWithMaximalRows() throws {
        let scratch = try TemporaryDirectory(prefix: "qed-map")
        defer { scratch.remove() }
        let path = scratch.file("top.qed")
        try Image.create(path: path, options: CreateOptions(size: 1 << 20, clusterSize: 65536))
        let image = try Image.open(path: path)
        defer { try? image.close() }
        // Two clusters written at once are allocated next to each other: one row.
        let data = [UInt8](repeating: 0xa5, count: 2 * 65536)
        try data.withUnsafeBytes { try image.write($0, at: 4 * 65536) }
        try image.writeZeroes(at: 8 * 65536, length: 65536, unmap: false)

        var options = Map.Options()
        let rows = try Map.run(disk: image, options: options).rows
        var pos: UInt64 = 0
        for (i, row) in rows.enumerated() {
            #expect(row.extent.offset == pos, "row \(i) starts where the previous one ends")
            #expect((row.filename != nil) == (row.extent.hostOffset != nil), "row \(i)")
            if i > 0 { #expect(!rows[i - 1].canMerge(with: row), "rows \(i - 1) and \(i) should have merged") }
            pos += row.extent.length
        }
        #expect(pos == 1 << 20)
        let stored = rows.filter { $0.extent.data }
        #expect(stored.count == 1)
        #expect(stored.first?.extent.offset == 4 * 65536)
        #expect(stored.first?.extent.length == 2 * 65536)
        #expect(stored.first?.filename == path)
        let zeroed = rows.first { $0.extent.offset <= 8 * 65536 && 8 * 65536 < $0.extent.offset + $0.extent.length }
        #expect(zeroed?.extent.zero == true)
        #expect(zeroed?.extent.data == false)

        // A window: clipped to the disk and starting at the given offset.
        options.start = 5 * 65536
        options.length = 64 << 20
        let window = try Map.run(disk: image, options: options).rows
        #expect(window.first?.extent.offset == 5 * 65536)
        #expect(window.first?.extent.hostOffset.map { $0 % 65536 } == 0)
        #expect(window.reduce(0) { $0 + $1.extent.length } == (1 << 20) - 5 * 65536)
    }
}
