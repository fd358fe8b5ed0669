extension AddCOWImage {
    /// Grows the disk to `newSize` bytes (shrinking is refused). Exclusive. The new area reads as
    /// zeroes: with a backing file, the old partial last cluster is completed from the backing
    /// chain and the new clusters' bits are set (they are in the grown, zero image file) before the
    /// image file grows; the metadata file is extended first, so a failure there leaves the image
    /// file alone.
    public func resize(to newSize: UInt64) throws {
        try gate.exclusive {
            try ensureWritable()
            let oldSize = virtualSize
            guard newSize >= oldSize else {
                throw QEDError(
                    .unsupported, "add-cow images can only grow (\(oldSize) to \(newSize) bytes)", value: newSize,
                    path: path)
            }
            guard newSize > oldSize else { return }
            let layout = try layout(forSize: newSize)
            let oldClusters = clusterCount
            if try metadataFile.length() < layout.metadataLength {
                try failure.recording { try metadataFile.setLength(layout.metadataLength) }
            }
            if !isAllAllocated && backing != nil {
                let cs = header.clusterSize
                if oldSize % cs != 0, !bitmap.isSet(oldClusters - 1) {
                    // Its bytes past the old end would read the backing file: keep the head, zero the rest.
                    try copyFromBacking(((oldClusters - 1) * cs)..<oldSize)
                    try imageFlusher.sync(imageFile)
                    try failure.recording { try bitmap.set((oldClusters - 1)..<oldClusters) }
                }
                bitmap.grow(to: layout.clusters)
                try failure.recording { try bitmap.set(oldClusters..<layout.clusters) }
                try metadataFlusher.sync(metadataFile)
            } else {
                bitmap.grow(to: layout.clusters)
            }
            try failure.recording { try imageFile.setLength(newSize) }
            try imageFlusher.sync(imageFile)
            sizeMirror.store(newSize, ordering: .releasing)
        }
    }

    /// Checks the bitmap against the files, in `qemu-img check`'s terms (counts are clusters):
    /// a corruption for each bit set past the end of the disk (an image file shorter than the
    /// bitmap says, or a stale bit), and one for a metadata file too short to hold the bitmap.
    /// `repair` clears those bits and extends the metadata file. Exclusive.
    public func check(repair: Bool) throws -> CheckReport {
        try gate.exclusive {
            try ensureOpen()
            if repair { try ensureWritable() }
            let layout = try layout(forSize: virtualSize)
            var report = CheckReport()
            report.totalClusters = layout.clusters
            report.allocatedClusters = allocatedClusters
            guard !isAllAllocated else { return report }
            let fileLength = try metadataFile.length()
            let stale = try staleBits(layout: layout, fileLength: fileLength)
            var corruptions = stale.count
            let short = fileLength < layout.metadataLength
            if short { corruptions += 1 }
            if repair && corruptions > 0 {
                if short { try failure.recording { try metadataFile.setLength(layout.metadataLength) } }
                for c in stale { try failure.recording { try bitmap.clear(c..<(c + 1)) } }
                try metadataFlusher.sync(metadataFile)
                report.corruptionsFixed = corruptions
            } else {
                report.corruptions = corruptions
            }
            return report
        }
    }

    /// Clusters at or past the disk's end whose bit is set in the metadata file (in the bitmap's
    /// on-disk bytes up to the file's end, the whole clusters the bitmap occupies).
    private func staleBits(layout: AddCOWLayout, fileLength: UInt64) throws -> [UInt64] {
        let bitmapEnd = min(fileLength, layout.metadataLength)
        guard bitmapEnd > layout.headerSize else { return [] }
        let firstByte = layout.clusters / 8
        let start = layout.headerSize + firstByte
        guard start < bitmapEnd else { return [] }
        let bytes = try metadataFile.readBytes(count: Int(bitmapEnd - start), at: start)
        var out: [UInt64] = []
        for (i, byte) in bytes.enumerated() where byte != 0 {
            for bit in 0..<8 where byte & (1 << bit) != 0 {
                let c = (firstByte + UInt64(i)) * 8 + UInt64(bit)
                if c >= layout.clusters { out.append(c) }
            }
        }
        return out
    }
}

extension AddCOWImage {
    /// The bitmap layout for a disk of `size` bytes; errors name the image.
    func layout(forSize size: UInt64) throws -> AddCOWLayout {
        do {
            return try AddCOWLayout(clusterSize: header.clusterSize, headerSize: UInt64(header.headerSize), size: size)
        } catch let error as QEDError {
            throw error.naming(path)
        }
    }
}
