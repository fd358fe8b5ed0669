extension Image {
    /// Reads `buffer.count` guest bytes at `offset`: allocated clusters from the file, zero
    /// clusters as zeroes, unallocated ones from the backing chain (zeroes past its end or
    /// without one). Contiguous clusters are read with one system call.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try gate.request { try readRuns(into: buffer, at: offset, cachedOnly: false) }
    }

    /// ``read(into:at:)`` only if it needs no waiting for the disk: every L2 table involved is in
    /// the cache and every data byte in the page cache; no backing file is read. Returns false
    /// otherwise (also for errors and out-of-range requests), leaving `buffer` unspecified; the
    /// caller then does a normal read. For event loops, which must not block (it also returns false
    /// while an exclusive operation runs, instead of waiting for it).
    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        gate.requestIfFree { (try? readRuns(into: buffer, at: offset, cachedOnly: true)) != nil } ?? false
    }

    /// The read loop of both: with `cachedOnly`, whatever would wait for the disk (an uncached L2
    /// table, data not in the page cache, a backing file) throws ``NotCached``.
    private func readRuns(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, cachedOnly: Bool) throws {
        try ensureOpen()
        try ensureInside(offset, UInt64(buffer.count))
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let run = try lookup(pos, maxLength: UInt64(buffer.count - done), cachedOnly: cachedOnly)
            let n = Int(run.length)
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n])
            switch run.kind {
            case .data(let host):
                if cachedOnly {
                    guard file.readIfCached(into: slice, at: host) else { throw NotCached() }
                } else {
                    try file.readFully(into: slice, at: host)
                }
            case .zero:
                slice.zeroFill()
            case .unallocated:
                if cachedOnly && backing != nil { throw NotCached() }
                try readBacking(into: slice, at: pos)
            }
            done += n
        }
    }

    /// Reads `count` guest bytes at `offset` into a new array.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return out
    }

    /// Reads guest bytes from the backing chain, zeroes where it has none or ends.
    func readBacking(into buffer: UnsafeMutableRawBufferPointer, at pos: UInt64) throws {
        guard let disk = backing else {
            buffer.zeroFill()
            return
        }
        try disk.readZeroFillingPastEnd(into: buffer, at: pos)
    }

    /// Where each part of `[offset, offset+length)` comes from, following the backing chain:
    /// data in this image (depth 0, host offset), zero clusters, ranges of a backing file (depth ≥ 1),
    /// or nothing (reads zeroes). Adjacent equal ranges are merged. The basis of `map` and NBD
    /// block status.
    public func extents(at offset: UInt64, length: UInt64) throws -> [Extent] {
        try gate.request { try extentsOfRequest(at: offset, length: length) }
    }

    private func extentsOfRequest(at offset: UInt64, length: UInt64) throws -> [Extent] {
        try ensureOpen()
        try ensureInside(offset, length)
        var out: [Extent] = []
        var pos = offset
        let end = offset + length
        while pos < end {
            let run = try lookup(pos, maxLength: end - pos)
            switch run.kind {
            case .data(let host):
                out.appendMerging(
                    Extent(
                        offset: pos, length: run.length, depth: 0, present: true, zero: false,
                        data: true, hostOffset: host))
            case .zero:
                out.appendMerging(
                    Extent(
                        offset: pos, length: run.length, depth: 0, present: true, zero: true,
                        data: false, hostOffset: nil))
            case .unallocated:
                var length = run.length
                let next = pos + length
                if next < end && next % geometry.bytesPerL2 == 0 {
                    // Empty L1 entries after this run: one extent, not one lookup per table.
                    length += unmappedTablesSpan(from: next, limit: end - next)
                }
                try out.appendBelow(backing, at: pos, length: length)
                pos += length
                continue
            }
            pos += run.length
        }
        return out
    }
}
