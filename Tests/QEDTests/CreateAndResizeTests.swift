import Foundation
import QED
import TestSupport
import Testing

@Suite("Create and resize: refusals and layout")
struct CreateAndResizeTests {
    @Test func createLayoutMatchesQEMU() throws {
        // qemu-img create -f qed x 1G: header cluster, zeroed 4-cluster L1 at 64 KiB, 327680 bytes.
        let file = MemoryFile()
        try Image.create(on: file, options: CreateOptions(size: 1 << 30))
        let c = file.contents
        #expect(c.count == 327_680)
        #expect(Array(c[0..<4]) == [0x51, 0x45, 0x44, 0x00])
        let h = try Header(decoding: c.prefix(64))
        #expect(h == Header(clusterSize: 65536, tableSize: 4, headerSize: 1, l1TableOffset: 65536, imageSize: 1 << 30))
        #expect(c[64...].allSatisfy { $0 == 0 })
    }

    @Test func createRecordsBackingNameAndRawFlag() throws {
        let file = MemoryFile(path: "/nonexistent-dir/top.qed")
        var options = CreateOptions(size: 1 << 20, clusterSize: 4096, tableSize: 2)
        options.backingFile = "base.raw"
        options.backingFormat = .raw
        try Image.create(on: file, options: options)
        let h = try Header(decoding: file.contents.prefix(64))
        #expect(h.features == [.backingFile, .backingFormatNoProbe])
        #expect(h.backingNameOffset == 64 && h.backingNameSize == 8)
        #expect(Array(file.contents[64..<72]) == Array("base.raw".utf8))
        #expect(file.contents.count == 3 * 4096)
        options.backingFormat = .qed
        try Image.create(on: file, options: options)
        #expect(try Header(decoding: file.contents.prefix(64)).features == [.backingFile])
    }

