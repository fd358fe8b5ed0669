extension AddCOWImage {
    /// A run of clusters with one bitmap state, as guest bytes `[start, end)` clipped to a request.
    struct Run {
        var start: UInt64
        var end: UInt64
        /// Whether the run is in the image file (bit 1, or ALL_ALLOCATED).
        var inImageFile: Bool
        /// Clusters of the run.
        var clusters: Range<UInt64>
    }

    /// Calls `body` for each run of equal bitmap state in `[offset, offset+length)` (inside the
    /// disk); each lookup is a few lock-free loads of the bitmap's words.
    func forEachRun(at offset: UInt64, length: UInt64, _ body: (Run) throws -> Void) throws {
        let end = offset + length
        let cs = header.clusterSize
        var pos = offset
        while pos < end {
            let c = pos / cs
            let lastCluster = (end - 1) / cs
            let state: (set: Bool, count: UInt64) =
                isAllAllocated ? (true, lastCluster - c + 1) : bitmap.run(from: c, limit: lastCluster - c + 1)
            let runEnd = min(end, (c + state.count) * cs)
            try body(Run(start: pos, end: runEnd, inImageFile: state.set, clusters: c..<(c + state.count)))
            pos = runEnd
        }
    }

    /// Reads `buffer.count` guest bytes at `offset`: clusters in the image file from it, the others
    /// from the backing chain (zeroes past its end or without one).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try gate.request {
            try ensureOpen()
            try ensureInside(offset, UInt64(buffer.count))
            try forEachRun(at: offset, length: UInt64(buffer.count)) { run in
                let slice = UnsafeMutableRawBufferPointer(
                    rebasing: buffer[Int(run.start - offset)..<Int(run.end - offset)])
                if run.inImageFile {
                    try imageFile.readFully(into: slice, at: run.start)
                } else {
                    try readBacking(into: slice, at: run.start)
                }
            }
        }
    }

    /// Reads from the backing chain, zeroes where it has none or ends.
    func readBacking(into buffer: UnsafeMutableRawBufferPointer, at pos: UInt64) throws {
        guard let backing, !buffer.isEmpty else {
            buffer.zeroFill()
            return
        }
        try backing.readZeroFillingPastEnd(into: buffer, at: pos)
    }

    /// Reads like ``read(into:at:)`` when every byte is in the image file and in the page cache.
    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        gate.requestIfFree {
            guard !closed.isSet, (try? ensureInside(offset, UInt64(buffer.count))) != nil else { return false }
            var cached = true
            try? forEachRun(at: offset, length: UInt64(buffer.count)) { run in
                let slice = UnsafeMutableRawBufferPointer(
                    rebasing: buffer[Int(run.start - offset)..<Int(run.end - offset)])
                if !cached || !run.inImageFile || !imageFile.readIfCached(into: slice, at: run.start) {
                    cached = false
                }
            }
            return cached
        } ?? false
    }

    /// Block status: clusters in the image file at depth 0 (data, or zero where the image file has
    /// holes), the others from the backing chain (depth ≥ 1), or absent zeroes.
    public func extents(at offset: UInt64, length: UInt64) throws -> [Extent] {
        try gate.request {
            try ensureOpen()
            try ensureInside(offset, length)
            var out: [Extent] = []
            try forEachRun(at: offset, length: length) { run in
                if run.inImageFile {
                    for e in try imageFile.rawExtents(at: run.start, length: run.end - run.start) {
                        out.appendMerging(e)
                    }
                } else {
                    try out.appendBelow(backing, at: run.start, length: run.end - run.start)
                }
            }
            return out
        }
    }
}
