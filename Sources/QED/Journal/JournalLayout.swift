/// Where a journal lives in its file: a region of whole journal clusters.
///
/// All sizes and offsets are in bytes. The region starts at a multiple of the journal cluster size
/// and holds at least one journal cluster.
package struct JournalLayout: Sendable, Equatable {
    /// The smallest journal cluster: one 512-byte sector.
    package static let minimumClusterSize = 512
    /// The largest journal cluster (END's `skip` is 16 bits).
    package static let maximumClusterSize = 65536

    /// Byte offset of journal cluster 0 in the file.
    package let start: UInt64
    /// Bytes in the region: `clusterCount × clusterSize`.
    package let size: UInt64
    /// Bytes per journal cluster: a power of two in 512…65536.
    package let clusterSize: Int
    /// Journal clusters in the region (≥ 1).
    package let clusterCount: Int

    /// A region of `size` bytes at byte `start`, cut into journal clusters of `clusterSize` bytes.
    /// Throws ``QEDError/Code/invalidArgument`` naming the value when the cluster size is not a
    /// power of two in 512…65536, `start` or `size` is not a multiple of it, the region is empty,
    /// or its end does not fit 64 bits.
    package init(start: UInt64, size: UInt64, clusterSize: Int) throws(QEDError) {
        guard clusterSize >= Self.minimumClusterSize, clusterSize <= Self.maximumClusterSize,
            UInt64(clusterSize).isPowerOfTwo
        else {
            throw QEDError(
                .invalidArgument, "journal cluster size must be a power of two in 512...65536",
                value: UInt64(max(0, clusterSize)))
        }
        let unit = UInt64(clusterSize)
        guard start % unit == 0 else {
            throw QEDError(.invalidArgument, "journal start is not a multiple of \(clusterSize) bytes", value: start)
        }
        guard size >= unit, size % unit == 0 else {
            throw QEDError(
                .invalidArgument, "journal size is not a positive multiple of \(clusterSize) bytes", value: size)
        }
        _ = try start.adding(size, or: .invalidArgument, "journal start + size")
        guard let count = Int(exactly: size / unit) else {
            throw QEDError(.invalidArgument, "journal has too many clusters", value: size)
        }
        self.start = start
        self.size = size
        self.clusterSize = clusterSize
        clusterCount = count
    }

    /// `size` rounded up to a whole number of `eraseBlock`s (a power of two, e.g. the journal
    /// cluster size or the image's cluster size), so that a reset writes whole blocks.
    package static func roundedSize(_ size: UInt64, eraseBlock: UInt64) throws(QEDError) -> UInt64 {
        guard eraseBlock.isPowerOfTwo else {
            throw QEDError(.invalidArgument, "erase block is not a power of two", value: eraseBlock)
        }
        guard let rounded = max(size, 1).roundedUp(toMultipleOf: eraseBlock) else {
            throw QEDError(.invalidArgument, "journal size overflows 64 bits when rounded", value: size)
        }
        return rounded
    }

    /// Byte offset in the file of journal cluster `index` (0 ≤ index < clusterCount).
    package func offset(ofCluster index: Int) -> UInt64 {
        start + UInt64(index) * UInt64(clusterSize)
    }
}
