extension AddCOWImage {
    /// What an allocating step puts into the guest range it was asked to write.
    enum Payload {
        /// Guest bytes; the buffer starts at the request's offset.
        case bytes(UnsafeRawBufferPointer, requestOffset: UInt64)
        /// Zeroes.
        case zeroes
        /// The backing chain's content (streaming): copied only into clusters still in the backing
        /// chain; a cluster a guest write allocated meanwhile is left alone.
        case backing

        /// Whether clusters already in the image file are written too (guest writes), or skipped
        /// (``backing``: what is there is newer than the backing chain).
        var overwritesImageFile: Bool {
            if case .backing = self { return false }
            return true
        }

        /// Writes the part of the payload for guest bytes `[start, end)` into the image file
        /// (``backing`` through ``AddCOWImage/copyFromBacking(_:)``).
        func write(to file: any BlockFile, start: UInt64, end: UInt64) throws {
            guard start < end else { return }
            switch self {
            case .bytes(let buffer, let requestOffset):
                let slice = UnsafeRawBufferPointer(
                    rebasing: buffer[Int(start - requestOffset)..<Int(end - requestOffset)])
                try file.write(slice, at: start)
            case .zeroes:
                if !file.zeroRange(at: start, length: end - start) {
                    try file.writeZeroes(at: start, count: end - start)
                }
            case .backing:
                throw QEDError(
                    .invalidArgument, "backing data is copied by the image, not the payload", path: file.path)
            }
        }
    }

    /// Writes `bytes` at `offset`: in place where the clusters are in the image file (no lock),
    /// through an allocating step (``allocate(_:payload:)``) where they are not.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try gate.request {
            try ensureWritable()
            try ensureInside(offset, UInt64(bytes.count))
            guard !bytes.isEmpty else { return }
            let payload = Payload.bytes(bytes, requestOffset: offset)
            try forEachRun(at: offset, length: UInt64(bytes.count)) { run in
                if run.inImageFile {
                    try payload.write(to: imageFile, start: run.start, end: run.end)
                } else {
                    try allocate(run, payload: payload)
                }
            }
        }
    }

    /// Makes `[offset, offset+length)` read as zeroes. Clusters in the image file are zeroed there
    /// (hole-punched with `unmap`); the others are allocated with zeroes, except where they read
    /// zeroes already (no backing file, or past its end), which needs no change.
    public func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws {
        try gate.request {
            try ensureWritable()
            try ensureInside(offset, length)
            guard length > 0 else { return }
            try forEachRun(at: offset, length: length) { run in
                if run.inImageFile {
                    if unmap, (try? imageFile.punchHole(at: run.start, length: run.end - run.start)) != nil { return }
                    try Payload.zeroes.write(to: imageFile, start: run.start, end: run.end)
                } else if run.start >= (backing?.virtualSize ?? 0) {
                    return
                } else {
                    try allocate(run, payload: .zeroes)
                }
            }
        }
    }

    /// Gives back the image file's space of whole clusters that are in it (they then read as
    /// zeroes, their bits stay set). Clusters still in the backing chain are left alone: clearing
    /// their bit would make them read the backing file instead of zeroes, and partial clusters are
    /// left alone too.
    public func discard(at offset: UInt64, length: UInt64) throws {
        try gate.request {
            try ensureWritable()
            try ensureInside(offset, length)
            let cs = header.clusterSize
            guard let first = offset.roundedUp(toMultipleOf: cs) else { return }
            let end = (offset + length).roundedDown(toMultipleOf: cs)
            guard first < end else { return }
            try forEachRun(at: first, length: end - first) { run in
                guard run.inImageFile else { return }
                do {
                    try imageFile.punchHole(at: run.start, length: run.end - run.start)
                } catch let e as QEDError where e.code == .unsupported {}
            }
        }
    }

    /// Makes every completed write durable: the image file, then the metadata file.
    public func flush() throws {
        try gate.request {
            try ensureOpen()
            guard !isReadOnly else { return }
            try syncBoth()
        }
    }

    /// The allocating step for a run of clusters whose bits were clear at lookup: holds the run's
    /// clusters, looks their bits up again, writes the payload in place where another request
    /// allocated them meanwhile, and otherwise copies the head and tail the payload leaves
    /// untouched from the backing chain, writes the payload and publishes the bits (in effect at
    /// once; written to the file by the next flush, after the image file's sync). Another writer
    /// of these clusters waits for the claim, so a guest write is never overwritten by copied
    /// backing data.
    func allocate(_ run: Run, payload: Payload) throws {
        inflight.acquire(run.clusters)
        defer { inflight.release(run.clusters) }
        let cs = header.clusterSize
        let size = virtualSize
        var newlySet: [Range<UInt64>] = []
        try forEachRun(at: run.start, length: run.end - run.start) { now in
            if now.inImageFile {
                if payload.overwritesImageFile {
                    try payload.write(to: imageFile, start: now.start, end: now.end)
                }
                return
            }
            let clusterStart = now.clusters.lowerBound * cs
            let clusterEnd = min(size, now.clusters.upperBound * cs)
            try copyFromBacking(clusterStart..<now.start)
            if case .backing = payload {
                try copyFromBacking(now.start..<now.end)
            } else {
                try payload.write(to: imageFile, start: now.start, end: now.end)
            }
            try copyFromBacking(now.end..<clusterEnd)
            newlySet.append(now.clusters)
        }
        // Published, not written: the next flush syncs the image file and then writes the bits
        // (COWBitmap.writePending), so a bit never reaches the disk before its data.
        for range in newlySet { bitmap.publish(range) }
    }

    /// Copies guest bytes `range` from the backing chain into the image file; zeroes where the
    /// backing chain has none. A range that reads as zeroes is punched (or zeroed) rather than
    /// written, so streaming a sparse backing file keeps the image file sparse.
    func copyFromBacking(_ range: Range<UInt64>) throws {
        guard !range.isEmpty else { return }
        var buffer = [UInt8](repeating: 0, count: Int(range.count))
        try buffer.withUnsafeMutableBytes { try readBacking(into: $0, at: range.lowerBound) }
        if buffer.withUnsafeBytes({ isAllZero($0) }) {
            if (try? imageFile.punchHole(at: range.lowerBound, length: UInt64(range.count))) != nil { return }
            try Payload.zeroes.write(to: imageFile, start: range.lowerBound, end: range.upperBound)
            return
        }
        try imageFile.writeBytes(buffer, at: range.lowerBound)
    }
}
