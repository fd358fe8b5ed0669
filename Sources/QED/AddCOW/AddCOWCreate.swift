#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What to create: ``AddCOWImage/create(path:options:)``.
///
/// Units: bytes.
public struct AddCOWCreateOptions: Sendable {
    /// The image file name to record (relative names resolve against the metadata file's
    /// directory). Created, `size` bytes long, when it does not exist; an existing file is kept
    /// as it is and its length is the disk size.
    public var imageFile: String
    /// The image file's format: only raw.
    public var imageFormat: DiskFormat = .raw
    /// Virtual size in bytes for a new image file; nil takes the backing file's size. For an
    /// existing image file it must be nil or equal to the file's length.
    public var size: UInt64?
    /// Backing file name to record, or nil (then ALL_ALLOCATED is set: the image file is the disk).
    public var backingFile: String?
    /// The backing file's format to record; nil stores the probed format.
    public var backingFormat: DiskFormat?
    /// Cluster size in bytes: a power of two in 4 KiB ... 2 MiB. Default 64 KiB.
    public var clusterSize: UInt64 = 65536

    /// Options for an image file named `imageFile`; set the other fields as needed.
    public init(
        imageFile: String, size: UInt64? = nil, backingFile: String? = nil, backingFormat: DiskFormat? = nil,
        clusterSize: UInt64 = 65536
    ) {
        self.imageFile = imageFile
        self.size = size
        self.backingFile = backingFile
        self.backingFormat = backingFormat
        self.clusterSize = clusterSize
    }
}

extension AddCOWImage {
    /// Creates (or truncates) the metadata file at `path`: header, names, a zeroed bitmap. The
    /// image file is created when missing. With a backing file its format is recorded (probed
    /// when not given) and the size defaults to its size.
    public static func create(path: String, options: AddCOWCreateOptions) throws {
        guard options.imageFormat == .raw else {
            throw QEDError(
                .unsupported, "add-cow image file format '\(options.imageFormat)' is not supported: only raw",
                path: path)
        }
        guard options.clusterSize.isPowerOfTwo, let bits = UInt32(exactly: options.clusterSize.trailingZeroBitCount),
            AddCOWHeader.clusterBitsRange.contains(bits)
        else {
            throw QEDError(
                .invalidClusterSize, "add-cow cluster size must be a power of 2 in [4096, 2097152]",
                value: options.clusterSize, path: path)
        }
        guard !options.imageFile.isEmpty, !options.imageFile.utf8.contains(0) else {
            throw QEDError(.invalidArgument, "add-cow needs an image file name (image_file) without NUL", path: path)
        }
        if let backing = options.backingFile {
            guard backing != options.imageFile else {
                throw QEDError(
                    .invalidArgument, "the image file and the backing file have the same name '\(backing)'",
                    path: path)
            }
        }
        let imagePath = BackingResolver.resolve(options.imageFile, relativeTo: path)
        if let id = FileIdentity(path: imagePath), id == FileIdentity(path: path) {
            throw QEDError(.invalidArgument, "the image file is the add-cow file itself", path: path)
        }
        let (backingFormat, backingSize) = try probeBacking(options, path: path)
        let header = try AddCOWHeader(
            imageName: options.imageFile, backingName: options.backingFile, backingFormat: backingFormat?.rawValue,
            clusterBits: bits, allAllocated: options.backingFile == nil)
        let size = try prepareImageFile(at: imagePath, size: options.size ?? backingSize, metadataPath: path)
        let layout = try AddCOWLayout(
            clusterSize: header.clusterSize, headerSize: UInt64(header.headerSize), size: size)
        let file = try PosixFile.create(path: path, lock: .readWrite)
        defer { file.close() }
        try file.setLength(layout.metadataLength)
        try file.writeBytes(header.encoded(), at: 0)
        try file.sync()
    }

    /// The backing file's format (probed when not given) and size, or (nil, nil) without one.
    private static func probeBacking(_ options: AddCOWCreateOptions, path: String) throws -> (DiskFormat?, UInt64?) {
        guard let name = options.backingFile else { return (nil, nil) }
        guard !name.isEmpty, !name.utf8.contains(0) else {
            throw QEDError(.invalidArgument, "backing file name must be non-empty and free of NUL bytes", path: path)
        }
        let resolved = BackingResolver.resolve(name, relativeTo: path)
        guard FileIdentity(path: resolved) != nil else {
            // Not openable: the format must be given, and the size too (checked by the caller).
            guard let format = options.backingFormat else {
                throw QEDError(
                    .backingFile, "Could not open backing file '\(resolved)' to probe its format", path: path,
                    errno: ENOENT)
            }
            return (format, nil)
        }
        var probe = OpenOptions(readOnly: true, forceShare: true)
        probe.openBacking = false
        let disk = try DiskOpener.open(path: resolved, format: options.backingFormat, options: probe)
        defer { try? disk.close() }
        guard disk.format.rawValue.utf8.count <= AddCOWHeader.formatFieldSize - 1 else {
            throw QEDError(.invalidArgument, "backing format name '\(disk.format)' is longer than 15 bytes", path: path)
        }
        return (disk.format, disk.virtualSize)
    }

    /// Creates the image file with `size` bytes when missing; returns the existing file's length
    /// otherwise (refusing a different `size`).
    private static func prepareImageFile(at imagePath: String, size: UInt64?, metadataPath: String) throws -> UInt64 {
        if FileIdentity(path: imagePath) != nil {
            let file = try PosixFile(path: imagePath, writable: false)
            defer { file.close() }
            let length = try file.length()
            if let size, size != length {
                throw QEDError(
                    .invalidArgument,
                    "the existing image file '\(imagePath)' is \(length) bytes, not the size \(size) asked for",
                    value: size, path: metadataPath)
            }
            return length
        }
        guard let size else {
            throw QEDError(.invalidArgument, "Image creation needs a size parameter", path: metadataPath)
        }
        try RawImage.create(path: imagePath, size: size)
        return size
    }
}
