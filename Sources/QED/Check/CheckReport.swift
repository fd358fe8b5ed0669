/// What a consistency check found, in `qemu-img check`'s terms. Counts are clusters unless named.
public struct CheckReport: Sendable, Equatable {
    /// Inconsistencies that remain: invalid offsets (when not repairing) and clusters referenced
    /// twice (never repairable).
    public var corruptions = 0
    /// Clusters in the file that nothing references.
    public var leaks = 0
    /// Tables that could not be read; the check is incomplete when non-zero.
    public var checkErrors = 0
    /// Invalid offsets that the repair cleared.
    public var corruptionsFixed = 0
    /// Leaked clusters the repair gave back (those at the end of the file, by truncating it).
    public var leaksFixed = 0
    /// Clusters of the virtual disk: ceil(virtual size / cluster size).
    public var totalClusters: UInt64 = 0
    /// L2 entries that point at data (valid or not).
    public var allocatedClusters: UInt64 = 0
    /// Allocated clusters that do not follow the previous one of their table in the file.
    public var fragmentedClusters: UInt64 = 0

    /// An empty report.
    public init() {}

    /// Whether nothing at all was wrong (or everything wrong was repaired).
    public var isClean: Bool { corruptions == 0 && leaks == 0 && checkErrors == 0 }
}
