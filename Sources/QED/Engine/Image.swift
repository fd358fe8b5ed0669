import Logging
import Synchronization

/// An open QED image: the engine's one entry point for I/O, metadata changes and checks.
///
/// Thread-safe: every method may be called from many threads at once (they block on file I/O, so
/// call them from threads or a thread pool, not from a cooperative async executor). Reads and
/// in-place writes take only short table locks; allocating writes hold just their own guest
/// clusters (``InflightClusters``), so allocations in different clusters run in parallel.
/// ``check(repair:)``, ``makeEmpty()``, ``resize(to:)``, ``setBacking(name:format:open:)`` and
/// ``close()`` are exclusive: each waits for the requests running to finish and holds new ones
/// back until it returns (``OperationGate``).
///
/// Failure: once a sync or a header or table write fails, the image is *failed* (its data may not
/// be durable, or its metadata on disk may differ from memory): every later write, zero write,
/// discard, flush, resize, backing change and repairing check throws ``QEDError/Code/io`` naming
/// that first failure, until the image is closed and reopened. Reads keep working. A failed guest
/// data write fails only its own request (the mapping is unchanged, so nothing else is at stake).
///
/// Units: every offset and length in this API is in bytes of the guest-visible disk unless named
/// "host" (bytes in the image file).
public final class Image: Sendable {
    /// The image file.
    public let file: any BlockFile
    /// The path or label of the image file (for messages).
    public var path: String { file.path }
    /// Cluster and table sizes and the index math derived from them.
    public let geometry: Geometry
    /// Whether the image was opened read-only (then no byte of it is ever written).
    public let isReadOnly: Bool
    /// The options it was opened with.
    public let options: OpenOptions

    /// The header as held in memory; every header write goes through its ``HeaderStore/update(trailer:_:)``.
    let header: HeaderStore
    /// The first failed sync or metadata write, once there was one (the image is then failed).
    let failure: StickyFailure
    /// The backing file name as stored, or nil; guarded with the backing disk.
    let backingState: Mutex<BackingState>
    /// Guest size in bytes, mirrored from the header for the lock-free bounds check.
    let sizeMirror: Atomic<UInt64>
    let l1: Table
    let cache: L2Cache
    let allocator: Allocator
    let inflight = InflightClusters()
    /// Keeps exclusive operations (check, makeEmpty, resize, setBacking, close) apart from requests.
    let gate = OperationGate()
    let flusher: FlushCoordinator
    let needCheck: NeedCheckTimer
    /// The metadata journal's recorder (off unless the header's journal bit is set on a read-write
    /// open; docs/journal.md §2).
    let journal: JournalRecorder
    /// Serialises creating L2 tables (rare: once per table's worth of guest space).
    let tableCreation = Mutex(())
    /// Requests that found no L2 table and are creating one or waiting for `tableCreation` (for
    /// tests, which wait for a request to be stuck there).
    let tableCreationCallers = Atomic<Int>(0)
    let closed = AtomicFlag()
    /// The report of the check run by this open, if NEED_CHECK made it run one.
    let openCheck = Mutex<CheckReport?>(nil)
    let logger: Logger

    /// The backing chain's top and the name it was opened from.
    struct BackingState: Sendable {
        var name: String?
        var format: BackingFormat?
        var disk: (any Disk)?
    }

    private init(
        file: any BlockFile, header: Header, geometry: Geometry, l1: Table, fileSize: UInt64,
        fileLength: UInt64, backingName: String?, options: OpenOptions
    ) {
        self.file = file
        self.geometry = geometry
        isReadOnly = options.readOnly
        self.options = options
        failure = StickyFailure(path: file.path)
        flusher = FlushCoordinator(failure: failure)
        self.header = HeaderStore(header, file: file, flusher: flusher)
        sizeMirror = Atomic(header.imageSize)
        self.l1 = l1
        let tables = max(1, options.l2CacheBytes / max(1, geometry.tableBytes))
        cache = L2Cache(capacity: Int(min(tables, 1 << 20)))
        allocator = Allocator(fileSize: fileSize, fileLength: fileLength, clusterSize: geometry.clusterSize)
        let format: BackingFormat? = header.features.contains(.backingFormatNoProbe) ? .raw : nil
        backingState = Mutex(BackingState(name: backingName, format: format, disk: nil))
        logger = options.logger
        let headerRef = self.header
        let flusherRef = flusher
        let fileRef = file
        let recorder = JournalRecorder(file: file, flusher: flusher)
        journal = recorder
        let allocatorRef = allocator
        needCheck = NeedCheckTimer(
            dirty: header.features.contains(.needCheck),
            managesBit: !options.readOnly && !header.hasBackingFile,
            readOnly: options.readOnly,
            delay: options.needCheckDelay
        ) { set in
            // A period starts with its CHECKPOINT written out; the header update's sync makes both
            // durable before the first allocation.
            if set { try recorder.beginPeriod(highWater: allocatorRef.fileSize) }
            if !set && recorder.holdsDirty {
                throw QEDError(
                    .unsupported, "NEED_CHECK stays set until the image is checked: its journal waits for recovery",
                    path: fileRef.path)
            }
            if !set { try flusherRef.sync(fileRef) }  // every allocation so far must be durable before "clean"
            try headerRef.update { h in
                if set { h.features.insert(.needCheck) } else { h.features.remove(.needCheck) }
            }
            // The checkpoint: the log is reset only once the clean header is durable.
            if !set { try recorder.checkpoint() }
        }
    }

