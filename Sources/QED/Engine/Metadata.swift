extension Image {
    /// Grows the virtual disk to `newSize` bytes (a multiple of 512). Only the header changes: the
    /// new space reads from the backing file or as zeroes. Shrinking is refused, as QEMU does.
    public func resize(to newSize: UInt64) throws {
        try gate.exclusive { try resizeExclusively(to: newSize) }
    }

    private func resizeExclusively(to newSize: UInt64) throws {
        try ensureWritable()
        let current = virtualSize
        guard newSize >= current else {
            throw QEDError(.unsupported, "Shrinking images is currently not supported", value: newSize, path: path)
        }
        guard newSize % 512 == 0, newSize <= geometry.maxImageSize else {
            throw QEDError(
                .invalidImageSize,
                "Invalid image size specified: \(newSize) must be a multiple of 512 and at most \(geometry.maxImageSize)",
                value: newSize, path: path)
        }
        try header.update { $0.imageSize = newSize }
        sizeMirror.store(newSize, ordering: .releasing)
    }

    /// Changes the backing file recorded in the header without touching data (`rebase -u`).
    /// `name` nil removes it. `.raw` records BACKING_FORMAT_NO_PROBE; other formats are probed
    /// later (QED has no format field). The name goes at byte 64 and must fit the header area.
    /// With `open` true (default) the new backing file is opened first and an error leaves the
    /// image unchanged; with false the name is recorded as given (`rebase -u` to a missing file).
    /// Exclusive: waits for running requests to finish.
    public func setBacking(name: String?, format: BackingFormat?, open: Bool = true) throws {
        try gate.exclusive { try setBackingExclusively(name: name, format: format, open: open) }
    }

    private func setBackingExclusively(name: String?, format: BackingFormat?, open: Bool) throws {
        try ensureWritable()
        let nameBytes = Array((name ?? "").utf8)
        if let name {
            guard !name.isEmpty, !nameBytes.contains(0) else {
                throw QEDError(
                    .invalidArgument, "backing file name must be non-empty and free of NUL bytes", path: path)
            }
        }
        let current = currentHeader
        if name != nil && current.compatFeatures != 0 {
            throw QEDError(
                .unsupported, "cannot set a backing file while unknown compatible features are set",
                value: current.compatFeatures, path: path)
        }
        let end = UInt64(Header.encodedSize) + UInt64(nameBytes.count)
        guard end <= geometry.headerBytes, nameBytes.count <= Int(Header.maxBackingNameLength) else {
            throw QEDError(
                .noSpace, "backing file name of \(nameBytes.count) bytes does not fit the header area",
                value: UInt64(nameBytes.count), path: path)
        }
        var newDisk: (any Disk)?
        if let name, open, options.openBacking {
            let seen: Set<FileIdentity> = FileIdentity(path: path).map { [$0] } ?? []
            newDisk = try BackingResolver.open(
                name: name, format: format, imagePath: path, seen: seen, options: options)
        }
        do {
            if end > geometry.clusterSize && current.autoclearFeatures & JournalArea.validBit != 0 {
                // The name reaches the journal region: the journal is turned off (its own synced
                // header update) before the name is written there, so no header ever marks a
                // region valid that holds part of a name.
                try turnJournalOff()
            }
            try header.update(trailer: nameBytes) { h in
                h.features.remove([.backingFile, .backingFormatNoProbe])
                if name != nil {
                    h.features.insert(.backingFile)
                    if format == .raw { h.features.insert(.backingFormatNoProbe) }
                }
                h.backingNameOffset = UInt32(Header.encodedSize)
                h.backingNameSize = UInt32(nameBytes.count)
            }
        } catch {
            try? newDisk?.close()
            throw error
        }
        let old = backingState.withLock { state -> (any Disk)? in
            let old = state.disk
            state = BackingState(name: name, format: format == .raw ? .raw : nil, disk: newDisk)
            return old
        }
        needCheck.setManagesBit(name == nil)
        try old?.close()
    }
}
