public import Logging

/// The format of a backing file as recorded in (or probed from) a QED header.
public enum BackingFormat: String, Sendable, Equatable {
    /// A raw file; recorded with ``FeatureFlags/backingFormatNoProbe`` so it is never probed.
    case raw
    /// A QED image (not recordable in the header; found again by probing).
    case qed
}

/// What to create: ``Image/create(path:options:)``.
public struct CreateOptions: Sendable {
    /// Virtual size in bytes (a multiple of 512). Nil: the backing file's size.
    public var size: UInt64?
    /// Cluster size in bytes: a power of two in 4 KiB...64 MiB. Default 64 KiB.
    public var clusterSize: UInt32 = 65536
    /// L1/L2 table size in clusters: a power of two in 1...16. Default 4.
    public var tableSize: UInt32 = 4
    /// Backing file name as stored in the header (relative names resolve against the image's
    /// directory when opened).
    public var backingFile: String?
    /// Backing format: `.raw` sets BACKING_FORMAT_NO_PROBE; `.qed` or nil leave it to probing.
    public var backingFormat: BackingFormat?
    /// Allow images QEMU cannot open (table size 1, sizes past QEMU's wrapped maximum). Default false.
    public var allowQEMUIncompatible = false
    /// Bytes to reserve for the metadata journal in the header area (rounded up to whole clusters;
    /// ``JournalArea/defaultSize`` is the usual choice), with the journal marked valid; nil (the
    /// default) makes QEMU's layout without one (docs/journal.md §2).
    public var journalSize: UInt64?

    /// Options with every default; set the fields you need.
    public init(
        size: UInt64? = nil, clusterSize: UInt32 = 65536, tableSize: UInt32 = 4,
        backingFile: String? = nil, backingFormat: BackingFormat? = nil
    ) {
        self.size = size
        self.clusterSize = clusterSize
        self.tableSize = tableSize
        self.backingFile = backingFile
        self.backingFormat = backingFormat
    }
}

/// How to open an image: ``Image/open(path:options:)``.
public struct OpenOptions: Sendable {
    /// Open without write access; never writes a byte. Default false.
    public var readOnly = false
    /// With ``readOnly``: share every permission with other users (`-U`), so a running writer does
    /// not block us and we do not block it. Default false.
    public var forceShare = false
    /// Take QEMU-compatible lock bytes. Default true.
    public var locking = true
    /// Run check-and-repair when a read-write open finds NEED_CHECK set. Default true.
    /// `qed-img check -r` turns it off to do the repair itself.
    public var autoCheck = true
    /// Open the backing chain. Default true; `info` without I/O can turn it off.
    public var openBacking = true
    /// Bytes of memory for cached L2 tables (at least one table is always cached). Default 16 MiB:
    /// 64 tables at the default geometry, mapping 128 GiB of guest space (QEMU keeps 50).
    public var l2CacheBytes: UInt64 = 16 << 20
    /// Seconds after the last allocating write before NEED_CHECK is cleared. Default 5.
    public var needCheckDelay: Double = 5
    /// Ignore flushes, like QEMU's `cache=unsafe` (`cache.no-flush=on`): `fdatasync` is never
    /// called — not by ``Image/flush()``, not for the engine's own write ordering, not on close — so
    /// nothing is durable until the kernel writes it back, and a host crash can leave the image
    /// corrupt. For scratch output whose loss is harmless (`qemu-img convert`'s default). Default false.
    public var ignoreFlushes = false
    /// Where the engine logs (at info level or lower). Default: a logger that discards.
    public var logger = Logger(label: "swift-qed", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Options with every default; set the fields you need.
    public init(readOnly: Bool = false, forceShare: Bool = false) {
        self.readOnly = readOnly
        self.forceShare = forceShare
    }

    /// The lock mode these options call for.
    var lockMode: LockMode {
        if !locking { return .none }
        if !readOnly { return .readWrite }
        return forceShare ? .shared : .readOnly
    }
}