    // MARK: Opening

    /// Opens the image at `path`, taking QEMU-compatible locks and opening its backing chain.
    public static func open(path: String, options: OpenOptions = OpenOptions()) throws -> Image {
        try options.openLocked(path) { file, seen in
            try open(file: file, options: options, lockHeld: true, seen: seen)
        }
    }

    /// Opens an image stored in `file` (any ``BlockFile``, e.g. a ``MemoryFile``). Relative
    /// backing names resolve against `file.path`'s directory. The file is not locked.
    public static func open(file: any BlockFile, options: OpenOptions = OpenOptions()) throws -> Image {
        try open(file: file, options: options, lockHeld: true, seen: [])
    }

    static func open(file: any BlockFile, options: OpenOptions, lockHeld: Bool, seen: Set<FileIdentity>) throws -> Image
    {
        var options = options
        if !file.isWritable { options.readOnly = true }
        let path = file.path
        do {
            let length = try file.length()
            guard length >= UInt64(Header.encodedSize) else {
                throw QEDError(.notQED, "Image not in QED format (file is only \(length) bytes)", value: length)
            }
            let header = try Header(decoding: file.readBytes(count: Header.encodedSize, at: 0))
            let geometry = try header.validate(fileLength: length)
            let fileSize = length.roundedDown(toMultipleOf: geometry.clusterSize)

            var backingName: String?
            if header.hasBackingFile {
                let raw = try file.readBytes(count: Int(header.backingNameSize), at: UInt64(header.backingNameOffset))
                guard !raw.isEmpty, !raw.contains(0), let name = String(validating: raw, as: UTF8.self) else {
                    throw QEDError(
                        .invalidBackingName,
                        "QED backing filename is empty, contains NUL bytes or is not UTF-8",
                        value: UInt64(header.backingNameOffset))
                }
                backingName = name
            }

            if !options.readOnly {
                if length != fileSize {
                    // A partial cluster at the end is garbage from an interrupted extension; QEMU
                    // overwrites it on the next allocation, we drop it so new clusters read as zero.
                    try file.setLength(fileSize)
                }
            }

            let l1 = try Table.load(from: file, at: header.l1TableOffset, count: Int(geometry.entriesPerTable))
            let image = Image(
                file: file, header: header, geometry: geometry, l1: l1, fileSize: fileSize,
                fileLength: options.readOnly ? length : fileSize, backingName: backingName,
                options: options)
            if !options.readOnly {
                // Features we do not know may be stale after our writes; QEMU clears them too. The
                // journal bit stays only while the journal is usable (docs/journal.md §2).
                let keep = JournalArea.isValid(in: header) ? JournalArea.validBit : 0
                if header.autoclearFeatures & ~keep != 0 {
                    try image.header.update { $0.autoclearFeatures &= keep }
                }
                if keep != 0, let area = JournalArea(header: header) {
                    let (journal, scan) = try Journal.resume(file, layout: area.layout)
                    try image.journal.attach(journal, scan: scan, dirty: header.features.contains(.needCheck))
                }
            }
            if let backingName, options.openBacking {
                let disk = try BackingResolver.open(
                    name: backingName, format: image.backingFormat, imagePath: path, seen: seen, options: options)
                image.backingState.withLock { $0.disk = disk }
            }
            if header.features.contains(.needCheck) && !options.readOnly && options.autoCheck {
                let report = try image.check(repair: true)
                image.openCheck.withLock { $0 = report }
                image.logger.info(
                    "NEED_CHECK was set: checked on open",
                    metadata: [
                        "method": "\(report.method.rawValue)",
                        "corruptions-fixed": "\(report.corruptionsFixed)", "leaks-fixed": "\(report.leaksFixed)",
                        "corruptions": "\(report.corruptions)", "leaks": "\(report.leaks)",
                    ])
            }
            image.needCheck.armIfDirty()
            return image
        } catch let error as QEDError {
            throw error.naming(path)
        }
    }

