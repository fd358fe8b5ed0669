import Foundation
import QED
import TestSupport
import Testing

/// The non-blocking read the NBD server answers small reads with on its event loop: it must return
/// exactly what ``Image/read(into:at:)`` returns, or decline (false) whenever it would need the disk.
@Suite("Read if cached")
struct ReadIfCachedTests {
    /// `count` bytes through the fast path, or nil when it declines. The buffer starts as 0xEE so a
    /// fast path that claims success without filling it is caught.
    static func fast(_ disk: any Disk, at offset: UInt64, count: Int) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0xEE, count: count)
        let ok = buffer.withUnsafeMutableBytes { disk.readIfCached(into: $0, at: offset) }
        return ok ? buffer : nil
    }

    @Test func servesCachedMappingsAndDeclinesUncachedTables() throws {
        let file = MemoryFile()
        try Image.create(on: file, options: CreateOptions(size: 16 << 20, clusterSize: 4096, tableSize: 2))
        let options = OpenOptions.quiet()
        var image = try Image.open(file: file, options: options)
        let data = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        try image.write(data, at: 4096)  // first L2 table (guest 0–4 MiB)
        try image.writeZeroes(at: 65536, length: 4096)  // a zero cluster over nothing
        try image.write(bytes(0x33, 4096), at: 5 << 20)  // second L2 table
        try image.close()

        image = try Image.open(file: file, options: options)
        // Fresh open: no L2 table cached, so anything mapped through one is declined...
        #expect(Self.fast(image, at: 4096, count: 4096) == nil)
        // ...while guest ranges whose L1 entry is empty read as zeroes without any table.
        #expect(Self.fast(image, at: 9 << 20, count: 4096) == bytes(0, 4096))
        // A normal read loads the first table; then its whole range is served, data and zeroes alike.
        _ = try image.read(at: 0, count: 512)
        #expect(Self.fast(image, at: 4096, count: 8192) == data)
        #expect(Self.fast(image, at: 2048, count: 4096) == bytes(0, 2048) + Array(data[0..<2048]))
        #expect(Self.fast(image, at: 65536, count: 4096) == bytes(0, 4096))
        #expect(Self.fast(image, at: 1 << 20, count: 4096) == bytes(0, 4096))
        // The second table is still not cached; a read that spans both tables is declined.
        #expect(Self.fast(image, at: 5 << 20, count: 4096) == nil)
        #expect(Self.fast(image, at: (4 << 20) - 4096, count: 8192) == nil)
        _ = try image.read(at: 5 << 20, count: 1)
        #expect(Self.fast(image, at: 5 << 20, count: 4096) == bytes(0x33, 4096))
        #expect(Self.fast(image, at: (4 << 20) - 4096, count: 8192) == bytes(0, 4096) + bytes(0, 4096))
        // Past the end, overflowing, or closed: declined, never trapped.
        #expect(Self.fast(image, at: (16 << 20) - 512, count: 1024) == nil)
        #expect(Self.fast(image, at: UInt64.max - 10, count: 512) == nil)
        try image.close()
        #expect(Self.fast(image, at: 4096, count: 4096) == nil)
    }

    @Test func agreesWithReadAfterRandomWrites() throws {
        let file = MemoryFile()
        var create = CreateOptions(size: 8 << 20, clusterSize: 4096, tableSize: 1)
        create.allowQEMUIncompatible = true  // table size 1: many small L2 tables
        try Image.create(on: file, options: create)
        let options = OpenOptions.quiet()
        let image = try Image.open(file: file, options: options)
        defer { try? image.close() }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let offset = UInt64.random(in: 0..<(8 << 20) - 16384, using: &rng)
            let count = Int.random(in: 1...16384, using: &rng)
            switch Int.random(in: 0..<3, using: &rng) {
            case 0: try image.write(bytes(UInt8.random(in: 1...255, using: &rng), count), at: offset)
            case 1: try image.writeZeroes(at: offset / 4096 * 4096, length: 8192)
            default: break
            }
            let probe = UInt64.random(in: 0..<(8 << 20) - 16384, using: &rng)
            let expected = try image.read(at: probe, count: count)
            // The normal read cached every table on the way, so the fast path may not decline.
            #expect(Self.fast(image, at: probe, count: count) == expected, "at \(probe), \(count) bytes")
        }
    }

    @Test func backingFilesAreLeftToTheBlockingPath() throws {
        let dir = try TemporaryDirectory()
        try dir.create("base.raw", bytes(0x5A, 1 << 20))
        var create = CreateOptions(size: 1 << 20, clusterSize: 4096, tableSize: 2)
        create.backingFile = "base.raw"
        create.backingFormat = .raw
        try Image.create(path: dir.file("top.qed"), options: create)
        let options = OpenOptions.quiet()
        let image = try openImage(dir.file("top.qed"), options)
        defer { try? image.close() }
        try image.write(bytes(0x11, 4096), at: 8192)
        _ = try image.read(at: 0, count: 1)
        #expect(Self.fast(image, at: 8192, count: 4096) == bytes(0x11, 4096))
        #expect(Self.fast(image, at: 0, count: 4096) == nil, "unallocated clusters read the backing file")
        #expect(try image.read(at: 0, count: 4096) == bytes(0x5A, 4096))
    }

    @Test func posixFilesServeWhatThePageCacheHolds() throws {
        let dir = try TemporaryDirectory()
        let content = (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        try dir.create("plain.raw", content)
        let raw = try RawImage(path: dir.file("plain.raw"), options: OpenOptions(readOnly: true))
        defer { try? raw.close() }
        // Just written, so in the page cache.
        #expect(Self.fast(raw, at: 4096, count: 8192) == Array(content[4096..<12288]))
        #expect(Self.fast(raw, at: 65536 - 100, count: 200) == nil, "reads past the end are declined")
    }
}
