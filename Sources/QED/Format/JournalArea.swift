/// Where a QED image keeps its metadata journal (docs/journal.md §2): the header area's clusters
/// 1 ..< `header_size`, written by swift-qed only while the header's autoclear bit
/// ``JournalArea/validBit`` is set. Pure values, no I/O.
///
/// Units: bytes.
public struct JournalArea: Sendable, Equatable {
    /// `autoclear_features` bit 0: the region holds a journal kept by swift-qed. QEMU clears
    /// unknown autoclear bits on every read-write open, so a QEMU write turns the journal off.
    public static let validBit: UInt64 = 0x1
    /// The journal size `create -o journal=on` reserves when no size is given: 2 MiB, enough to
    /// name every L1 index of the default geometry twice per period (docs/journal.md).
    public static let defaultSize: UInt64 = 2 << 20
    /// Bytes per journal cluster in a QED image (the unit of the log's checksums and resets).
    public static let journalClusterSize = 4096

    /// Byte offset of the region in the image file: one cluster.
    public let start: UInt64
    /// Bytes in the region: `(header_size − 1) × cluster_size`.
    public let size: UInt64

    /// The region `header` reserves, or nil when `header_size` is 1 (no region) or the header
    /// area does not fit 32 bits (QEMU refuses such images anyway).
    public init?(header: Header) {
        let cs = UInt64(header.clusterSize)
        guard header.headerSize > 1, cs >= UInt64(Self.journalClusterSize) else { return nil }
        let (bytes, overflow) = UInt64(header.headerSize).multipliedReportingOverflow(by: cs)
        guard !overflow, bytes <= UInt64(UInt32.max) else { return nil }
        start = cs
        size = bytes - cs
    }

    /// Whether the header says the journal is valid: the bit is set, the region exists, and the
    /// backing file name ends inside cluster 0 (QEMU rewrites the name from byte 64, so a longer
    /// one may have overwritten the region's start).
    public static func isValid(in header: Header) -> Bool {
        guard header.autoclearFeatures & validBit != 0, JournalArea(header: header) != nil else { return false }
        return backingNameFitsClusterZero(header)
    }

    /// Whether the header's backing file name (if any) ends within the first cluster.
    public static func backingNameFitsClusterZero(_ header: Header) -> Bool {
        guard header.hasBackingFile else { return true }
        return UInt64(header.backingNameOffset) + UInt64(header.backingNameSize) <= UInt64(header.clusterSize)
    }

    /// `header_size` for an image of `clusterSize`-byte clusters with a journal of at least
    /// `journalSize` bytes: 1 + ⌈journalSize / clusterSize⌉ (at least one cluster of journal).
    /// Throws ``QEDError/Code/invalidArgument`` when the header area would not fit 32 bits.
    public static func headerSize(journalSize: UInt64, clusterSize: UInt32) throws(QEDError) -> UInt32 {
        let cs = UInt64(clusterSize)
        guard cs.isPowerOfTwo, cs >= UInt64(journalClusterSize) else {
            throw QEDError(.invalidArgument, "journal needs clusters of at least 4096 bytes", value: cs)
        }
        guard let rounded = max(journalSize, 1).roundedUp(toMultipleOf: cs) else {
            throw QEDError(.invalidArgument, "journal size overflows when rounded up to clusters", value: journalSize)
        }
        let clusters = 1 + rounded / cs
        let (bytes, overflow) = clusters.multipliedReportingOverflow(by: cs)
        guard !overflow, bytes <= UInt64(UInt32.max) else {
            throw QEDError(
                .invalidArgument,
                "journal_size \(journalSize) makes the header area larger than 4 GiB (header_size × cluster_size must fit 32 bits)",
                value: journalSize)
        }
        return UInt32(clusters)
    }

    /// The journal component's view of the region (4096-byte journal clusters).
    package var layout: JournalLayout {
        get throws(QEDError) { try JournalLayout(start: start, size: size, clusterSize: Self.journalClusterSize) }
    }
}