    // MARK: Creating

    /// Creates a new image file at `path` (truncating an existing regular file) with QEMU's layout:
    /// header cluster, backing name at byte 64, a zeroed L1 table right after the header.
    /// Refuses non-regular files, and images QEMU could not open unless
    /// ``CreateOptions/allowQEMUIncompatible`` is set.
    public static func create(path: String, options: CreateOptions) throws {
        let size = try resolveCreateSize(options: options, imagePath: path)
        try validateCreate(options: options, size: size, path: path)
        let file = try PosixFile.create(path: path, lock: .readWrite)
        defer { file.close() }
        try format(file: file, options: options, size: size)
    }

    /// Writes a new image into `file` (any ``BlockFile``), which is truncated first. `options.size`
    /// must be set unless a backing file can be opened relative to `file.path`.
    public static func create(on file: any BlockFile, options: CreateOptions) throws {
        let size = try resolveCreateSize(options: options, imagePath: file.path)
        try validateCreate(options: options, size: size, path: file.path)
        try file.setLength(0)
        try format(file: file, options: options, size: size)
    }

    private static func resolveCreateSize(options: CreateOptions, imagePath: String) throws -> UInt64 {
        if let size = options.size { return size }
        guard let name = options.backingFile else {
            throw QEDError(.invalidArgument, "Image creation needs a size parameter", path: imagePath)
        }
        var probe = OpenOptions(readOnly: true, forceShare: true)
        probe.openBacking = true
        let disk = try BackingResolver.open(
            name: name, format: options.backingFormat, imagePath: imagePath,
            seen: [], options: probe)
        defer { try? disk.close() }
        return disk.virtualSize
    }

    package static func validateCreate(options: CreateOptions, size: UInt64, path: String) throws {
        guard Geometry.isValidClusterSize(UInt64(options.clusterSize)) else {
            throw QEDError(
                .invalidClusterSize,
                "QED cluster size must be within range [4096, 67108864] and power of 2",
                value: UInt64(options.clusterSize), path: path)
        }
        guard Geometry.isValidTableSize(UInt64(options.tableSize)) else {
            throw QEDError(
                .invalidTableSize, "QED table size must be within range [1, 16] and power of 2",
                value: UInt64(options.tableSize), path: path)
        }
        let geometry = Geometry(clusterSize: options.clusterSize, tableSize: options.tableSize)
        guard size % 512 == 0 else {
            throw QEDError(.invalidImageSize, "QED image size must be a multiple of 512 bytes", value: size, path: path)
        }
        guard size <= geometry.maxImageSize else {
            throw QEDError(
                .invalidImageSize,
                "QED image size must not exceed \(geometry.maxImageSize) bytes for this cluster and table size",
                value: size, path: path)
        }
        if !options.allowQEMUIncompatible {
            guard options.tableSize != 1 else {
                throw QEDError(
                    .invalidArgument,
                    "table_size=1 would create an image QEMU cannot open (its table offset check rejects it); use 2 or more",
                    value: 1, path: path)
            }
            guard size <= geometry.qemuMaxImageSize else {
                throw QEDError(
                    .invalidImageSize,
                    "QEMU cannot open this image: its maximum size for cluster_size=\(options.clusterSize) and table_size=\(options.tableSize) overflows to \(geometry.qemuMaxImageSize) bytes; use smaller clusters or tables",
                    value: size, path: path)
            }
        }
        if let journalSize = options.journalSize {
            do {
                _ = try JournalArea.headerSize(journalSize: journalSize, clusterSize: options.clusterSize)
            } catch {
                throw error.naming(path)
            }
            if let name = options.backingFile,
                UInt64(Header.encodedSize) + UInt64(name.utf8.count) > geometry.clusterSize
            {
                throw QEDError(
                    .noSpace,
                    "backing file name of \(name.utf8.count) bytes would reach the journal: with journal=on it must end inside the first cluster",
                    value: UInt64(name.utf8.count), path: path)
            }
        }
        if let name = options.backingFile {
            let bytes = UInt64(name.utf8.count)
            guard bytes > 0, !name.utf8.contains(0) else {
                throw QEDError(
                    .invalidArgument, "backing file name must be non-empty and free of NUL bytes", path: path)
            }
            guard UInt64(Header.encodedSize) + bytes <= geometry.headerBytes,
                bytes <= UInt64(Header.maxBackingNameLength)
            else {
                throw QEDError(
                    .noSpace, "backing file name of \(bytes) bytes does not fit the header cluster",
                    value: bytes, path: path)
            }
        }
    }

