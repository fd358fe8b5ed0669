import Synchronization

/// A raw disk image, for reading and (optionally) writing: guest offset = file offset, virtual
/// size = file length. Works over any ``BlockFile`` (a ``PosixFile``, a ``MemoryFile``, a
/// fault-injecting file in tests); ``init(path:options:)`` opens a real file with the same
/// QEMU-compatible locks as ``Image``. The same class serves as a raw backing file (read-only).
/// Like an ``Image``, it is failed after its first failed sync: later writes and flushes throw.
///
/// Thread-safe: reads and writes go straight to the file (positioned I/O needs no lock); the size
/// is an atomic, stored after a resize is durable. ``resize(to:)`` and ``close()`` expect no other
/// call in flight.
public final class RawImage: Disk {
    /// The file; ``close()`` closes it.
    public let file: any BlockFile
    /// Whether the disk is read-only (asked for, or the file is not writable).
    public let isReadOnly: Bool
    /// Whether it was opened locked and not force-shared, so no one honouring QEMU's locks can
    /// write (or shrink) it meanwhile: the condition for mapping it (``MappableDisk``).
    let isProtectedFromWriters: Bool
    /// The disk size in bytes (the file length); stored after a resize is durable.
    private let size: Atomic<UInt64>
    private let closed = AtomicFlag()
    /// The first failed sync, after which writes and flushes throw.
    private let failure: StickyFailure

    /// Opens the raw file at `path` with `options` (read-only, force-share, locking and
    /// ignore-flushes are used).
    public convenience init(path: String, options: OpenOptions = OpenOptions()) throws {
        guard options.readOnly || !options.forceShare else {
            throw QEDError(.invalidArgument, "force-share (-U) is only allowed for read-only opens", path: path)
        }
        let file = try PosixFile(path: path, writable: !options.readOnly, ignoringFlushes: options.ignoreFlushes)
        do {
            try ImageLock.acquire(fd: file.rawDescriptor, mode: options.lockMode, path: path)
        } catch {
            file.close()
            throw error
        }
        // Should the length fail, the file is released with this init and its deinit closes it.
        try self.init(
            file: file, readOnly: options.readOnly,
            protectedFromWriters: options.locking && !options.forceShare)
    }

    /// A raw disk over `file` (not locked by this call): its current length is the disk size.
    /// Read-only when `readOnly` is set or the file is not writable. The disk owns the file from
    /// now on: ``close()`` closes it.
    public convenience init(file: any BlockFile, readOnly: Bool = false) throws {
        try self.init(file: file, readOnly: readOnly, protectedFromWriters: false)
    }

    private init(file: any BlockFile, readOnly: Bool, protectedFromWriters: Bool) throws {
        self.size = Atomic(try file.length())
        self.file = file
        failure = StickyFailure(path: file.path)
        isReadOnly = readOnly || !file.isWritable
        isProtectedFromWriters = protectedFromWriters
    }

    /// Creates (or truncates) a raw file of `size` bytes at `path`: one hole, reading as zeroes.
    public static func create(path: String, size: UInt64) throws {
        let file = try PosixFile.create(path: path, lock: .readWrite)
        defer { file.close() }
        try file.setLength(size)
    }

    /// Always ``DiskFormat/raw``.
    public var format: DiskFormat { .raw }
    /// The file's path.
    public var path: String { file.path }
    /// The file length in bytes.
    public var virtualSize: UInt64 { size.load(ordering: .acquiring) }
    /// Always nil: raw files have no backing file.
    public var backing: (any Disk)? { nil }
    /// Always nil: raw files have no backing file.
    public var backingFile: BackingFileReference? { nil }
    /// Always nil: a raw file has no allocation unit of its own.
    public var clusterSize: UInt64? { nil }
    /// Always false: a raw file has no "needs a check" mark.
    public var isDirty: Bool { false }

    /// Always throws ``QEDError/Code/unsupported``: a raw file has no metadata to check (QEMU:
    /// "This image format does not support checks").
    public func check(repair: Bool) throws -> CheckReport {
        throw QEDError(.unsupported, "This image format does not support checks", path: path)
    }

    private func ensureOpenAndInside(_ offset: UInt64, _ length: UInt64) throws {
        if closed.isSet { throw QEDError(.closed, "the image is closed", path: path) }
        try ensureInside(offset, length)
    }

    private func ensureWritable() throws {
        if isReadOnly { throw QEDError(.readOnly, "the image is opened read-only", path: path) }
        try failure.check()
    }

    /// Syncs the file; a failed sync fails the disk for good (see ``StickyFailure``).
    private func syncOrFail() throws {
        try failure.check()
        try failure.recording { try file.sync() }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try ensureOpenAndInside(offset, UInt64(buffer.count))
        try file.readFully(into: buffer, at: offset)
    }

    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(buffer.count))
        guard !overflow, end <= virtualSize else { return false }
        return file.readIfCached(into: buffer, at: offset)
    }

    public func extents(at offset: UInt64, length: UInt64) throws -> [Extent] {
        try ensureOpenAndInside(offset, length)
        return try file.rawExtents(at: offset, length: length)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try ensureWritable()
        try ensureOpenAndInside(offset, UInt64(bytes.count))
        try file.write(bytes, at: offset)
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws {
        try ensureWritable()
        try ensureOpenAndInside(offset, length)
        guard length > 0 else { return }
        if unmap {
            do { return try file.punchHole(at: offset, length: length) } catch let e as QEDError
                where e.code == .unsupported
            {}
        } else if file.zeroRange(at: offset, length: length) {
            return
        }
        try file.writeZeroes(at: offset, count: length)
    }

    public func discard(at offset: UInt64, length: UInt64) throws {
        try ensureWritable()
        try ensureOpenAndInside(offset, length)
        guard length > 0 else { return }
        do { try file.punchHole(at: offset, length: length) } catch let e as QEDError where e.code == .unsupported {}
    }

    public func flush() throws {
        if !isReadOnly { try syncOrFail() }
    }

    /// Sets the file length to `newSize` bytes (shrinking drops the tail).
    public func resize(to newSize: UInt64) throws {
        try ensureWritable()
        try file.setLength(newSize)
        try syncOrFail()
        size.store(newSize, ordering: .releasing)
    }

    public func allocatedBytes() -> UInt64? { (try? file.allocatedBytes()) ?? nil }

    public func close() throws {
        guard closed.setOnce() else { return }
        defer { file.close() }
        if !isReadOnly { try syncOrFail() }
    }
}
