extension AddCOWImage {
    /// Clusters still read from the backing chain (bit clear); 0 with ALL_ALLOCATED.
    public var clustersInBacking: UInt64 {
        isAllAllocated ? 0 : clusterCount - min(clusterCount, bitmap.setCount)
    }

    /// Copies the clusters of guest bytes `[offset, offset+length)` that are still in the backing
    /// chain into the image file (streaming), and returns how many bytes that covered.
    ///
    /// Each run of clear bits goes through the allocating step a guest write takes: under the
    /// claim on its clusters the bits are looked up again (a cluster a guest write allocated
    /// meanwhile is skipped, never overwritten), the backing chain's content is written (zeroes
    /// punched) and the bits are published; before returning, the call flushes (image file, then
    /// the bits), so what it pulled stays pulled. The guest view never changes, and a stream
    /// stopped at any point — even by a kill — leaves a valid image that a second stream
    /// completes. Runs beside guest requests (not exclusive); the range must lie inside the disk.
    /// Units: guest bytes.
    @discardableResult
    public func pullFromBacking(at offset: UInt64, length: UInt64) throws -> UInt64 {
        try gate.request {
            try ensureWritable()
            try ensureInside(offset, length)
            guard length > 0, !isAllAllocated else { return 0 }
            var pulled: UInt64 = 0
            try forEachRun(at: offset, length: length) { run in
                guard !run.inImageFile else { return }
                // Whole clusters: the run's start and end are widened to its clusters' bounds.
                let cs = header.clusterSize
                let start = run.clusters.lowerBound * cs
                let end = min(virtualSize, run.clusters.upperBound * cs)
                try allocate(
                    Run(start: start, end: end, inImageFile: false, clusters: run.clusters), payload: .backing)
                pulled += end - start
            }
            if pulled > 0 { try syncBoth() }
            return pulled
        }
    }

    /// Sets ALL_ALLOCATED once every cluster's bit is set: from then on the image file alone is
    /// the disk (the bitmap and the backing file are no longer read, and other tools may use the
    /// raw image file directly). The image file and the bitmap are synced first, then the header's
    /// compatible-features field (one 8-byte write inside the first sector) is written and synced.
    /// Throws ``QEDError/Code/invalidArgument`` naming the count while clusters are still in the
    /// backing chain. Exclusive (waits for running requests). Idempotent.
    public func markAllAllocated() throws {
        try gate.exclusive {
            try ensureWritable()
            guard !isAllAllocated else { return }
            let missing = clustersInBacking
            guard missing == 0 else {
                throw QEDError(
                    .invalidArgument,
                    "\(missing) clusters are still in the backing file; stream them before setting ALL_ALLOCATED",
                    value: missing, path: path)
            }
            try syncBoth()
            let features = headerOnDisk.withLock { $0.compatibleFeatures } | AddCOWHeader.allAllocatedBit
            let bytes = (0..<8).map { UInt8(truncatingIfNeeded: features >> (8 * $0)) }
            try failure.recording { try metadataFile.writeBytes(bytes, at: AddCOWHeader.compatibleFeaturesOffset) }
            try metadataFlusher.sync(metadataFile)
            headerOnDisk.withLock { $0.compatibleFeatures = features }
            _ = allAllocated.setOnce()
        }
    }
}
