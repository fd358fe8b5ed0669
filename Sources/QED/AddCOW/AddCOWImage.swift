import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An open add-cow image (docs/add-cow.md): guest data in a raw *image file* at the same offsets
/// as in the guest disk, and a *metadata file* with a header and one bit per cluster saying whether
/// the cluster is in the image file (1) or must be read from the backing file (0).
///
/// Thread-safety: every method may be called from many threads at once. Reads and writes to
/// allocated clusters hold no lock beyond a short bitmap lookup; an allocating write holds only its
/// own clusters (``InflightClusters``) while it copies the untouched head and tail from the backing
/// chain, writes, syncs the image file and then sets the bits, so allocations of different clusters
/// run in parallel and copied backing data never overwrites a guest write. ``resize(to:)``,
/// ``check(repair:)`` and ``close()`` are exclusive (``OperationGate``).
///
/// Durability: a bit is written only after its cluster's data is durable in the image file;
/// ``flush()`` syncs the image file, then the metadata file. After a failed sync or bitmap write
/// the image is failed (``StickyFailure``): later writes and flushes throw until it is reopened.
///
/// Units: guest bytes unless named clusters; the image file's offsets equal guest offsets.
public final class AddCOWImage: Disk {
    /// The metadata (`.add-cow`) file.
    public let metadataFile: any BlockFile
    /// The raw image file holding the guest data.
    public let imageFile: any BlockFile
    /// The header as read at open (or written at create); what this open image works with.
    public let header: AddCOWHeader
    /// The header as it is on disk now: changed by ``markAllAllocated()`` and
    /// ``setBacking(name:format:)`` (which takes effect at the next open). Guards only itself;
    /// read by ``backingFile``, never on a request's path.
    let headerOnDisk: Mutex<AddCOWHeader>
    /// Whether the image was opened read-only.
    public let isReadOnly: Bool
    /// The open backing disk, or nil (none, ALL_ALLOCATED, or not opened).
    public let backing: (any Disk)?

    let bitmap: COWBitmap
    let failure: StickyFailure
    let imageFlusher: FlushCoordinator
    let metadataFlusher: FlushCoordinator
    /// Clusters being allocated (rank 1: held for a whole allocating step).
    let inflight = InflightClusters()
    /// Keeps resize, check and close apart from requests (rank 0).
    let gate = OperationGate()
    /// Guest size in bytes: the image file's length, stored after a resize is durable.
    let sizeMirror: Atomic<UInt64>
    let closed = AtomicFlag()
    /// ALL_ALLOCATED: raised at open from the header, or by ``markAllAllocated()`` once it is durable.
    let allAllocated = AtomicFlag()

    init(
        metadataFile: any BlockFile, imageFile: any BlockFile, header: AddCOWHeader, bitmap: COWBitmap,
        size: UInt64, readOnly: Bool, backing: (any Disk)?
    ) {
        self.metadataFile = metadataFile
        self.imageFile = imageFile
        self.header = header
        headerOnDisk = Mutex(header)
        self.bitmap = bitmap
        isReadOnly = readOnly
        self.backing = backing
        failure = StickyFailure(path: metadataFile.path)
        imageFlusher = FlushCoordinator(failure: failure)
        metadataFlusher = FlushCoordinator(failure: failure)
        sizeMirror = Atomic(size)
        if header.isAllAllocated { _ = allAllocated.setOnce() }
    }

    deinit {
        if !closed.isSet { try? close() }
    }

    // MARK: Disk facts

    /// Always ``DiskFormat/addCOW``.
    public var format: DiskFormat { .addCOW }
    /// The metadata file's path.
    public var path: String { metadataFile.path }
    /// Guest size in bytes (the image file's length).
    public var virtualSize: UInt64 { sizeMirror.load(ordering: .acquiring) }
    /// The cluster size in bytes (the bitmap's granularity).
    public var clusterSize: UInt64? { header.clusterSize }
    /// Always false: add-cow has no "needs a check" mark.
    public var isDirty: Bool { false }
    /// Whether ALL_ALLOCATED is set: the image file alone is the disk (from the header at open, or
    /// since ``markAllAllocated()``).
    public var isAllAllocated: Bool { allAllocated.isSet }
    /// The image file's path (its name resolved against the metadata file's directory).
    public var imageFilePath: String { imageFile.path }
    /// The image file: guest data in it sits at its guest offsets (`map`'s File column).
    public var dataFilePath: String { imageFile.path }
    /// Clusters whose bit is set (all of them with ALL_ALLOCATED).
    public var allocatedClusters: UInt64 { isAllAllocated ? clusterCount : bitmap.setCount }

    /// `info`'s add-cow facts: the image file as named and resolved, its format, the cluster size,
    /// the clusters in the image file and ALL_ALLOCATED.
    public var formatSpecific: [FormatSpecificField] {
        [
            FormatSpecificField("image-file", .string(header.imageName)),
            FormatSpecificField("full-image-file", .string(imageFile.path)),
            FormatSpecificField("image-file-format", .string(header.imageFormat)),
            FormatSpecificField("cluster-size", .uint(header.clusterSize)),
            FormatSpecificField("allocated-clusters", .uint(allocatedClusters)),
            FormatSpecificField("all-allocated", .bool(isAllAllocated)),
        ]
    }

    /// The backing file the header names now (even with ALL_ALLOCATED, when it is not opened).
    public var backingFile: BackingFileReference? {
        let now = headerOnDisk.withLock { $0 }
        guard let name = now.backingName else { return nil }
        return BackingFileReference(
            name: name, path: BackingResolver.resolve(name, relativeTo: path),
            format: now.backingFormat.map { DiskFormat(rawValue: $0) })
    }

    /// Clusters of the disk now: ceil(virtual size / cluster size) (cannot overflow).
    var clusterCount: UInt64 {
        let size = virtualSize
        let cs = header.clusterSize
        return size / cs + (size % cs == 0 ? 0 : 1)
    }

    /// Bytes the two files occupy on the host, or nil when either does not know.
    public func allocatedBytes() -> UInt64? {
        guard let a = (try? metadataFile.allocatedBytes()) ?? nil, let b = (try? imageFile.allocatedBytes()) ?? nil
        else { return nil }
        return a &+ b
    }

    // MARK: Guards

    func ensureOpen() throws {
        if closed.isSet { throw QEDError(.closed, "the image is closed", path: path) }
    }

    func ensureWritable() throws {
        try ensureOpen()
        if isReadOnly { throw QEDError(.readOnly, "the image is opened read-only", path: path) }
        try failure.check()
    }

    // MARK: Closing

    /// Flushes (when writable), closes the backing chain and both files. Idempotent; exclusive.
    public func close() throws {
        try gate.exclusive {
            guard closed.setOnce() else { return }
            var firstError: (any Error)?
            if !isReadOnly {
                do { try syncBoth() } catch { firstError = error }
            }
            if let backing {
                do { try backing.close() } catch { firstError = firstError ?? error }
            }
            imageFile.close()
            metadataFile.close()
            if let firstError { throw firstError }
        }
    }

    /// Syncs the image file, writes the bits published since the last time (their data is now
    /// durable), then syncs the metadata file: bits always after the data they describe.
    func syncBoth() throws {
        try failure.recording {
            try bitmap.writePending { try imageFlusher.sync(imageFile) }
        }
        try metadataFlusher.sync(metadataFile)
    }
}
