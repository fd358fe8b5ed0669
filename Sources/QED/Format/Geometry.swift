/// The index math of one image: cluster and table sizes and everything derived from them.
///
/// Units are stated per member: "bytes" or "clusters" or "entries". All members are derived from
/// validated header fields, so they never overflow (a validated cluster size is at most 2^26 and a
/// table holds at most 16 clusters, so a table is at most 2^30 bytes and an L2 table maps at most
/// 2^53 bytes). The guest offsets passed in must be below ``maxImageSize``.
public struct Geometry: Sendable, Equatable {
    /// Smallest allowed cluster size, bytes.
    public static let minClusterSize: UInt64 = 4096
    /// Largest allowed cluster size, bytes (64 MiB).
    public static let maxClusterSize: UInt64 = 64 << 20
    /// Largest allowed table size, clusters.
    public static let maxTableSize: UInt64 = 16

    /// Cluster size in bytes (a power of two).
    public let clusterSize: UInt64
    /// log2(clusterSize).
    public let clusterBits: UInt64
    /// Table length in clusters (a power of two, 1...16).
    public let tableSize: UInt64
    /// Header area in clusters.
    public let headerSize: UInt64
    /// Entries per L1 or L2 table (tableSize·clusterSize/8).
    public let entriesPerTable: UInt64
    /// log2(entriesPerTable).
    public let entryBits: UInt64

    /// Builds the geometry; arguments must already be valid (see ``Header/validate(fileLength:)``).
    public init(clusterSize: UInt32, tableSize: UInt32, headerSize: UInt32 = 1) {
        self.clusterSize = UInt64(clusterSize)
        clusterBits = UInt64(clusterSize.trailingZeroBitCount)
        self.tableSize = UInt64(tableSize)
        self.headerSize = UInt64(headerSize)
        entriesPerTable = UInt64(tableSize) * UInt64(clusterSize) / 8
        entryBits = UInt64(entriesPerTable.trailingZeroBitCount)
    }

    /// Whether `size` (bytes) is a power of two in 4 KiB...64 MiB.
    public static func isValidClusterSize(_ size: UInt64) -> Bool {
        size.isPowerOfTwo && size >= minClusterSize && size <= maxClusterSize
    }

    /// Whether `size` (clusters) is a power of two in 1...16.
    public static func isValidTableSize(_ size: UInt64) -> Bool {
        size.isPowerOfTwo && size <= maxTableSize
    }

    /// One table (L1 or L2) in bytes.
    public var tableBytes: UInt64 { tableSize << clusterBits }
    /// The header area in bytes; nothing may be allocated below it.
    public var headerBytes: UInt64 { headerSize << clusterBits }
    /// Guest bytes one L2 table maps (entriesPerTable·clusterSize).
    public var bytesPerL2: UInt64 { entriesPerTable << clusterBits }
    /// log2(bytesPerL2): the shift that gives an L1 index.
    public var l1Shift: UInt64 { clusterBits + entryBits }

    /// The largest virtual size the engine addresses, bytes: 2^63 − 2^30, QEMU's block-layer limit
    /// (`BDRV_MAX_LENGTH`; QEMU refuses to open larger images with "File too large"). Below it every
    /// guest offset, every offset plus a request length, and every offset rounded up to a cluster
    /// fits 64 bits, so the I/O paths cannot overflow on a validated image.
    public static let maxAddressableSize: UInt64 = (1 << 63) - (1 << 30)

    /// The largest virtual size the tables can address, bytes (N·N·clusterSize), computed without
    /// QEMU's 64-bit wrap (docs/qed-format.md §9.4) and capped at ``maxAddressableSize``. Opening,
    /// creating and resizing all refuse larger sizes.
    public var maxImageSize: UInt64 { min(tablesMaxImageSize, Geometry.maxAddressableSize) }

    /// N·N·clusterSize bytes, saturated to `UInt64.max` where the product does not fit 64 bits.
    public var tablesMaxImageSize: UInt64 {
        let (perL2, o1) = entriesPerTable.multipliedReportingOverflow(by: clusterSize)
        let (total, o2) = perL2.multipliedReportingOverflow(by: entriesPerTable)
        return (o1 || o2) ? UInt64.max : total
    }

    /// QEMU's own (wrapping) maximum; 0 means QEMU refuses every non-empty image of this geometry.
    public var qemuMaxImageSize: UInt64 { entriesPerTable &* entriesPerTable &* clusterSize }

    /// The L1 index for a guest byte offset.
    @inlinable public func l1Index(_ guestOffset: UInt64) -> UInt64 { guestOffset >> l1Shift }
    /// The L2 index (within its table) for a guest byte offset.
    @inlinable public func l2Index(_ guestOffset: UInt64) -> UInt64 {
        (guestOffset >> clusterBits) & (entriesPerTable - 1)
    }
    /// The byte offset inside its cluster.
    @inlinable public func offsetInCluster(_ offset: UInt64) -> UInt64 { offset & (clusterSize - 1) }
    /// Guest bytes from `guestOffset` to the end of its L2 table's range.
    @inlinable public func bytesToL2Boundary(_ guestOffset: UInt64) -> UInt64 {
        bytesPerL2 - (guestOffset & (bytesPerL2 - 1))
    }

    /// Clusters needed to hold `bytes` bytes, rounded up — the correct arithmetic, not QEMU's
    /// division by `cluster_size − 1` (§9.2).
    @inlinable public func clusters(coveringBytes bytes: UInt64) -> UInt64 {
        (bytes >> clusterBits) + (bytes & (clusterSize - 1) == 0 ? 0 : 1)
    }

    /// Whether `offset` may hold a table: cluster-aligned, past the header area, and the whole
    /// table inside `fileSize` (a cluster multiple). Accepts table_size 1, unlike QEMU.
    public func isValidTableOffset(_ offset: UInt64, fileSize: UInt64) -> Bool {
        guard offset & (clusterSize - 1) == 0, offset >= headerBytes else { return false }
        let (lastCluster, overflow) = offset.addingReportingOverflow((tableSize - 1) << clusterBits)
        return !overflow && lastCluster < fileSize
    }

    /// Whether `offset` may be a data cluster: cluster-aligned, past the header area, inside the file.
    public func isValidClusterOffset(_ offset: UInt64, fileSize: UInt64) -> Bool {
        offset & (clusterSize - 1) == 0 && offset >= headerBytes && offset < fileSize
    }
}
