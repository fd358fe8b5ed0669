/// One contiguous range of a disk and where its content comes from: the one extents / block-status
/// shape of every format, in `qemu-img map` terms. ``Disk/extents(at:length:)`` returns them; NBD
/// block status and `map` are built from them.
///
/// Units: `offset` and `length` are guest bytes; `hostOffset` is a byte offset in the file of the
/// layer at `depth`.
public struct Extent: Sendable, Equatable {
    /// Guest byte offset where the range starts.
    public var offset: UInt64
    /// Length in bytes.
    public var length: UInt64
    /// Layer of the backing chain that provides it: 0 = this disk, 1 = its backing file, ...
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
    public init(
        offset: UInt64, length: UInt64, depth: Int, present: Bool, zero: Bool, data: Bool,
        hostOffset: UInt64?
    ) {
        self.offset = offset
        self.length = length
        self.depth = depth
        self.present = present
        self.zero = zero
        self.data = data
        self.hostOffset = hostOffset
    }

    /// Whether `next` continues this extent: it starts where this one ends, with the same depth
    /// and flags, and its host offset (if any) continues this one's (QEMU's `entry_mergeable`).
    public func canMerge(with next: Extent) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end == next.offset, depth == next.depth, present == next.present,
            zero == next.zero, data == next.data
        else { return false }
        switch (hostOffset, next.hostOffset) {
        case (nil, nil): return true
        case let (a?, b?):
            let (hostEnd, hostOverflow) = a.addingReportingOverflow(length)
            return !hostOverflow && hostEnd == b
        default: return false
        }
    }
}

extension Array where Element == Extent {
    /// Appends `extent` (unless empty), merging it into the last one when it continues it.
    public mutating func appendMerging(_ extent: Extent) {
        guard extent.length > 0 else { return }
        if let last = self.last, last.canMerge(with: extent) {
            self[count - 1].length += extent.length
        } else {
            append(extent)
        }
    }

    /// Appends what the layer below shows for guest `[pos, pos+length)` of a disk whose own
    /// metadata leaves that range to its backing file: the backing disk's extents one level deeper,
    /// and zeroes at depth 0 where there is no backing disk or the range is past its end (QEMU's
    /// block layer answers "zero" there without descending, so `qemu-img map` reports depth 0).
    mutating func appendBelow(_ backing: (any Disk)?, at pos: UInt64, length: UInt64) throws {
        var covered: UInt64 = 0
        if let backing, pos < backing.virtualSize {
            let inside = Swift.min(length, backing.virtualSize - pos)
            for var e in try backing.extents(at: pos, length: inside) {
                e.depth += 1
                appendMerging(e)
            }
            covered = inside
        }
        if covered < length {
            appendMerging(
                Extent(
                    offset: pos + covered, length: length - covered, depth: 0, present: false, zero: true,
                    data: false, hostOffset: nil))
        }
    }
}
