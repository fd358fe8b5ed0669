#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One contiguous range of a disk and where its content comes from, in `qemu-img map` terms.
public struct Extent: Sendable, Equatable {
    /// Guest byte offset where the range starts.
    public var offset: UInt64
    /// Length in bytes.
    public var length: UInt64
    /// Layer of the backing chain that provides it: 0 = this image, 1 = its backing file, ...
    /// For ranges no layer provides, the depth of the last layer consulted.
    public var depth: Int
    /// Whether some layer of the chain provides the range (false: reads zeroes by default).
    public var present: Bool
    /// Whether the range is known to read as zeroes.
    public var zero: Bool
    /// Whether the range is stored as data in the layer at `depth`.
    public var data: Bool
    /// Byte offset in that layer's file, when the range is stored contiguously there.
    public var hostOffset: UInt64?

    /// An extent with every field given.
    public init(offset: UInt64, length: UInt64, depth: Int, present: Bool, zero: Bool, data: Bool,
                hostOffset: UInt64?) {
        self.offset = offset
        self.length = length
        self.depth = depth
        self.present = present
        self.zero = zero
        self.data = data
        self.hostOffset = hostOffset
    }

    /// Whether `next` continues this extent with the same attributes (and contiguous host offset).
    public func canMerge(with next: Extent) -> Bool {
        guard offset + length == next.offset, depth == next.depth, present == next.present,
              zero == next.zero, data == next.data else { return false }
        switch (hostOffset, next.hostOffset) {
        case (nil, nil): return true
        case let (a?, b?): return a + length == b
        default: return false
        }
    }
}

extension Array where Element == Extent {
    /// Appends `extent`, merging it into the last one when they continue each other.
    mutating func appendMerging(_ extent: Extent) {
        guard extent.length > 0 else { return }
        if let last = self.last, last.canMerge(with: extent) {
            self[count - 1].length += extent.length
        } else {
            append(extent)
        }
    }
}

/// A read-only view of a disk that can serve as a backing file: a QED ``Image`` or a raw file.
public protocol DiskReader: AnyObject, Sendable {
    /// Guest-visible size in bytes.
    var virtualSize: UInt64 { get }
    /// Reads `buffer.count` bytes at guest byte `offset`; bytes past ``virtualSize`` read as zeroes.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    /// Where the content of `[offset, offset+length)` comes from; depths are relative to this disk
    /// (0 = this disk). The extents cover the range exactly; the range must be inside the disk.
    func extents(at offset: UInt64, length: UInt64) throws -> [Extent]
    /// Releases the disk (and its own backing chain).
    func close() throws
}

/// A raw disk image used as a backing file: guest offset = file offset.
public final class RawDisk: DiskReader {
    /// The file.
    public let file: any BlockFile
    /// File length in bytes at open time.
    public let virtualSize: UInt64

    /// Wraps `file`; its current length is the disk size.
    public init(file: any BlockFile) throws {
        self.file = file
        self.virtualSize = try file.length()
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try file.readFully(into: buffer, at: offset)
    }

    public func extents(at offset: UInt64, length: UInt64) throws -> [Extent] {
        try file.rawExtents(at: offset, length: length)
    }

    public func close() throws {
        (file as? PosixFile)?.close()
    }
}

extension BlockFile {
    /// The extents of a raw disk stored in this file (guest offset = file offset): data where the
    /// file system holds data, zero (still present, as QEMU reports raw holes) where it has holes.
    public func rawExtents(at offset: UInt64, length: UInt64) throws -> [Extent] {
        var out: [Extent] = []
        var pos = offset
        let end = offset + length
        while pos < end {
            let (isData, n) = try allocation(at: pos, limit: end - pos)
            let step = max(1, min(n, end - pos))
            out.appendMerging(Extent(offset: pos, length: step, depth: 0, present: true, zero: !isData,
                                     data: isData, hostOffset: pos))
            pos += step
        }
        return out
    }
}

/// Identity of a file on the host (device and inode), to detect backing chains that loop.
struct FileIdentity: Hashable, Sendable {
    let device: UInt64
    let inode: UInt64

    /// The identity of the file at `path`, or nil if it cannot be stat'ed.
    init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}

/// Resolves and opens backing files.
enum BackingResolver {
    /// Longest backing chain accepted; deeper chains are reported as an error.
    static let maxDepth = 64

    /// The path a backing name refers to: absolute names as they are, relative names against the
    /// directory of `imagePath` (as QEMU does).
    static func resolve(_ name: String, relativeTo imagePath: String) -> String {
        if name.hasPrefix("/") { return name }
        guard let slash = imagePath.lastIndex(of: "/") else { return name }
        return String(imagePath[...slash]) + name
    }

    /// Whether the file at `path` starts with the QED magic.
    static func probeIsQED(_ file: any BlockFile) throws -> Bool {
        let head = try file.readBytes(count: 4, at: 0)
        return head == [0x51, 0x45, 0x44, 0x00]
    }

    /// Opens the backing file `name` of the image at `imagePath`, read-only with shared locks,
    /// probing its format unless `format` is given. `seen` holds the chain so far (loop check).
    static func open(name: String, format: BackingFormat?, imagePath: String, seen: Set<FileIdentity>,
                     options: OpenOptions) throws -> any DiskReader {
        guard seen.count < maxDepth else {
            throw QEDError(.backingFile, "backing chain is deeper than \(maxDepth) images", path: imagePath)
        }
        let path = resolve(name, relativeTo: imagePath)
        guard let identity = FileIdentity(path: path) else {
            throw QEDError(.backingFile, "Could not open backing file '\(path)': No such file or directory",
                           path: imagePath, errno: ENOENT)
        }
        guard !seen.contains(identity) else {
            throw QEDError(.backingFile, "backing chain loops: '\(path)' is already part of it", path: imagePath)
        }
        let file = try PosixFile(path: path, writable: false)
        do {
            if options.locking { try ImageLock.acquire(fd: file.descriptor.rawValue, mode: .shared, path: path) }
            let isQED = try format.map { $0 == .qed } ?? probeIsQED(file)
            if !isQED { return try RawDisk(file: file) }
            var backingOptions = options
            backingOptions.readOnly = true
            backingOptions.forceShare = true
            return try Image.open(file: file, options: backingOptions, lockHeld: true,
                                  seen: seen.union([identity]))
        } catch {
            file.close()
            throw error
        }
    }
}
