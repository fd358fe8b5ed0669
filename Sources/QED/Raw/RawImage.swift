import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The image formats the tools read and write.
public enum DiskFormat: String, Sendable, Equatable, CaseIterable {
    /// QEMU Enhanced Disk.
    case qed
    /// A plain file: guest byte N is file byte N.
    case raw
}

/// A disk the tools can read and write: a QED ``Image`` or a ``RawImage``.
///
/// Units: every offset and length is in guest bytes.
public protocol Disk: DiskReader {
    /// The format of the disk.
    var format: DiskFormat { get }
    /// The path it was opened with.
    var path: String { get }
    /// Whether it was opened read-only.
    var isReadOnly: Bool { get }
    /// Reads like `read(into:at:)` only if that needs no waiting for the disk; false otherwise
    /// (and on errors), leaving `buffer` unspecified. See ``Image/readIfCached(into:at:)``.
    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool
    /// Writes `bytes` at guest byte `offset` (inside the disk).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Makes `[offset, offset+length)` read as zeroes; `unmap` allows giving back storage.
    func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws
    /// Hints that `[offset, offset+length)` is no longer needed (may read as zeroes afterwards).
    func discard(at offset: UInt64, length: UInt64) throws
    /// Makes every completed write durable.
    func flush() throws
    /// Changes the virtual size to `newSize` bytes.
    func resize(to newSize: UInt64) throws
    /// Bytes the disk's file occupies on the host (`st_blocks`·512), or nil if unknown.
    func allocatedBytes() -> UInt64?
}

extension Image: Disk {
    /// Always ``DiskFormat/qed``.
    public var format: DiskFormat { .qed }
    /// Host bytes of the image file (`st_blocks`·512), or nil when the file is not a ``PosixFile``.
    public func allocatedBytes() -> UInt64? { try? (file as? PosixFile)?.allocatedBytes() }
}

extension DiskReader {
    /// Reads `count` bytes at guest byte `offset` into a new array.
    public func readBytes(at offset: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return out
    }
}

/// A raw disk image opened for reading and (optionally) writing: guest offset = file offset,
/// virtual size = file length. Takes the same QEMU-compatible locks as ``Image``. Like an
/// ``Image``, it is failed after its first failed sync: later writes and flushes throw.
public final class RawImage: Disk {
    /// The file.
    public let file: PosixFile
    /// Whether the file was opened read-only.
    public let isReadOnly: Bool
    /// Whether it was opened locked and not force-shared, so no one honouring QEMU's locks can
    /// write (or shrink) it meanwhile: the condition for mapping it (``MappableDisk``).
    let isProtectedFromWriters: Bool
    private let size: Atomic<UInt64>
    private let closed = AtomicFlag()
    /// The first failed sync, after which writes and flushes throw.
    private let failure: StickyFailure

    /// Opens the raw file at `path` with `options` (read-only, force-share and locking are used).
    public init(path: String, options: OpenOptions = OpenOptions()) throws {
        guard options.readOnly || !options.forceShare else {
            throw QEDError(.invalidArgument, "force-share (-U) is only allowed for read-only opens", path: path)
        }
        let file = try PosixFile(path: path, writable: !options.readOnly, ignoringFlushes: options.ignoreFlushes)
        do {
            try ImageLock.acquire(fd: file.rawDescriptor, mode: options.lockMode, path: path)
            self.size = Atomic(try file.length())
        } catch {
            file.close()
            throw error
        }
        self.file = file
        self.failure = StickyFailure(path: path)
        self.isReadOnly = options.readOnly
        self.isProtectedFromWriters = options.locking && !options.forceShare
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

    private func ensureInside(_ offset: UInt64, _ length: UInt64) throws {
        let (end, overflow) = offset.addingReportingOverflow(length)
        if closed.isSet { throw QEDError(.closed, "the image is closed", path: path) }
        if overflow || end > virtualSize {
            throw QEDError(.outOfRange,
                           "request of \(length) bytes at offset \(offset) ends past the disk size \(virtualSize)",
                           value: offset, path: path)
        }
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
        try ensureInside(offset, UInt64(buffer.count))
        try file.readFully(into: buffer, at: offset)
    }

    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(buffer.count))
        guard !overflow, end <= virtualSize else { return false }
        return file.readIfCached(into: buffer, at: offset)
    }

    public func extents(at offset: UInt64, length: UInt64) throws -> [Extent] {
        try ensureInside(offset, length)
        return try file.rawExtents(at: offset, length: length)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try ensureWritable()
        try ensureInside(offset, UInt64(bytes.count))
        try file.write(bytes, at: offset)
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws {
        try ensureWritable()
        try ensureInside(offset, length)
        guard length > 0 else { return }
        if unmap {
            do { return try file.punchHole(at: offset, length: length) } catch let e as QEDError where e.code == .unsupported {}
        } else if file.zeroRange(at: offset, length: length) {
            return
        }
        try file.writeZeroes(at: offset, count: length)
    }

    public func discard(at offset: UInt64, length: UInt64) throws {
        try ensureWritable()
        try ensureInside(offset, length)
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

    public func allocatedBytes() -> UInt64? { try? file.allocatedBytes() }

    public func close() throws {
        guard closed.setOnce() else { return }
        defer { file.close() }
        if !isReadOnly { try syncOrFail() }
    }
}

/// Finding and opening disks by path, probing the format like qemu-img.
public enum DiskOpener {
    /// The format of the file at `path`: QED when it starts with the QED magic, else raw.
    public static func probe(path: String) throws -> DiskFormat {
        let file = try PosixFile(path: path, writable: false)
        defer { file.close() }
        return try BackingResolver.probeIsQED(file) ? .qed : .raw
    }

    /// Opens `path` as `format` (probed when nil; a file named raw is never probed).
    public static func open(path: String, format: DiskFormat?, options: OpenOptions) throws -> any Disk {
        switch try format ?? probe(path: path) {
        case .qed: return try Image.open(path: path, options: options)
        case .raw: return try RawImage(path: path, options: options)
        }
    }

    /// The chain below `disk`: `[disk, its backing, the backing's backing, ...]` (as opened).
    public static func chain(of disk: any DiskReader) -> [any DiskReader] {
        var out: [any DiskReader] = [disk]
        var current = disk
        while let image = current as? Image, let next = image.backing {
            out.append(next)
            current = next
        }
        return out
    }

    /// Throws if `target` is the same file as any layer of any of `sources` (writing it would
    /// destroy what is being read).
    public static func refuseOverwriting(_ target: String, sources: [any DiskReader]) throws {
        guard let id = FileIdentity(path: target) else { return }
        for source in sources {
            for layer in chain(of: source) {
                if let name = layerName(layer), FileIdentity(path: name) == id {
                    throw QEDError(.invalidArgument, "the output is the same file as the input '\(name)'", path: target)
                }
            }
        }
    }

    /// A name for each layer of ``chain(of:)``: the path each was opened from.
    public static func layerName(_ disk: any DiskReader) -> String? {
        switch disk {
        case let image as Image: return image.path
        case let raw as RawImage: return raw.path
        case let raw as RawDisk: return raw.file.path
        default: return nil
        }
    }
}
