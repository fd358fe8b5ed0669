/// Where an add-cow image's bitmap lies for a given virtual size, with checked arithmetic.
///
/// Units: bytes unless named clusters. The bitmap holds one bit per cluster from byte
/// ``headerSize`` of the metadata file; its length on disk is rounded up to whole clusters.
struct AddCOWLayout: Sendable, Equatable {
    /// Largest in-memory bitmap accepted (bytes): 1 GiB covers 32 PiB at 4 KiB clusters.
    static let maxBitmapBytes: UInt64 = 1 << 30

    let clusterSize: UInt64
    let headerSize: UInt64
    /// Virtual size in bytes (the image file's length).
    let size: UInt64
    /// Clusters of the disk: ceil(size / cluster size).
    let clusters: UInt64
    /// Bytes of the bitmap that hold bits of the disk's clusters: ceil(clusters / 8).
    let bitmapBytes: UInt64
    /// The metadata file's length: header plus the bitmap rounded up to whole clusters.
    let metadataLength: UInt64

    init(clusterSize: UInt64, headerSize: UInt64, size: UInt64) throws {
        guard let rounded = size.roundedUp(toMultipleOf: clusterSize) else {
            throw QEDError(
                .invalidImageSize, "image size \(size) overflows when rounded up to whole clusters", value: size)
        }
        self.clusterSize = clusterSize
        self.headerSize = headerSize
        self.size = size
        clusters = rounded / clusterSize
        bitmapBytes = (clusters + 7) / 8
        guard bitmapBytes <= Self.maxBitmapBytes,
            let bitmapLength = bitmapBytes.roundedUp(toMultipleOf: clusterSize)
        else {
            throw QEDError(
                .invalidImageSize,
                "image size \(size) needs a bitmap of \(bitmapBytes) bytes, more than \(Self.maxBitmapBytes)",
                value: size)
        }
        metadataLength = try headerSize.adding(bitmapLength, or: .invalidImageSize, "add-cow metadata length")
    }

    /// The cluster holding guest byte `offset`.
    func cluster(of offset: UInt64) -> UInt64 { offset / clusterSize }
}

extension AddCOWImage {
    /// The metadata file's length in bytes for a disk of `size` bytes with `clusterSize`-byte
    /// clusters (header area plus the bitmap in whole clusters): what `measure -O add-cow` adds to
    /// the raw image file's size. Throws ``QEDError/Code/invalidClusterSize`` for a cluster size
    /// add-cow does not allow (a power of 2 in 4 KiB … 2 MiB), naming it.
    public static func metadataLength(size: UInt64, clusterSize: UInt64) throws -> UInt64 {
        let bits = UInt32(clusterSize.trailingZeroBitCount)
        guard clusterSize.nonzeroBitCount == 1, AddCOWHeader.clusterBitsRange.contains(bits) else {
            throw QEDError(
                .invalidClusterSize, "add-cow cluster size must be a power of 2 in [4096, 2097152]",
                value: clusterSize)
        }
        let headerSize = UInt64(AddCOWHeader.requiredHeaderSize(clusterBits: bits))
        return try AddCOWLayout(clusterSize: clusterSize, headerSize: headerSize, size: size).metadataLength
    }
}
