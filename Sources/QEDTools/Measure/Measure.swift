public import QED

/// `qemu-img measure`: how large an image file would be.
public enum Measure {
    /// What to measure.
    public enum Input {
        /// An empty image of this many bytes (`--size`).
        case empty(size: UInt64)
        /// The conversion of these disks, laid end to end like ``Convert``'s sources.
        case sources([any Disk])
    }

    /// The image to measure for.
    public struct Options: Sendable {
        /// Target format. Default QED.
        public var format: DiskFormat = .qed
        /// Cluster size in bytes of a QED or add-cow target. Default 64 KiB.
        public var clusterSize: UInt32 = 65536
        /// Table size in clusters of a QED target. Default 4.
        public var tableSize: UInt32 = 4
        /// Zero-detection granularity in bytes, as ``Convert/Options/sparseSize``. Default 4 KiB.
        public var sparseSize: UInt64 = 4096
        /// Stops between chunks of the sources.
        public var cancellation: Cancellation?

        /// Default options.
        public init() {}
    }

    /// The two figures qemu-img prints. Units: bytes.
    public struct Result: Sendable, Equatable {
        /// Bytes the file needs for the given content (`required size`).
        public var required: UInt64
        /// Bytes the file needs when every cluster is allocated (`fully allocated size`).
        public var fullyAllocated: UInt64
    }

    /// The file size of a QED image of `size` bytes in which `dataClusters` clusters and
    /// `l2Tables` L2 tables are allocated (header cluster, L1, tables, data), bytes.
    static func qedFileSize(
        clusterSize: UInt32, tableSize: UInt32, l2Tables: UInt64,
        dataClusters: UInt64
    ) -> UInt64 {
        UInt64(clusterSize) * (1 + UInt64(tableSize) * (1 + l2Tables) + dataClusters)
    }

    /// Measures `input` converted to `options.format`: for QED sources, `required` equals the size
    /// of the file that ``Convert/run(sources:target:options:)`` produces with the same cluster,
    /// table and sparse size — it runs the same zero detection.
    public static func run(_ input: Input, options: Options) throws -> Result {
        switch input {
        case .empty(let size):
            return try empty(
                size: size, format: options.format, clusterSize: options.clusterSize,
                tableSize: options.tableSize)
        case .sources(let sources):
            return try convert(
                sources: sources, format: options.format, clusterSize: options.clusterSize,
                tableSize: options.tableSize, sparseSize: options.sparseSize,
                cancellation: options.cancellation)
        }
    }

    /// Measures an empty image of `size` bytes.
    static func empty(size: UInt64, format: DiskFormat, clusterSize: UInt32, tableSize: UInt32) throws -> Result {
        switch format {
        case .raw:
            return Result(required: size, fullyAllocated: size)
        case .addCOW:
            return try addCOW(size: size, clusterSize: clusterSize)
        case .qed:
            let size = (size + 511) / 512 * 512
            try checkGeometry(size: size, clusterSize: clusterSize, tableSize: tableSize)
            return Result(
                required: qedFileSize(clusterSize: clusterSize, tableSize: tableSize, l2Tables: 0, dataClusters: 0),
                fullyAllocated: full(size: size, clusterSize: clusterSize, tableSize: tableSize))
        default:
            throw unmeasurable(format)
        }
    }

    /// Measures converting `sources` (laid end to end) to `format`.
    static func convert(
        sources: [any Disk], format: DiskFormat, clusterSize: UInt32, tableSize: UInt32,
        sparseSize: UInt64, cancellation: Cancellation?
    ) throws -> Result {
        let source = try ConcatenatedSource(sources)
        switch format {
        case .raw:
            return Result(required: source.size, fullyAllocated: source.size)
        case .addCOW:
            return try addCOW(size: source.size, clusterSize: clusterSize)
        case .qed:
            let size = (source.size + 511) / 512 * 512
            try checkGeometry(size: size, clusterSize: clusterSize, tableSize: tableSize)
            let g = Geometry(clusterSize: clusterSize, tableSize: tableSize)
            let planner = ConvertPlanner(
                source: source, sparseSize: sparseSize, targetIsZero: true, backing: nil,
                clusterSize: g.clusterSize)
            var clusters = Set<UInt64>()
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(planner.chunkSize), alignment: 4096)
            let spare = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 8)
            defer {
                buffer.deallocate()
                spare.deallocate()
            }
            for index in 0..<planner.chunkCount {
                try cancellation?.check()
                for a in try planner.plan(chunk: index, buffer: buffer, backingBuffer: spare).actions where !a.zero {
                    let first = a.offset >> g.clusterBits
                    let last = (a.offset + a.length - 1) >> g.clusterBits
                    for c in first...last { clusters.insert(c) }
                }
            }
            let tables = Set(clusters.map { $0 >> g.entryBits }).count
            return Result(
                required: qedFileSize(
                    clusterSize: clusterSize, tableSize: tableSize, l2Tables: UInt64(tables),
                    dataClusters: UInt64(clusters.count)),
                fullyAllocated: full(size: size, clusterSize: clusterSize, tableSize: tableSize))
        default:
            throw unmeasurable(format)
        }
    }

    /// add-cow: the metadata file plus the raw image file, which is measured as raw measures (its
    /// full size, whatever the content). Units: bytes.
    static func addCOW(size: UInt64, clusterSize: UInt32) throws -> Result {
        let total = try AddCOWImage.metadataLength(size: size, clusterSize: UInt64(clusterSize)) + size
        return Result(required: total, fullyAllocated: total)
    }

    /// The error for a format whose file sizes this verb cannot compute (each format's layout is
    /// its own arithmetic).
    static func unmeasurable(_ format: DiskFormat) -> QEDError {
        QEDError(.unsupported, "measure does not know the layout of the format '\(format.rawValue)'")
    }

    static func full(size: UInt64, clusterSize: UInt32, tableSize: UInt32) -> UInt64 {
        let g = Geometry(clusterSize: clusterSize, tableSize: tableSize)
        let clusters = g.clusters(coveringBytes: size)
        let tables = (size + g.bytesPerL2 - 1) / g.bytesPerL2
        return qedFileSize(clusterSize: clusterSize, tableSize: tableSize, l2Tables: tables, dataClusters: clusters)
    }

    static func checkGeometry(size: UInt64, clusterSize: UInt32, tableSize: UInt32) throws {
        do {
            try Image.validateCreate(
                options: CreateOptions(size: size, clusterSize: clusterSize, tableSize: tableSize),
                size: size, path: "")
        } catch var error as QEDError {
            error.path = nil
            throw error
        }
    }
}
