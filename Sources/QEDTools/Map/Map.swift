public import QED

/// `qemu-img map`: where each guest range of a disk comes from, merged the way qemu-img merges
/// its JSON rows.
public enum Map {
    /// Which range to map. Units: bytes.
    public struct Options: Sendable {
        /// First guest byte (`--start-offset`). Default 0.
        public var start: UInt64 = 0
        /// Bytes to map from there (`--max-length`); nil: to the end of the disk.
        public var length: UInt64?

        /// Default options: the whole disk.
        public init() {}
    }

    /// One row: an ``Extent`` of the disk and the file of the layer that stores it.
    public struct Row: Sendable, Equatable {
        /// The guest range and where its content comes from (`hostOffset` is QEMU's `offset`).
        public var extent: Extent
        /// The file holding the range: set only together with `extent.hostOffset`, like QEMU.
        public var filename: String?

        /// A row for `extent` stored in `filename`.
        public init(extent: Extent, filename: String?) {
            self.extent = extent
            self.filename = filename
        }

        /// QEMU's `entry_mergeable`: the extents merge (same flags and depth, contiguous host
        /// offsets) and the file is the same. Empty rows merge with nothing.
        public func canMerge(with next: Row) -> Bool {
            extent.length > 0 && filename == next.filename && extent.canMerge(with: next.extent)
        }
    }

    /// The merged rows of the mapped range, in guest order.
    public struct Result: Sendable, Equatable {
        /// Every row, as the JSON output lists them.
        public var rows: [Row]

        /// The rows `qemu-img map` prints in human form: ranges stored as data, not known zero.
        public var humanRows: [Row] {
            rows.filter { $0.extent.data && !$0.extent.zero }
        }
    }

    /// Maps `[options.start, options.start + options.length)` of `disk`, clipped to the disk.
    public static func run(disk: any Disk, options: Options) throws -> Result {
        let size = disk.virtualSize
        let from = min(options.start, size)
        let count = min(options.length ?? (size - from), size - from)
        // The file each layer's host offsets are in (add-cow: its raw image file, not the metadata).
        let names = DiskOpener.chain(of: disk).map(\.dataFilePath)
        var rows: [Row] = []
        var pos = from
        let end = from + count
        var window: UInt64 = 1 << 30
        while pos < end {
            // Like qemu-img, ask for 1 GiB at a time where there is data; across a stretch that
            // answers as one extent without data, double the window, so an empty disk of 2^62
            // bytes takes a few dozen calls rather than 2^32 (the merged result is the same).
            let step = min(end - pos, window)
            let extents = try disk.extents(at: pos, length: step)
            if extents.count == 1 && !extents[0].data {
                window = min(window << 1, 1 << 62)
            } else {
                window = 1 << 30
            }
            for e in extents {
                let name = e.hostOffset != nil && e.depth < names.count ? names[e.depth] : nil
                let row = Row(extent: e, filename: name)
                if let last = rows.last, last.canMerge(with: row) {
                    rows[rows.count - 1].extent.length += e.length
                } else {
                    rows.append(row)
                }
            }
            pos += step
        }
        return Result(rows: rows)
    }
}
