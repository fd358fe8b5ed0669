import Foundation
import QED
import TestSupport
import Testing

// Golden tests: the header bytes of created add-cow images, field by field against the table of
// docs/add-cow.md; and one crafted header per validity rule, each refused with its typed error.

/// Little-endian fields of a header read back from disk, named as in docs/add-cow.md.
private struct RawFields {
    let bytes: [UInt8]
    func u32(_ i: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[i + $1]) << (8 * UInt32($1)) } }
    func u64(_ i: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[i + $1]) << (8 * UInt64($1)) } }
    func text(_ i: Int, _ n: Int) -> [UInt8] { Array(bytes[i..<(i + n)]) }
}

/// A 16-byte format field: the name, zero-padded.
private func formatField(_ name: String) -> [UInt8] {
    Array(name.utf8) + [UInt8](repeating: 0, count: 16 - name.utf8.count)
}

struct GoldenCase: Sendable, CustomStringConvertible {
    var clusterSize: UInt64
    /// nil: no backing file; true: absolute name; false: relative name.
    var absoluteBacking: Bool?
    var absoluteImage: Bool
    var description: String {
        let b = absoluteBacking.map { $0 ? "absolute backing" : "relative backing" } ?? "no backing"
        return "\(clusterSize / 1024)K, \(b), \(absoluteImage ? "absolute" : "relative") image"
    }

    static let all: [GoldenCase] = [4096, 65536, 1 << 20, 2 << 20].flatMap { cs in
        [nil, true, false].flatMap { backing in
            [false, true].map { GoldenCase(clusterSize: UInt64(cs), absoluteBacking: backing, absoluteImage: $0) }
        }
    }
}

@Suite("add-cow header")
struct AddCOWHeaderTests {
    @Test("created headers match the specification table field by field", arguments: GoldenCase.all)
    func golden(_ c: GoldenCase) throws {
        let dir = try TemporaryDirectory(prefix: "acow-golden")
        let size: UInt64 = 3 * c.clusterSize + 512
        var backingName: String?
        if let absolute = c.absoluteBacking {
            try Files.createSparse(dir.file("base.raw"), length: size)
            backingName = absolute ? dir.file("base.raw") : "base.raw"
        }
        let imageName = c.absoluteImage ? dir.file("disk.raw") : "disk.raw"
        let path = dir.file("disk.add-cow")
        try AddCOWImage.create(
            path: path,
            options: AddCOWCreateOptions(
                imageFile: imageName, size: backingName == nil ? size : nil, backingFile: backingName,
                clusterSize: c.clusterSize))

        let headerSize = max(4096, c.clusterSize)
        let f = RawFields(bytes: try Files.read(path))
        #expect(f.text(0, 4) == Array("ACOW".utf8), "magic")
        let backingBytes = Array((backingName ?? "").utf8)
        let imageBytes = Array(imageName.utf8)
        if backingName != nil {
            #expect(f.u32(4) == 76, "backing name offset")
            #expect(f.u32(8) == UInt32(backingBytes.count), "backing name size")
            #expect(f.u32(12) == 76 + UInt32(backingBytes.count), "image name offset right after it")
        } else {
            #expect(f.u32(4) == 0 && f.u32(8) == 0, "no backing: offset and size 0")
            #expect(f.u32(12) == 76, "image name offset")
        }
        #expect(f.u32(16) == UInt32(imageBytes.count), "image name size")
        #expect(f.u32(20) == UInt32(c.clusterSize.trailingZeroBitCount), "cluster_bits")
        #expect(f.u64(24) == 0, "incompatible features")
        #expect(f.u64(32) == (backingName == nil ? 1 : 0), "ALL_ALLOCATED exactly without backing")
        #expect(UInt64(f.u32(40)) == headerSize, "HEADER_SIZE = max(4096, cluster size)")
        #expect(f.text(44, 16) == (backingName == nil ? [UInt8](repeating: 0, count: 16) : formatField("raw")))
        #expect(f.text(60, 16) == formatField("raw"), "image file format")
        let names = backingBytes + imageBytes
        #expect(f.text(76, names.count) == names, "names, not NUL-terminated")
        #expect(f.bytes[(76 + names.count)..<Int(headerSize)].allSatisfy { $0 == 0 }, "rest of the name area is 0")
        // Bitmap: all zero, ceil(4 clusters / 8) = 1 byte rounded up to one cluster.
        #expect(UInt64(f.bytes.count) == headerSize + c.clusterSize, "file = header + bitmap in whole clusters")
        #expect(f.bytes[Int(headerSize)...].allSatisfy { $0 == 0 }, "bitmap starts zeroed")
        #expect(try Files.size(dir.file("disk.raw")) == size, "the image file was created with the size")

        let image = try AddCOWImage.open(path: path, options: OpenOptions(readOnly: true))
        defer { try? image.close() }
        #expect(image.header.imageName == imageName)
        #expect(image.header.backingName == backingName)
        #expect(image.virtualSize == size)
    }

