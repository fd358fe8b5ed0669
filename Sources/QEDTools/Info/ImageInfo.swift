public import QED

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What `qemu-img info` reports about one image (QEMU 7.2's `ImageInfo`).
///
/// Units: sizes in bytes.
public struct ImageInfo: Sendable, Equatable {
    /// The path as given (or, for backing files, as resolved against the overlay's directory).
    public var filename: String
    /// The image's format.
    public var format: DiskFormat
    /// Guest-visible size, bytes.
    public var virtualSize: UInt64
    /// Host bytes the file occupies (`st_blocks`·512), nil if unknown.
    public var actualSize: UInt64?
    /// Cluster size in bytes (nil for raw).
    public var clusterSize: UInt64?
    /// Whether the image is marked as needing a check (QED's NEED_CHECK; QEMU's `dirty-flag`).
    public var dirty: Bool
    /// The backing file name as stored in the header.
    public var backingFilename: String?
    /// The backing file name resolved against the image's directory.
    public var fullBackingFilename: String?
    /// The backing file's format as the image records it (QED records only `raw`), nil if none.
    public var backingFilenameFormat: String?
    /// The format's own facts (``Disk/formatSpecific``), empty for most formats.
    public var formatSpecific: [FormatSpecificField] = []

    /// Collects the info of the open `disk`.
    public init(disk: any Disk) {
        filename = disk.path
        format = disk.format
        virtualSize = disk.virtualSize
        actualSize = disk.allocatedBytes()
        clusterSize = disk.clusterSize
        dirty = disk.isDirty
        let backing = disk.backingFile
        backingFilename = backing?.name
        fullBackingFilename = backing?.path
        backingFilenameFormat = backing?.format?.rawValue
        formatSpecific = disk.formatSpecific
    }

    /// The info of the image at `path` and, with `backingChain`, of every image below it (top
    /// first). Images are opened read-only without their backing files; `forceShare` is `-U`.
    /// ``Info/run(path:options:)`` is the entry point.
    static func collect(
        path: String, format: DiskFormat?, forceShare: Bool,
        backingChain: Bool
    ) throws -> [ImageInfo] {
        var out: [ImageInfo] = []
        var nextPath: String? = path
        var nextFormat = format
        var seen: Set<FileIdentity> = []
        while let current = nextPath {
            if let id = FileIdentity(path: current) {
                guard seen.insert(id).inserted else {
                    throw QEDError(.backingFile, "Backing file '\(current)' creates an infinite loop.")
                }
            }
            // Layers below the top are opened like backing files: sharing everything.
            var options = OpenOptions(readOnly: true, forceShare: forceShare || !out.isEmpty)
            options.openBacking = false
            options.autoCheck = false
            let disk: any Disk
            do {
                disk = try DiskOpener.open(path: current, format: nextFormat, options: options)
            } catch var error as QEDError where out.isEmpty {
                // qemu-img's form for the image named on the command line.
                error.message = "Could not open '\(current)': \(error.message)"
                error.path = nil
                throw error
            }
            let info = ImageInfo(disk: disk)
            try? disk.close()
            out.append(info)
            guard backingChain, let full = info.fullBackingFilename else { break }
            guard FileIdentity(path: full) != nil else {
                // qemu-img's words: the layer cannot be opened.
                throw QEDError(
                    .backingFile, "Could not open '\(full)': Could not open '\(full)': No such file or directory",
                    errno: ENOENT)
            }
            nextPath = full
            nextFormat = info.backingFilenameFormat.flatMap(DiskOpener.format(named:))
        }
        return out
    }
}
