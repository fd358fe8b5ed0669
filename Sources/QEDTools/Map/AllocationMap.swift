public import QED

/// qemu-io's `map`: runs of allocated / not allocated in the top layer of a disk only (data and
/// zero clusters count as allocated; raw files are allocated throughout).
public enum AllocationMap {
    /// Nothing to choose: qemu-io maps the whole disk.
    public struct Options: Sendable {
        /// Default options.
        public init() {}
    }

    /// One run of equal allocation status. Units: bytes.
    public struct Run: Sendable, Equatable {
        /// Guest byte offset where the run starts.
        public var offset: UInt64
        /// Length in bytes.
        public var length: UInt64
        /// Whether the top layer holds the run.
        public var allocated: Bool
    }

    /// The runs covering the disk, in guest order.
    public struct Result: Sendable, Equatable {
        /// Consecutive runs never have the same status.
        public var runs: [Run]
    }

    /// The allocation runs of `disk`.
    public static func run(disk: any Disk, options: Options) throws -> Result {
        var runs: [Run] = []
        let size = disk.virtualSize
        guard size > 0 else { return Result(runs: runs) }
        // A raw disk's extents are all present at depth 0 (holes included), so allocated throughout.
        for e in try disk.extents(at: 0, length: size) {
            let allocated = e.depth == 0 && e.present
            if let last = runs.last, last.allocated == allocated {
                runs[runs.count - 1].length += e.length
            } else {
                runs.append(Run(offset: e.offset, length: e.length, allocated: allocated))
            }
        }
        return Result(runs: runs)
    }
}
