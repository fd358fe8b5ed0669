/// The header of an add-cow metadata file (docs/add-cow.md): 76 fixed bytes, then the name area up
/// to ``headerSize``, where the COW bitmap starts. All integers little-endian.
///
/// ``init(decoding:)`` enforces every rule of the header table; each violation is a typed
/// ``QEDError`` naming the field and its value. ``encoded()`` writes the whole header area
/// (``headerSize`` bytes), names included.
public struct AddCOWHeader: Sendable, Equatable {
    /// `ACOW`.
    public static let magic: [UInt8] = [0x41, 0x43, 0x4F, 0x57]
    /// Bytes of the fixed fields; the name area starts here.
    public static let fixedSize = 76
    /// Smallest and largest accepted `cluster_bits` (4 KiB ... 2 MiB clusters).
    public static let clusterBitsRange: ClosedRange<UInt32> = 12...21
    /// Compatible feature bit 0: the image file alone is the disk (bitmap and backing file unused).
    public static let allAllocatedBit: UInt64 = 1
    /// Byte offset of the compatible-features field (8 bytes, little-endian).
    public static let compatibleFeaturesOffset: UInt64 = 32
    /// Bytes of each format-name field.
    static let formatFieldSize = 16

    /// The backing file name as stored, or nil (offset and size 0).
    public var backingName: String?
    /// The backing file's format name (bytes 44–59); nil exactly when there is no backing file.
    public var backingFormat: String?
    /// The image file name as stored (relative names resolve against the metadata file's directory).
    public var imageName: String
    /// The image file's format name (bytes 60–75); always `raw` for images this engine opens.
    public var imageFormat: String
    /// log2 of the cluster size in bytes.
    public var clusterBits: UInt32
    /// Incompatible features (bytes 24–31); none are defined.
    public var features: UInt64
    /// Compatible features (bytes 32–39): ``allAllocatedBit``; unknown bits are ignored.
    public var compatibleFeatures: UInt64
    /// Bytes of the header area; the bitmap starts at this offset.
    public var headerSize: UInt32
    /// Byte offsets of the names in the file (0 for a missing backing name).
    public var backingNameOffset: UInt32
    /// Byte offset of the image file name.
    public var imageNameOffset: UInt32

    /// Cluster size in bytes.
    public var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    /// Whether ALL_ALLOCATED is set.
    public var isAllAllocated: Bool { compatibleFeatures & Self.allAllocatedBit != 0 }

    /// The header size this engine requires and writes for `clusterBits`: max(4096, cluster size).
    public static func requiredHeaderSize(clusterBits: UInt32) -> UInt32 {
        max(4096, UInt32(1) << min(clusterBits, 31))
    }

    /// A header for a new image, with the names laid out from byte 76 (backing name first).
    /// Throws for names or formats that do not fit (see ``validateNew()``).
    public init(
        imageName: String, imageFormat: String = "raw", backingName: String?, backingFormat: String?,
        clusterBits: UInt32, allAllocated: Bool
    ) throws {
        self.imageName = imageName
        self.imageFormat = imageFormat
        self.backingName = backingName
        self.backingFormat = backingFormat
        self.clusterBits = clusterBits
        features = 0
        compatibleFeatures = allAllocated ? Self.allAllocatedBit : 0
        headerSize = Self.requiredHeaderSize(clusterBits: clusterBits)
        let backingBytes = UInt32(clamping: backingName?.utf8.count ?? 0)
        backingNameOffset = backingName == nil ? 0 : UInt32(Self.fixedSize)
        imageNameOffset = UInt32(Self.fixedSize) + backingBytes
        try validateNew()
    }

    /// Checks a header built for creation by re-decoding its encoding: the same rules as for
    /// headers read from disk.
    func validateNew() throws {
        guard Self.clusterBitsRange.contains(clusterBits) else {
            throw QEDError(
                .invalidClusterSize, "add-cow cluster size must be a power of 2 in [4096, 2097152]",
                value: clusterSize)
        }
        let names = UInt64(backingName?.utf8.count ?? 0) + UInt64(imageName.utf8.count)
        guard UInt64(Self.fixedSize) + names <= UInt64(headerSize) else {
            throw QEDError(
                .noSpace, "file names of \(names) bytes do not fit the add-cow header of \(headerSize) bytes",
                value: names)
        }
        _ = try AddCOWHeader(decoding: encoded())
    }

    // MARK: Encoding

