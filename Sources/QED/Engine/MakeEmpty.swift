extension Image {
    /// Drops every mapping of the image, as if it had just been created with the same header:
    /// the L1 table is cleared and made durable first, then the file is truncated to the header
    /// area and L1 table (after a crash in between, the image is consistent, with leaks).
    /// Unallocated ranges then read from the backing file again. Exclusive: waits for running
    /// requests to finish and holds new ones back until it returns.
    public func makeEmpty() throws {
        try gate.exclusive { try makeEmptyExclusively() }
    }

    private func makeEmptyExclusively() throws {
        try ensureWritable()
        try flusher.sync(file)
        try failure.recording { try l1.clearAll(writingTo: file) }
        try flusher.sync(file)
        cache.invalidateAll()
        let end = max(geometry.headerBytes, currentHeader.l1TableOffset + geometry.tableBytes)
        let length = try file.length()
        if end < allocator.fileSize || length != end {
            try file.setLength(end)
            try flusher.sync(file)
            allocator.truncated(to: end)
        }
    }
}
