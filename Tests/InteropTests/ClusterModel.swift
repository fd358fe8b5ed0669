/// A model of a QED image at the granularity its block status has. QED has no zero-cluster flag, so the
/// engine zeroes as follows: whole clusters keep their state (allocated ones are zeroed in place,
/// unallocated ones already read as zeroes), and the partial clusters at either end get zero data written,
/// which allocates them. A write allocates every cluster it touches. Bytes are modelled separately (the last
/// write or zeroing covering a byte decides it).
struct ClusterModel {
    let clusterSize: UInt64
    /// Allocated clusters (index = offset / clusterSize).
    private(set) var allocated: Set<UInt64> = []
    /// The byte operations, in order: fill value, or nil for zeroes.
    private(set) var operations: [(start: UInt64, end: UInt64, byte: UInt8?)] = []

    init(clusterSize: UInt64 = 65536) { self.clusterSize = clusterSize }

    mutating func write(_ offset: UInt64, _ length: UInt64, byte: UInt8) {
        guard length > 0 else { return }
        for cluster in (offset / clusterSize)...((offset + length - 1) / clusterSize) { allocated.insert(cluster) }
        operations.append((offset, offset + length, byte))
    }

    mutating func zero(_ offset: UInt64, _ length: UInt64) {
        guard length > 0 else { return }
        let end = offset + length
        if offset % clusterSize != 0 { allocated.insert(offset / clusterSize) }
        if end % clusterSize != 0 { allocated.insert(end / clusterSize) }
        operations.append((offset, end, nil))
    }

    /// The byte at `offset`.
    func byte(at offset: UInt64) -> UInt8 {
        operations.last { $0.start <= offset && offset < $0.end }?.byte ?? 0
    }

    /// `[offset, offset + length)` as runs of one byte value: (offset, length, byte).
    func runs(at offset: UInt64, length: UInt64) -> [(offset: UInt64, length: UInt64, byte: UInt8)] {
        let end = offset + length
        var cuts: Set<UInt64> = [offset, end]
        for operation in operations {
            for cut in [operation.start, operation.end] where cut > offset && cut < end { cuts.insert(cut) }
        }
        let sorted = cuts.sorted()
        var runs: [(offset: UInt64, length: UInt64, byte: UInt8)] = []
        for (start, stop) in zip(sorted, sorted.dropFirst()) {
            let value = byte(at: start)
            if let last = runs.last, last.byte == value {
                runs[runs.count - 1].length += stop - start
            } else {
                runs.append((start, stop - start, value))
            }
        }
        return runs
    }

    /// The `base:allocation` extents for `[offset, offset + length)`: 0 for allocated clusters, 3
    /// (hole, zero) elsewhere; neighbours merged.
    func extents(at offset: UInt64, length: UInt64) -> [(length: UInt64, flags: UInt64)] {
        let end = offset + length
        var extents: [(length: UInt64, flags: UInt64)] = []
        func add(_ length: UInt64, _ flags: UInt64) {
            guard length > 0 else { return }
            if let last = extents.last, last.flags == flags {
                extents[extents.count - 1].length += length
            } else {
                extents.append((length, flags))
            }
        }
        var position = offset
        for cluster in allocated.sorted() {
            let start = max(cluster * clusterSize, offset)
            let stop = min((cluster + 1) * clusterSize, end)
            guard start < stop else { continue }
            add(start - position, 3)
            add(stop - start, 0)
            position = stop
        }
        add(end - position, 3)
        return extents
    }
}
