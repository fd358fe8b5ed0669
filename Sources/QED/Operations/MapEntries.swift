/// One row of `qemu-img map`: a guest range and where its content comes from.
///
/// Units: `start`, `length` and `offset` are bytes (`offset` in the file of the layer at `depth`).
public struct MapEntry: Sendable, Equatable {
    /// Guest byte offset.
    public var start: UInt64
    /// Length in bytes.
    public var length: UInt64
    /// Layer of the backing chain that provides the range (0 = the image itself).
    public var depth: Int
    /// Whether some layer provides the range (false: it reads as zeroes by default).
    public var present: Bool
    /// Whether the range reads as zeroes.
    public var zero: Bool
    /// Whether the range is stored as data.
    public var data: Bool
    /// Byte offset in the file of the layer at `depth`, when the range is stored there contiguously.
    public var offset: UInt64?
    /// The file holding the range: set only together with `offset`, like QEMU.
    public var filename: String?

    /// An entry with every field given.
    public init(start: UInt64, length: UInt64, depth: Int, present: Bool, zero: Bool, data: Bool,
                offset: UInt64?, filename: String?) {
        self.start = start
        self.length = length
        self.depth = depth
        self.present = present
        self.zero = zero
        self.data = data
        self.offset = offset
        self.filename = filename
    }

    /// QEMU's `entry_mergeable`: same flags, depth, file, and a contiguous offset.
    public func canMerge(with next: MapEntry) -> Bool {
        guard length > 0, zero == next.zero, data == next.data, depth == next.depth, present == next.present,
              filename == next.filename, (offset == nil) == (next.offset == nil) else { return false }
        if let offset, let nextOffset = next.offset { return offset + length == nextOffset }
        return true
    }

    /// The entries of `[start, start+length)` of `disk`, merged the way `qemu-img map` merges
    /// them (JSON output); `length` nil means to the end of the disk.
    public static func map(_ disk: any DiskReader, start: UInt64 = 0, length: UInt64? = nil) throws -> [MapEntry] {
        let size = disk.virtualSize
        let from = min(start, size)
        let count = min(length ?? (size - from), size - from)
        let names = DiskOpener.chain(of: disk).map { DiskOpener.layerName($0) }
        var out: [MapEntry] = []
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
                let entry = MapEntry(start: e.offset, length: e.length, depth: e.depth, present: e.present,
                                     zero: e.zero, data: e.data, offset: e.hostOffset, filename: name)
                if let last = out.last, last.canMerge(with: entry) {
                    out[out.count - 1].length += entry.length
                } else {
                    out.append(entry)
                }
            }
            pos += step
        }
        return out
    }

    /// The rows `qemu-img map` prints in human form: ranges stored as data, not known zero.
    public static func humanRows(_ entries: [MapEntry]) -> [MapEntry] {
        entries.filter { $0.data && !$0.zero }
    }

    /// qemu-io's `map`: runs of allocated / not allocated in the top layer only (data and zero
    /// clusters count as allocated; raw files are allocated throughout). Lengths in bytes.
    public static func topLayerAllocation(_ disk: any DiskReader) throws -> [(offset: UInt64, length: UInt64, allocated: Bool)] {
        var out: [(offset: UInt64, length: UInt64, allocated: Bool)] = []
        let size = disk.virtualSize
        guard size > 0 else { return out }
        let extents: [Extent] = disk is Image ? try disk.extents(at: 0, length: size)
            : [Extent(offset: 0, length: size, depth: 0, present: true, zero: false, data: true, hostOffset: 0)]
        for e in extents {
            let allocated = e.depth == 0 && e.present
            if let last = out.last, last.allocated == allocated {
                out[out.count - 1].length += e.length
            } else {
                out.append((e.offset, e.length, allocated))
            }
        }
        return out
    }
}