    /// The header area: ``headerSize`` bytes.
    public func encoded() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(headerSize))
        out.replaceSubrange(0..<4, with: Self.magic)
        let backingBytes = Array((backingName ?? "").utf8)
        let imageBytes = Array(imageName.utf8)
        Self.put32(backingNameOffset, at: 4, in: &out)
        Self.put32(UInt32(clamping: backingBytes.count), at: 8, in: &out)
        Self.put32(imageNameOffset, at: 12, in: &out)
        Self.put32(UInt32(clamping: imageBytes.count), at: 16, in: &out)
        Self.put32(clusterBits, at: 20, in: &out)
        Self.put64(features, at: 24, in: &out)
        Self.put64(compatibleFeatures, at: Int(Self.compatibleFeaturesOffset), in: &out)
        Self.put32(headerSize, at: 40, in: &out)
        Self.putFormat(backingFormat ?? "", at: 44, in: &out)
        Self.putFormat(imageFormat, at: 60, in: &out)
        Self.putName(backingBytes, at: Int(backingNameOffset), in: &out)
        Self.putName(imageBytes, at: Int(imageNameOffset), in: &out)
        return out
    }

    private static func put32(_ v: UInt32, at i: Int, in out: inout [UInt8]) {
        for k in 0..<4 { out[i + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
    }

    private static func put64(_ v: UInt64, at i: Int, in out: inout [UInt8]) {
        for k in 0..<8 { out[i + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
    }

    private static func putFormat(_ name: String, at i: Int, in out: inout [UInt8]) {
        for (k, b) in name.utf8.prefix(formatFieldSize).enumerated() { out[i + k] = b }
    }

    private static func putName(_ bytes: [UInt8], at i: Int, in out: inout [UInt8]) {
        guard !bytes.isEmpty, i >= 0, i + bytes.count <= out.count else { return }
        out.replaceSubrange(i..<(i + bytes.count), with: bytes)
    }

    // MARK: Decoding

    /// The header size field of a file's first ``fixedSize`` bytes, checked against the rules that
    /// need no other field but the cluster bits (so the caller knows how much to read).
    public static func headerSize(decodingFixed bytes: [UInt8]) throws -> UInt32 {
        guard bytes.count >= fixedSize else {
            throw QEDError(
                .truncatedFile, "add-cow header needs \(fixedSize) bytes, the file has \(bytes.count)",
                value: UInt64(bytes.count))
        }
        guard Array(bytes[0..<4]) == magic else {
            throw QEDError(
                .invalidHeader, "magic is not 'ACOW': not an add-cow file", value: UInt64(read32(bytes, 0)))
        }
        let features = read64(bytes, 24)
        guard features == 0 else {
            throw QEDError(
                .unsupportedFeatures, "add-cow features has unknown incompatible bits 0x\(String(features, radix: 16))",
                value: features)
        }
        let clusterBits = read32(bytes, 20)
        guard clusterBitsRange.contains(clusterBits) else {
            throw QEDError(
                .invalidClusterSize, "add-cow cluster_bits \(clusterBits) is outside [12, 21]",
                value: UInt64(clusterBits))
        }
        let headerSize = read32(bytes, 40)
        let required = requiredHeaderSize(clusterBits: clusterBits)
        guard headerSize == required else {
            throw QEDError(
                .invalidHeader,
                "add-cow HEADER_SIZE \(headerSize) must be max(4096, cluster size) = \(required)",
                value: UInt64(headerSize))
        }
        return headerSize
    }

    /// Decodes and validates a whole header area (at least ``headerSize`` bytes).
    public init(decoding bytes: [UInt8]) throws {
        headerSize = try Self.headerSize(decodingFixed: bytes)
        let size = Int(headerSize)
        guard bytes.count >= size else {
            throw QEDError(
                .truncatedFile, "add-cow header area is \(headerSize) bytes, the file has \(bytes.count)",
                value: UInt64(bytes.count))
        }
        clusterBits = Self.read32(bytes, 20)
        features = 0
        compatibleFeatures = Self.read64(bytes, 32)

        imageFormat = try Self.format(bytes, at: 60, field: "image file format") ?? ""
        guard !imageFormat.isEmpty else {
            throw QEDError(.invalidHeader, "add-cow image file format (bytes 60-75) is empty", value: 0)
        }
        guard imageFormat == "raw" else {
            throw QEDError(
                .unsupported, "add-cow image file format '\(imageFormat)' is not supported: only raw",
                value: UInt64(Self.read32(bytes, 60)))
        }
        backingFormat = try Self.format(bytes, at: 44, field: "backing file format")

        let limit = UInt64(headerSize)
        let nameArea = Self.fixedSize
        let bOffset = Self.read32(bytes, 4)
        let bSize = Self.read32(bytes, 8)
        backingNameOffset = bOffset
        var backing: Range<Int>?
        if bOffset == 0 {
            guard bSize == 0 else {
                throw QEDError(
                    .invalidBackingName, "backing file name size is \(bSize) but its offset is 0",
                    value: UInt64(bSize))
            }
            guard backingFormat == nil else {
                throw QEDError(
                    .invalidHeader, "backing file format '\(backingFormat ?? "")' is set without a backing file",
                    value: UInt64(Self.read32(bytes, 44)))
            }
        } else {
            backing = try Self.nameRange(
                offset: bOffset, size: bSize, limit: limit, field: "backing file name", code: .invalidBackingName)
            guard backingFormat != nil else {
                throw QEDError(
                    .invalidHeader, "backing file format (bytes 44-59) is empty but a backing file is named",
                    value: 0)
            }
        }
        let iOffset = Self.read32(bytes, 12)
        let iSize = Self.read32(bytes, 16)
        imageNameOffset = iOffset
        let image = try Self.nameRange(
            offset: iOffset, size: iSize, limit: limit, field: "image file name", code: .invalidHeader)
        if let backing, backing.overlaps(image) {
            throw QEDError(
                .invalidHeader,
                "image file name at \(iOffset) overlaps the backing file name at \(bOffset)",
                value: UInt64(iOffset))
        }
        for i in nameArea..<size where bytes[i] != 0 && !image.contains(i) && !(backing?.contains(i) ?? false) {
            throw QEDError(
                .invalidHeader, "name area byte \(i) is 0x\(String(bytes[i], radix: 16)), not part of a name and not 0",
                value: UInt64(i))
        }
        imageName = try Self.name(bytes[image], field: "image file name", code: .invalidHeader, offset: iOffset)
        if let backing {
            let name = try Self.name(
                bytes[backing], field: "backing file name", code: .invalidBackingName, offset: bOffset)
            guard name != imageName else {
                throw QEDError(
                    .invalidHeader, "the image file and the backing file have the same name '\(name)'",
                    value: UInt64(iOffset))
            }
            backingName = name
        } else {
            backingName = nil
        }
    }

    /// The byte range of a name, checked against the name-area rules.
    private static func nameRange(
        offset: UInt32, size: UInt32, limit: UInt64, field: String, code: QEDError.Code
    ) throws -> Range<Int> {
        guard UInt64(offset) >= UInt64(fixedSize), UInt64(offset) + 2 <= limit else {
            throw QEDError(
                code, "\(field) offset \(offset) is outside [\(fixedSize), \(limit - 2)]", value: UInt64(offset))
        }
        guard size > 0 else { throw QEDError(code, "\(field) size is 0", value: 0) }
        guard UInt64(size) < limit - UInt64(fixedSize) else {
            throw QEDError(
                code, "\(field) size \(size) is not below HEADER_SIZE - 76 = \(limit - UInt64(fixedSize))",
                value: UInt64(size))
        }
        let end = UInt64(offset) + UInt64(size)
        guard end <= limit else {
            throw QEDError(
                code, "\(field) ends at \(end), past HEADER_SIZE \(limit)", value: UInt64(offset))
        }
        return Int(offset)..<Int(end)
    }

    /// A name's bytes as a string: no NUL, valid UTF-8.
    private static func name(
        _ raw: ArraySlice<UInt8>, field: String, code: QEDError.Code, offset: UInt32
    ) throws -> String {
        guard !raw.contains(0), let text = String(validating: raw, as: UTF8.self) else {
            throw QEDError(code, "\(field) at \(offset) contains a NUL byte or is not UTF-8", value: UInt64(offset))
        }
        return text
    }

    /// A 16-byte format field: printable ASCII, zero-padded on the right; nil when all zero.
    private static func format(_ bytes: [UInt8], at i: Int, field: String) throws -> String? {
        let raw = bytes[i..<(i + formatFieldSize)]
        let length = raw.firstIndex(of: 0).map { $0 - i } ?? formatFieldSize
        let text = raw.prefix(length)
        guard text.allSatisfy({ (0x21...0x7E).contains($0) }), raw.dropFirst(length).allSatisfy({ $0 == 0 }) else {
            throw QEDError(
                .invalidHeader, "\(field) (bytes \(i)-\(i + 15)) is not ASCII padded with zeroes",
                value: UInt64(read32(bytes, i)))
        }
        return length == 0 ? nil : String(decoding: text, as: UTF8.self)
    }

    static func read32(_ b: [UInt8], _ i: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(b[i + $1]) << (8 * UInt32($1)) }
    }

    static func read64(_ b: [UInt8], _ i: Int) -> UInt64 {
        (0..<8).reduce(0) { $0 | UInt64(b[i + $1]) << (8 * UInt64($1)) }
    }
}