    @Test func createRefusesTableSizeOneByDefault() throws {
        let error = try #require(
            expectQEDError(.invalidArgument) {
                try Image.create(on: MemoryFile(), options: CreateOptions(size: 1 << 20, tableSize: 1))
            })
        #expect(error.message.contains("QEMU"), "\(error.message)")
        var options = CreateOptions(size: 1 << 20, clusterSize: 4096, tableSize: 1)
        options.allowQEMUIncompatible = true
        let file = MemoryFile()
        try Image.create(on: file, options: options)
        let image = try Image.open(file: file)
        try image.write(bytes(3, 10), at: 5)
        #expect(try image.read(at: 0, count: 16) == bytes(0, 5) + bytes(3, 10) + [0])
        #expect(image.currentHeader.tableSize == 1)
        try image.close()
    }

    @Test(arguments: [(UInt32(4 << 20), UInt32(4)), (2 << 20, 16), (64 << 20, 2)])
    func createRefusesQEMUOverflowGeometry(_ cs: UInt32, _ ts: UInt32) throws {
        let geometry = Geometry(clusterSize: cs, tableSize: ts)
        #expect(geometry.qemuMaxImageSize == 0)
        let error = try #require(
            expectQEDError(.invalidImageSize) {
                try Image.create(
                    on: MemoryFile(), options: CreateOptions(size: 1 << 30, clusterSize: cs, tableSize: ts))
            })
        #expect(error.message.contains("QEMU"), "\(error.message)")
    }

    @Test func overflowGeometryAllowedOnRequest() throws {
        var options = CreateOptions(size: 1 << 30, clusterSize: 4 << 20, tableSize: 4)
        options.allowQEMUIncompatible = true
        let dir = try TemporaryDirectory()  // a sparse file: 4 MiB clusters and 16 MiB tables
        try Image.create(path: dir.file("big.qed"), options: options)
        let image = try openImage(dir.file("big.qed"))
        try image.write(bytes(0xab, 300), at: (1 << 30) - 300)
        #expect(try image.read(at: (1 << 30) - 300, count: 300) == bytes(0xab, 300))
        try image.close()
    }

    @Test(arguments: [
        (UInt32(2048), UInt32(4), QEDError.Code.invalidClusterSize), (65536 + 4096, 4, .invalidClusterSize),
        (128 << 20, 4, .invalidClusterSize), (65536, 0, .invalidTableSize), (65536, 3, .invalidTableSize),
        (65536, 32, .invalidTableSize),
    ])
    func createRefusesBadGeometry(_ cs: UInt32, _ ts: UInt32, _ code: QEDError.Code) {
        expectQEDError(code) {
            try Image.create(on: MemoryFile(), options: CreateOptions(size: 1 << 20, clusterSize: cs, tableSize: ts))
        }
    }

    @Test func createRefusesBadSizes() {
        expectQEDError(.invalidImageSize, "not a multiple of 512") {
            try Image.create(on: MemoryFile(), options: CreateOptions(size: 1000))
        }
        expectQEDError(.invalidImageSize, "past the maximum") {
            try Image.create(
                on: MemoryFile(), options: CreateOptions(size: (16 << 30) + 512, clusterSize: 4096, tableSize: 4))
        }
        expectQEDError(.invalidArgument, "no size and no backing file") {
            try Image.create(on: MemoryFile(), options: CreateOptions())
        }
    }

    @Test func createRefusesNonRegularFile() throws {
        expectQEDError(.notRegularFile) { try Image.create(path: "/dev/null", options: CreateOptions(size: 1 << 20)) }
        let dir = try TemporaryDirectory()
        expectQEDError(.notRegularFile, "a directory") {
            try Image.create(path: dir.path, options: CreateOptions(size: 1 << 20))
        }
        expectQEDError(.notRegularFile, "open /dev/null") {
            try Image.open(path: "/dev/null", options: OpenOptions(readOnly: true))
        }
    }

    @Test func createTakesSizeFromBacking() throws {
        let dir = try TemporaryDirectory()
        try dir.create("base.raw", bytes(1, 200 * 512))
        var options = CreateOptions(clusterSize: 4096)
        options.backingFile = "base.raw"
        options.backingFormat = .raw
        try Image.create(path: dir.file("top.qed"), options: options)
        let image = try openImage(dir.file("top.qed"), OpenOptions(readOnly: true))
        #expect(image.virtualSize == 200 * 512)
        try image.close()
    }

    @Test func resizeRules() throws {
        let file = MemoryFile()
        try Image.create(on: file, options: CreateOptions(size: 1 << 20, clusterSize: 4096, tableSize: 4))
        let image = try Image.open(file: file)
        try image.write(bytes(0x21, 1000), at: (1 << 20) - 1000)
        expectQEDError(.unsupported, "shrink") { try image.resize(to: (1 << 20) - 512) }
        expectQEDError(.invalidImageSize, "not a multiple of 512") { try image.resize(to: (1 << 20) + 100) }
        expectQEDError(.invalidImageSize, "past the maximum") { try image.resize(to: (16 << 30) + 512) }
        #expect(image.virtualSize == 1 << 20)
        try image.resize(to: 3 << 20)
        #expect(image.virtualSize == 3 << 20)
        #expect(try image.read(at: (1 << 20) - 1000, count: 1000) == bytes(0x21, 1000))
        // The tail of the last old cluster and the new space read zeroes.
        #expect(try image.read(at: 1 << 20, count: 8192) == bytes(0, 8192))
        try image.write(bytes(0x22, 10), at: (3 << 20) - 10)
        expectQEDError(.outOfRange) { try image.write(bytes(0x22, 10), at: (3 << 20) - 5) }
        try image.close()
        let again = try Image.open(file: file, options: OpenOptions(readOnly: true))
        #expect(again.virtualSize == 3 << 20)
        #expect(try again.read(at: (3 << 20) - 10, count: 10) == bytes(0x22, 10))
        expectQEDError(.readOnly) { try again.resize(to: 4 << 20) }
        try again.close()
    }

    @Test func outOfRangeAndClosedRequests() throws {
        let file = MemoryFile()
        try Image.create(on: file, options: CreateOptions(size: 1 << 20, clusterSize: 4096))
        let image = try Image.open(file: file)
        expectQEDError(.outOfRange) { try image.read(at: (1 << 20) - 1, count: 2) }
        expectQEDError(.outOfRange) { try image.read(at: UInt64.max - 1, count: 4) }
        expectQEDError(.outOfRange) { try image.writeZeroes(at: 1 << 20, length: 1) }
        expectQEDError(.outOfRange) { try image.discard(at: 0, length: (1 << 20) + 4096) }
        try image.close()
        expectQEDError(.closed) { try image.read(at: 0, count: 1) }
    }
}
