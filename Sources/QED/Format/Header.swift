/// The 64-byte QED header exactly as it lies on disk (little-endian), before any validation.
///
/// Decoding never fails for a 64-byte buffer; ``validate(fileLength:)`` applies QEMU's open-time
/// rules in QEMU's order and yields the ``Geometry`` that all index math uses.
public struct Header: Sendable, Equatable {
    /// Bytes `QED\0`, read as a little-endian 32-bit number.
    public static let magic: UInt32 = 0x0044_4551
    /// Size of the packed structure in bytes.
    public static let encodedSize = 64
    /// QEMU reads backing names into a PATH_MAX buffer; longer names are refused (bytes).
    public static let maxBackingNameLength: UInt32 = 4095

    /// Must equal ``Header/magic``.
    public var magic: UInt32
    /// Cluster size in bytes.
    public var clusterSize: UInt32
    /// L1 and L2 table length, in clusters.
    public var tableSize: UInt32
    /// Clusters occupied by the header and its extra data (backing name) before the first table.
    public var headerSize: UInt32
    /// Incompatible feature bits.
    public var features: FeatureFlags
    /// Compatible feature bits (none defined; unknown ones are ignored).
    public var compatFeatures: UInt64
    /// Self-resetting feature bits (none defined; unknown ones are cleared by read-write opens).
    public var autoclearFeatures: UInt64
    /// Byte offset of the L1 table.
    public var l1TableOffset: UInt64
    /// Guest-visible size in bytes.
    public var imageSize: UInt64
    /// Byte offset of the backing file name; meaningful only with ``FeatureFlags/backingFile``.
    public var backingNameOffset: UInt32
    /// Length of the backing file name in bytes (not NUL-terminated).
    public var backingNameSize: UInt32

    /// A header with every field given; see the field docs for units.
    public init(
        clusterSize: UInt32, tableSize: UInt32, headerSize: UInt32 = 1, features: FeatureFlags = [],
        compatFeatures: UInt64 = 0, autoclearFeatures: UInt64 = 0, l1TableOffset: UInt64, imageSize: UInt64,
        backingNameOffset: UInt32 = 0, backingNameSize: UInt32 = 0, magic: UInt32 = Header.magic
    ) {
        self.magic = magic
        self.clusterSize = clusterSize
        self.tableSize = tableSize
        self.headerSize = headerSize
        self.features = features
        self.compatFeatures = compatFeatures
        self.autoclearFeatures = autoclearFeatures
        self.l1TableOffset = l1TableOffset
        self.imageSize = imageSize
        self.backingNameOffset = backingNameOffset
        self.backingNameSize = backingNameSize
    }

    /// Decodes the first 64 bytes of `bytes`; throws ``QEDError/Code/truncatedFile`` if shorter.
    public init(decoding bytes: some Collection<UInt8>) throws(QEDError) {
        guard bytes.count >= Header.encodedSize else {
            throw QEDError(
                .truncatedFile, "Failed to read QED header: file is shorter than 64 bytes",
                value: UInt64(bytes.count))
        }
        let b = Array(bytes.prefix(Header.encodedSize))
        func u32(_ at: Int) -> UInt32 {
            UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
        }
        func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) | UInt64(u32(at + 4)) << 32 }
        self.init(
            clusterSize: u32(4), tableSize: u32(8), headerSize: u32(12),
            features: FeatureFlags(rawValue: u64(16)), compatFeatures: u64(24), autoclearFeatures: u64(32),
            l1TableOffset: u64(40), imageSize: u64(48), backingNameOffset: u32(56), backingNameSize: u32(60),
            magic: u32(0))
    }

    /// The 64 on-disk bytes of this header.
    public func encoded() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Header.encodedSize)
        func put32(_ v: UInt32) { for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        func put64(_ v: UInt64) { for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        put32(magic)
        put32(clusterSize)
        put32(tableSize)
        put32(headerSize)
        put64(features.rawValue)
        put64(compatFeatures)
        put64(autoclearFeatures)
        put64(l1TableOffset)
        put64(imageSize)
        put32(backingNameOffset)
        put32(backingNameSize)
        return out
    }

    /// Whether the header names a backing file.
    public var hasBackingFile: Bool { features.contains(.backingFile) }

    /// Applies the open-time validity rules of QEMU's `bdrv_qed_do_open`, in its order, with
    /// overflow-checked arithmetic. `fileLength` is the image file's length in bytes.
    ///
    /// Deliberate differences from QEMU: table_size 1 is accepted (QEMU's overflow guard wrongly
    /// rejects every such image), `header_size` 0 is refused (its L1 could overlap the header), and
    /// the maximum image size is computed without wrapping; like QEMU's block layer, sizes above
    /// ``Geometry/maxAddressableSize`` are refused.
    public func validate(fileLength: UInt64) throws(QEDError) -> Geometry {
        guard magic == Header.magic else {
            throw QEDError(.notQED, "Image not in QED format", value: UInt64(magic))
        }
        let unknown = features.rawValue & ~FeatureFlags.known.rawValue
        guard unknown == 0 else {
            throw QEDError(
                .unsupportedFeatures, "Unsupported QED features: \(String(unknown, radix: 16))",
                value: unknown)
        }
        guard Geometry.isValidClusterSize(UInt64(clusterSize)) else {
            throw QEDError(.invalidClusterSize, "QED cluster size is invalid", value: UInt64(clusterSize))
        }
        guard Geometry.isValidTableSize(UInt64(tableSize)) else {
            throw QEDError(.invalidTableSize, "QED table size is invalid", value: UInt64(tableSize))
        }
        let geometry = Geometry(clusterSize: clusterSize, tableSize: tableSize, headerSize: headerSize)
        guard imageSize % 512 == 0 else {
            // QEMU's words; the value says which size.
            throw QEDError(.invalidImageSize, "QED image size is invalid", value: imageSize)
        }
        guard imageSize <= geometry.maxImageSize else {
            // Also above what this engine addresses (Geometry.maxAddressableSize): QEMU's words.
            throw QEDError(.invalidImageSize, "QED image size is invalid", value: imageSize)
        }
        let fileSize = fileLength.roundedDown(toMultipleOf: geometry.clusterSize)
        guard geometry.isValidTableOffset(l1TableOffset, fileSize: fileSize) else {
            throw QEDError(.invalidTableOffset, "QED table offset is invalid", value: l1TableOffset)
        }
        // After the table offset, as in QEMU (a huge header_size makes that offset invalid first).
        guard headerSize >= 1, UInt64(headerSize) <= UInt64(UInt32.max) / UInt64(clusterSize) else {
            throw QEDError(.headerSizeTooLarge, "QED header size is too large", value: UInt64(headerSize))
        }
        if hasBackingFile {
            let end = UInt64(backingNameOffset) + UInt64(backingNameSize)
            guard end <= geometry.headerBytes else {
                throw QEDError(
                    .invalidBackingName, "QED backing filename offset is invalid",
                    value: UInt64(backingNameOffset))
            }
            guard backingNameSize <= Header.maxBackingNameLength else {
                throw QEDError(.invalidBackingName, "QED backing filename is too long", value: UInt64(backingNameSize))
            }
        }
        return geometry
    }
}
