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

    /// How the check found what it reports: ``CheckMethod/scan`` (every table) unless a dirty
    /// journaled image was recovered from its journal.
    public var method: CheckMethod = .scan
    /// With ``CheckMethod/journal``: the committed records recovery used (CHECKPOINT and named L1
    /// indices); 0 otherwise.
    public var journalRecords = 0

    /// An empty report.
    public init() {}

    /// Whether nothing at all was wrong (or everything wrong was repaired).
    public var isClean: Bool { corruptions == 0 && leaks == 0 && checkErrors == 0 }
}

/// How a check looked at an image (docs/journal.md §2).
public enum CheckMethod: String, Sendable, Equatable {
    /// Every L1 entry and L2 table was read (the full check, as QEMU's).
    case scan
    /// Only what the journal's committed records name since the last checkpoint was read and
    /// repaired (recovery of a dirty journaled image).
    case journal
}
