public import QED

/// `qemu-img measure`: how large an image file would be.
public enum Measure {
    /// The two figures qemu-img prints. Units: bytes.
    public struct Result: Sendable, Equatable {
        /// Bytes the file needs for the given content (`required size`).
        public var required: UInt64
        /// Bytes the file needs when every cluster is allocated (`fully allocated size`).
        public var fullyAllocated: UInt64
    }

    /// The file size of a QED image of `size` bytes in which `dataClusters` clusters and
    /// `l2Tables` L2 tables are allocated (header cluster, L1, tables, data), bytes.
    public static func qedFileSize(clusterSize: UInt32, tableSize: UInt32, l2Tables: UInt64,
                                   dataClusters: UInt64) -> UInt64 {
        UInt64(clusterSize) * (1 + UInt64(tableSize) * (1 + l2Tables) + dataClusters)
    }

    /// Measures an empty image of `size` bytes (`--size`).
    public static func empty(size: UInt64, format: DiskFormat, clusterSize: UInt32 = 65536,
                             tableSize: UInt32 = 4) throws -> Result {
        switch format {
        case .raw:
            return Result(required: size, fullyAllocated: size)
        case .qed:
            let size = (size + 511) / 512 * 512
            try checkGeometry(size: size, clusterSize: clusterSize, tableSize: tableSize)
            return Result(required: qedFileSize(clusterSize: clusterSize, tableSize: tableSize, l2Tables: 0, dataClusters: 0),
                          fullyAllocated: full(size: size, clusterSize: clusterSize, tableSize: tableSize))
        }
    }

    /// Measures converting `sources` (laid end to end) to `format`: for QED, `required` equals the
    /// size of the file that ``Convert/run(sources:target:options:)`` produces with the same
    /// cluster and table size and default `-S` (4 KiB) — it runs the same zero detection.
    public static func convert(sources: [any DiskReader], format: DiskFormat, clusterSize: UInt32 = 65536,
                               tableSize: UInt32 = 4, sparseSize: UInt64 = 4096,
                               cancellation: Cancellation? = nil) throws -> Result {
        let source = ConcatenatedSource(sources)
        switch format {
        case .raw:
            return Result(required: source.size, fullyAllocated: source.size)
        case .qed:
            let size = (source.size + 511) / 512 * 512
            try checkGeometry(size: size, clusterSize: clusterSize, tableSize: tableSize)
            let g = Geometry(clusterSize: clusterSize, tableSize: tableSize)
            let planner = ConvertPlanner(source: source, sparseSize: sparseSize, targetIsZero: true, backing: nil,
                                         clusterSize: g.clusterSize)
            var clusters = Set<UInt64>()
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(planner.chunkSize), alignment: 4096)
            let spare = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 8)
            defer { buffer.deallocate(); spare.deallocate() }
            for index in 0..<planner.chunkCount {
                try cancellation?.check()
                for a in try planner.plan(chunk: index, buffer: buffer, backingBuffer: spare).actions where !a.zero {
                    let first = a.offset >> g.clusterBits
                    let last = (a.offset + a.length - 1) >> g.clusterBits
                    for c in first...last { clusters.insert(c) }
                }
            }
            let tables = Set(clusters.map { $0 >> g.entryBits }).count
            return Result(required: qedFileSize(clusterSize: clusterSize, tableSize: tableSize, l2Tables: UInt64(tables),
                                                dataClusters: UInt64(clusters.count)),
                          fullyAllocated: full(size: size, clusterSize: clusterSize, tableSize: tableSize))
        }
    }

    static func full(size: UInt64, clusterSize: UInt32, tableSize: UInt32) -> UInt64 {
        let g = Geometry(clusterSize: clusterSize, tableSize: tableSize)
        let clusters = g.clusters(coveringBytes: size)
        let tables = (size + g.bytesPerL2 - 1) / g.bytesPerL2
        return qedFileSize(clusterSize: clusterSize, tableSize: tableSize, l2Tables: tables, dataClusters: clusters)
    }

    static func checkGeometry(size: UInt64, clusterSize: UInt32, tableSize: UInt32) throws {
        do {
            try Image.validateCreate(options: CreateOptions(size: size, clusterSize: clusterSize, tableSize: tableSize),
                                     size: size, path: "")
        } catch var error as QEDError {
            error.path = nil
            throw error
        }
    }
}
