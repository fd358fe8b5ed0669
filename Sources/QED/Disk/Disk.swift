/// A disk image of any format, as the tools and the NBD server see it: a QED ``Image``, a
/// ``RawImage`` (and the next formats). Every format implements this one protocol; open one with
/// ``DiskOpener``.
///
/// Units: every offset and length is in guest bytes (the disk the guest sees), never host bytes.
///
/// Reads past the end: ``read(into:at:)``, ``extents(at:length:)`` and the writing calls throw
/// ``QEDError/Code/outOfRange`` for a range that does not lie inside ``virtualSize``. The one reader
/// that needs zeroes past the end — an overlay over a shorter backing file — uses
/// ``readZeroFillingPastEnd(into:at:)``.
///
/// Thread-safety: implementations are safe to call from many threads at once, and block on file
/// I/O (call them from threads, not a cooperative async executor); ``readIfCached(into:at:)`` is
/// the one call that never waits for the disk. ``resize(to:)`` and ``close()`` expect no other
/// call in flight.
public protocol Disk: AnyObject, Sendable {
    // MARK: Identity

    /// The disk's format.
    var format: DiskFormat { get }
    /// The path it was opened with (a label for disks not in a named file).
    var path: String { get }
    /// Whether it was opened read-only (then the writing calls throw ``QEDError/Code/readOnly``).
    var isReadOnly: Bool { get }
    /// Guest-visible size in bytes.
    var virtualSize: UInt64 { get }
    /// The open disk below this one in its backing chain, or nil (none, not opened, or a format
    /// without backing files). ``DiskOpener/chain(of:)`` walks it.
    var backing: (any Disk)? { get }

    // MARK: Format facts (what the tools report and tune to)

    /// The format's allocation unit in bytes (QED's cluster size; QEMU's `cluster_size`): the
    /// granularity at which it allocates and can store zeroes. Nil for formats without one (raw).
    var clusterSize: UInt64? { get }
    /// Whether the disk is marked as needing a consistency check (QED's NEED_CHECK bit, QEMU's
    /// `dirty-flag`). Always false for formats without such a mark (raw).
    var isDirty: Bool { get }
    /// The backing file this disk's metadata names, whether or not it was opened (see
    /// ``backing``); nil when it names none or the format has no backing files (raw).
    var backingFile: BackingFileReference? { get }

    /// Facts only this format has, for `info`'s "Format specific information", in display order
    /// (empty for formats without any). Keys are in QEMU's JSON spelling (`image-file`).
    var formatSpecific: [FormatSpecificField] { get }

    /// Checks the disk's metadata for inconsistencies, in `qemu-img check`'s terms, and with
    /// `repair` (the disk opened writable) repairs what it can. Throws ``QEDError/Code/unsupported``
    /// for formats without metadata to check (raw: QEMU's "This image format does not support
    /// checks"). A format whose check cannot run beside requests makes it wait for them (QED:
    /// its check is an exclusive operation).
    func check(repair: Bool) throws -> CheckReport

    // MARK: Reading (everything a backing layer needs)

    /// Reads `buffer.count` bytes at `offset`; the range must lie inside ``virtualSize``.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    /// Reads like ``read(into:at:)`` only if that needs no waiting for the disk; false otherwise
    /// (and on errors, and for ranges past the end), leaving `buffer` unspecified. For event loops.
    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool
    /// Where the content of `[offset, offset+length)` comes from (block status), covering the
    /// range exactly; depths are relative to this disk (0 = this disk, 1 = its backing file, ...).
    /// The range must lie inside ``virtualSize``.
    func extents(at offset: UInt64, length: UInt64) throws -> [Extent]
    /// Bytes the disk's file occupies on the host (`st_blocks`·512), or nil if unknown.
    func allocatedBytes() -> UInt64?
    /// The file that the ``Extent/hostOffset``s of this layer's extents (depth 0) are offsets in:
    /// the disk's own file (``path``, the default) for QED and raw; add-cow's raw image file. What
    /// `qemu-img map` shows in its File column.
    var dataFilePath: String { get }

    // MARK: Writing

    /// Writes `bytes` at `offset` (inside the disk).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Makes `[offset, offset+length)` read as zeroes; `unmap` allows giving back storage.
    func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws
    /// Hints that `[offset, offset+length)` is no longer needed (may read as zeroes afterwards).
    func discard(at offset: UInt64, length: UInt64) throws
    /// Makes every completed write durable. A failed flush fails the disk for good: later writes
    /// and flushes throw (see ``StickyFailure``).
    func flush() throws
    /// Changes the virtual size to `newSize` bytes (what a format allows: QED only grows).
    func resize(to newSize: UInt64) throws

    // MARK: Closing

    /// Flushes (when writable) and releases the disk, its file and its backing chain. Idempotent;
    /// other calls afterwards throw ``QEDError/Code/closed``.
    func close() throws
}

/// A backing file as a disk's metadata names it (`qemu-img info`'s backing fields).
public struct BackingFileReference: Sendable, Equatable {
    /// The name as stored in the disk's metadata.
    public var name: String
    /// The name resolved against the directory of the disk that names it: the path it is opened at.
    public var path: String
    /// The format the metadata records for it, or nil (it is probed when opened).
    public var format: DiskFormat?

    /// A reference with every field given.
    public init(name: String, path: String, format: DiskFormat?) {
        self.name = name
        self.path = path
        self.format = format
    }
}

/// One format-specific fact of a disk (``Disk/formatSpecific``).
public struct FormatSpecificField: Sendable, Equatable {
    /// A value: text, a count, or a flag.
    public enum Value: Sendable, Equatable {
        case string(String)
        case uint(UInt64)
        case bool(Bool)
    }
    /// The key in QEMU's JSON spelling, e.g. `image-file`.
    public var key: String
    /// The value.
    public var value: Value

    /// A field with its key and value.
    public init(_ key: String, _ value: Value) {
        self.key = key
        self.value = value
    }
}

extension Disk {
    /// None by default.
    public var formatSpecific: [FormatSpecificField] { [] }

    /// The disk's own file (``path``) by default.
    public var dataFilePath: String { path }

    /// Reads `count` bytes at guest byte `offset` into a new array (inside the disk).
    public func readBytes(at offset: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return out
    }

    /// Reads `buffer.count` bytes at `offset`, the part at or past ``virtualSize`` as zeroes: how an
    /// overlay reads a backing file shorter than itself. The one place that clips and zero-fills.
    public func readZeroFillingPastEnd(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        let size = virtualSize
        let inside = offset < size ? Int(min(UInt64(buffer.count), size - offset)) : 0
        if inside > 0 {
            try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<inside]), at: offset)
        }
        if inside < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[inside...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }
}

extension Disk {
    /// Throws ``QEDError/Code/outOfRange`` unless `[offset, offset+length)` (guest bytes) lies
    /// within the disk, checked without overflow.
    func ensureInside(_ offset: UInt64, _ length: UInt64) throws {
        let (end, overflow) = offset.addingReportingOverflow(length)
        if overflow || end > virtualSize {
            throw QEDError(
                .outOfRange, "request of \(length) bytes at offset \(offset) ends past the disk size \(virtualSize)",
                value: offset, path: path)
        }
    }
}