    private static func format(file: any BlockFile, options: CreateOptions, size: UInt64) throws {
        let cs = UInt64(options.clusterSize)
        var features: FeatureFlags = []
        var nameBytes: [UInt8] = []
        if let name = options.backingFile {
            features.insert(.backingFile)
            if options.backingFormat == .raw { features.insert(.backingFormatNoProbe) }
            nameBytes = Array(name.utf8)
        }
        let headerSize = try options.journalSize.map {
            try JournalArea.headerSize(journalSize: $0, clusterSize: options.clusterSize)
        }
        let header = Header(
            clusterSize: options.clusterSize, tableSize: options.tableSize, headerSize: headerSize ?? 1,
            features: features, autoclearFeatures: headerSize == nil ? 0 : JournalArea.validBit,
            l1TableOffset: cs * UInt64(headerSize ?? 1), imageSize: size,
            backingNameOffset: nameBytes.isEmpty ? 0 : UInt32(Header.encodedSize),
            backingNameSize: UInt32(nameBytes.count))
        try file.setLength(cs * (UInt64(headerSize ?? 1) + UInt64(options.tableSize)))
        if let area = JournalArea(header: header) {
            _ = try Journal.format(file, layout: area.layout)  // the region reset: an empty log
        }
        try file.writeBytes(header.encoded() + nameBytes, at: 0)
        try file.sync()
    }

    // MARK: Properties

    /// Guest-visible size in bytes.
    public var virtualSize: UInt64 { sizeMirror.load(ordering: .acquiring) }
    /// The header as it is now (in memory; equal to the disk after every metadata call returns).
    public var currentHeader: Header { header.current }
    /// Whether NEED_CHECK is set (QEMU's `dirty-flag`).
    public var isDirty: Bool { needCheck.isDirty }
    /// The backing file name as stored in the header, or nil.
    public var backingName: String? { backingState.withLock { $0.name } }
    /// `.raw` when the header says the backing file is raw (never probed); nil means probe.
    public var backingFormat: BackingFormat? { backingState.withLock { $0.format } }
    /// The backing file's path as this engine opens it (relative names resolved), or nil.
    public var backingPath: String? {
        backingName.map { BackingResolver.resolve($0, relativeTo: path) }
    }
    /// The open backing disk, or nil (none, or not opened).
    public var backing: (any Disk)? { backingState.withLock { $0.disk } }
    /// Bytes of the image file in use (a cluster multiple): where the next cluster is allocated.
    public var fileSize: UInt64 { allocator.fileSize }
    /// The check that NEED_CHECK triggered during this open, if any.
    public var checkOnOpen: CheckReport? { openCheck.withLock { $0 } }

    // MARK: Closing

    /// Flushes, clears NEED_CHECK (unless a check left corruption behind or the flush failed) and
    /// closes the file and the backing chain. Further calls on the image throw
    /// ``QEDError/Code/closed``.
    ///
    /// Whatever fails, the NEED_CHECK timer is stopped before the file is closed (so it never
    /// touches the file after this returns) and the file is closed; the first error is thrown.
    /// Exclusive: waits for running requests to finish first.
    public func close() throws {
        try gate.exclusive { try closeExclusively() }
    }

    private func closeExclusively() throws {
        guard closed.setOnce() else { return }
        var firstError: (any Error)?
        if !isReadOnly {
            do { try flusher.sync(file) } catch { firstError = error }
            let keepDirty =
                firstError != nil || openCheck.withLock { ($0?.corruptions ?? 0) > 0 } || journal.holdsDirty
            do { try needCheck.stop(clear: !keepDirty) } catch { firstError = firstError ?? error }
        } else {
            try? needCheck.stop(clear: false)
        }
        if let disk = backingState.withLock({ $0.disk }) {
            do { try disk.close() } catch { firstError = firstError ?? error }
        }
        file.close()
        if let firstError { throw firstError }
    }

    deinit {
        if !closed.isSet { try? close() }
    }

    // MARK: Guards

    @inline(__always)
    func ensureOpen() throws {
        if closed.isSet { throw QEDError(.closed, "the image is closed", path: path) }
    }

    /// Throws unless the image is open, writable and not failed (see ``StickyFailure``).
    @inline(__always)
    func ensureWritable() throws {
        try ensureOpen()
        if isReadOnly { throw QEDError(.readOnly, "the image is opened read-only", path: path) }
        try failure.check()
    }
}
