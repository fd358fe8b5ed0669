extension AddCOWImage {
    /// Names another backing file (or none) in the header: `qemu-img rebase -u`. The content is
    /// not compared or copied; the open image keeps reading its old backing disk, and the new name
    /// takes effect at the next open. The names are laid out again from byte 76 (backing name
    /// first) and the whole header area is rewritten and synced; it is one sector, so one atomic
    /// write under the crash model, while 76 bytes plus the names fit in 512. Exclusive.
    ///
    /// Throws (typed, naming the value) for a name with a NUL byte, an empty name, a backing name
    /// equal to the image file's name, names that do not fit the header area, or a format name
    /// longer than 15 bytes. `format`: recorded as given; nil probes the new backing file (the
    /// format field may not be empty while a backing file is named).
    public func setBacking(name: String?, format: DiskFormat?) throws {
        try gate.exclusive {
            try ensureWritable()
            var format = format
            if let name, format == nil {
                format = try DiskOpener.probe(path: BackingResolver.resolve(name, relativeTo: path))
            }
            let current = headerOnDisk.withLock { $0 }
            var next: AddCOWHeader
            do {
                next = try AddCOWHeader(
                    imageName: current.imageName, imageFormat: current.imageFormat, backingName: name,
                    backingFormat: name == nil ? nil : format?.rawValue, clusterBits: current.clusterBits,
                    allAllocated: current.isAllAllocated)
            } catch let error as QEDError {
                throw error.naming(path)
            }
            next.features = current.features
            next.compatibleFeatures = current.compatibleFeatures
            try failure.recording { try metadataFile.writeBytes(next.encoded(), at: 0) }
            try metadataFlusher.sync(metadataFile)
            headerOnDisk.withLock { $0 = next }
        }
    }

    /// Empties the image after a commit: every bit is cleared (the clusters read the backing
    /// chain again, which now holds their data), the metadata file synced, and only then the image
    /// file's space given back (punched; it reads zeroes, unused under clear bits). Refused without
    /// a backing file or with ALL_ALLOCATED (nothing would show through). Exclusive.
    public func makeEmpty() throws {
        try gate.exclusive {
            try ensureWritable()
            guard backing != nil, !isAllAllocated else {
                throw QEDError(
                    .invalidArgument, "an add-cow image without an open backing file cannot be emptied", path: path)
            }
            let clusters = clusterCount
            try failure.recording { try bitmap.clear(0..<clusters) }
            try metadataFlusher.sync(metadataFile)
            do {
                try imageFile.punchHole(at: 0, length: virtualSize)
            } catch let e as QEDError where e.code == .unsupported {}
        }
    }
}