    @Test("create keeps an existing image file, takes its size and refuses formats other than raw")
    func existingImageFile() throws {
        let dir = try TemporaryDirectory(prefix: "acow-existing")
        let raw = Array(repeating: UInt8(0xAB), count: 10000)
        _ = FileManager.default.createFile(atPath: dir.file("disk.raw"), contents: Data(raw))
        try AddCOWImage.create(path: dir.file("a.add-cow"), options: AddCOWCreateOptions(imageFile: "disk.raw"))
        let image = try AddCOWImage.open(path: dir.file("a.add-cow"))
        #expect(image.virtualSize == 10000)
        #expect(image.isAllAllocated)
        #expect(try image.readBytes(at: 0, count: 10000) == raw, "the existing data is the disk")
        try image.close()

        var qcow = AddCOWCreateOptions(imageFile: "other.raw", size: 4096)
        qcow.imageFormat = DiskFormat(rawValue: "qcow2")
        #expect(throws: QEDError.self) { try AddCOWImage.create(path: dir.file("b.add-cow"), options: qcow) }
        let wrongSize = AddCOWCreateOptions(imageFile: "disk.raw", size: 4096)
        let error = #expect(throws: QEDError.self) {
            try AddCOWImage.create(path: dir.file("c.add-cow"), options: wrongSize)
        }
        #expect(error?.code == .invalidArgument)
        let same = AddCOWCreateOptions(imageFile: "disk.raw", backingFile: "disk.raw", backingFormat: .raw)
        #expect(throws: QEDError.self) { try AddCOWImage.create(path: dir.file("d.add-cow"), options: same) }
    }

    // MARK: Validity rules

    /// A valid header with a backing file: backing name "b.img" at 76, image name "i.raw" at 81.
    static func validHeader() -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 4096)
        func put32(_ v: UInt32, _ i: Int) { for k in 0..<4 { h[i + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) } }
        h.replaceSubrange(0..<4, with: Array("ACOW".utf8))
        put32(76, 4)
        put32(5, 8)
        put32(81, 12)
        put32(5, 16)
        put32(12, 20)
        put32(4096, 40)
        h.replaceSubrange(44..<60, with: formatField("raw"))
        h.replaceSubrange(60..<76, with: formatField("raw"))
        h.replaceSubrange(76..<86, with: Array("b.imgi.raw".utf8))
        return h
    }

    struct Rule: Sendable, CustomStringConvertible {
        var name: String
        var code: QEDError.Code
        var value: UInt64?
        var patch: @Sendable (inout [UInt8]) -> Void
        var description: String { name }
    }

    static func set32(_ v: UInt32, _ i: Int) -> @Sendable (inout [UInt8]) -> Void {
        { h in for k in 0..<4 { h[i + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) } }
    }

    static let rules: [Rule] = [
        Rule(name: "magic", code: .invalidHeader, value: 0x574F_4341 ^ 0x20, patch: { $0[0] ^= 0x20 }),
        Rule(name: "backing offset below 76", code: .invalidBackingName, value: 75, patch: set32(75, 4)),
        Rule(name: "backing offset past HEADER_SIZE-2", code: .invalidBackingName, value: 4095, patch: set32(4095, 4)),
        Rule(name: "backing size 0 with an offset", code: .invalidBackingName, value: 0, patch: set32(0, 8)),
        Rule(name: "backing size with offset 0", code: .invalidBackingName, value: 5, patch: set32(0, 4)),
        Rule(
            name: "backing size not below HEADER_SIZE-76", code: .invalidBackingName, value: 4020,
            patch: set32(4020, 8)),
        Rule(name: "backing name past HEADER_SIZE", code: .invalidBackingName, value: 4094, patch: set32(4094, 4)),
        Rule(name: "image offset below 76", code: .invalidHeader, value: 0, patch: set32(0, 12)),
        Rule(name: "image size 0", code: .invalidHeader, value: 0, patch: set32(0, 16)),
        Rule(name: "image size not below HEADER_SIZE-76", code: .invalidHeader, value: 4020, patch: set32(4020, 16)),
        Rule(name: "image name past HEADER_SIZE", code: .invalidHeader, value: 4093, patch: set32(4093, 12)),
        Rule(name: "cluster_bits below 12", code: .invalidClusterSize, value: 11, patch: set32(11, 20)),
        Rule(name: "cluster_bits above 21", code: .invalidClusterSize, value: 22, patch: set32(22, 20)),
        Rule(name: "unknown incompatible features", code: .unsupportedFeatures, value: 1 << 40, patch: { $0[29] = 1 }),
        Rule(name: "HEADER_SIZE not max(4096, cluster)", code: .invalidHeader, value: 8192, patch: set32(8192, 40)),
        Rule(
            name: "backing format empty with a backing file", code: .invalidHeader, value: 0,
            patch: { $0.replaceSubrange(44..<60, with: [UInt8](repeating: 0, count: 16)) }),
        Rule(
            name: "backing format without a backing file", code: .invalidHeader, value: 0x0077_6172,
            patch: { h in
                for i in 4..<12 { h[i] = 0 }
                h.replaceSubrange(76..<81, with: [0, 0, 0, 0, 0])
            }),
        Rule(
            name: "backing format not zero-padded", code: .invalidHeader, value: 0x0077_6172, patch: { $0[50] = 0x41 }),
        Rule(
            name: "image format empty", code: .invalidHeader, value: 0,
            patch: { $0.replaceSubrange(60..<76, with: [UInt8](repeating: 0, count: 16)) }),
        Rule(
            name: "image format not raw", code: .unsupported, value: 0x776F_6371,
            patch: { $0.replaceSubrange(60..<76, with: formatField("qcow2")) }),
        Rule(name: "name area byte outside the names", code: .invalidHeader, value: 100, patch: { $0[100] = 1 }),
        Rule(name: "names overlap", code: .invalidHeader, value: 78, patch: set32(78, 12)),
        Rule(name: "NUL in the image name", code: .invalidHeader, value: 81, patch: { $0[83] = 0 }),
        Rule(name: "backing name not UTF-8", code: .invalidBackingName, value: 76, patch: { $0[77] = 0xFF }),
        Rule(
            name: "identical names", code: .invalidHeader, value: 81,
            patch: { $0.replaceSubrange(81..<86, with: Array("b.img".utf8)) }),
    ]

    @Test("each validity rule refuses a crafted header with a typed error", arguments: rules)
    func rule(_ rule: Rule) throws {
        #expect(throws: Never.self, "the unpatched header is valid") { try AddCOWHeader(decoding: Self.validHeader()) }
        var bytes = Self.validHeader()
        rule.patch(&bytes)
        let error = #expect(throws: QEDError.self) { try AddCOWHeader(decoding: bytes) }
        #expect(error?.code == rule.code, "\(rule.name): \(String(describing: error))")
        #expect(error?.value == rule.value, "\(rule.name): value of \(String(describing: error))")
    }

    @Test("a crafted header on disk is refused at open, naming the file")
    func refusedAtOpen() throws {
        let dir = try TemporaryDirectory(prefix: "acow-crafted")
        var bytes = Self.validHeader()
        Self.set32(13, 20)(&bytes)
        _ = FileManager.default.createFile(atPath: dir.file("x.add-cow"), contents: Data(bytes))
        let error = #expect(throws: QEDError.self) {
            try AddCOWImage.open(path: dir.file("x.add-cow"), options: OpenOptions(readOnly: true))
        }
        #expect(error?.code == .invalidHeader)
        #expect(error?.path == dir.file("x.add-cow"))
        // A short file is a truncated header, not a trap.
        _ = FileManager.default.createFile(atPath: dir.file("y.add-cow"), contents: Data(bytes[0..<40]))
        let short = #expect(throws: QEDError.self) {
            try AddCOWImage.open(path: dir.file("y.add-cow"), options: OpenOptions(readOnly: true))
        }
        #expect(short?.code == .truncatedFile)
        // A valid header whose image file is missing.
        _ = FileManager.default.createFile(atPath: dir.file("z.add-cow"), contents: Data(Self.validHeader()))
        let missing = #expect(throws: QEDError.self) {
            try AddCOWImage.open(path: dir.file("z.add-cow"), options: OpenOptions(readOnly: true))
        }
        #expect(missing?.errno == ENOENT, "\(String(describing: missing))")
    }
}
