/// Builds BLOCK_STATUS replies from the extents a storage layer reports.
public enum NBDBlockStatus {
    /// Turns storage extents into the extents of one `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` chunk (64-bit lengths).
    ///
    /// Zero-length extents are skipped, neighbours with equal flags are merged, the total is clipped so it
    /// never exceeds `requestLength` (the last extent is shortened), and the count is capped (at 1 with
    /// `REQ_ONE`). The result covers a prefix of the request; a client asks again for the rest. No sum can
    /// overflow: every length taken is bounded by what remains of `requestLength`.
    /// - Parameters:
    ///   - runs: `(length, flags)` pairs in bytes, in export order, starting at the request offset.
    ///   - requestLength: The effect length of the BLOCK_STATUS request, in bytes.
    ///   - requestOne: Whether the client set `NBD_CMD_FLAG_REQ_ONE`.
    ///   - maximumExtentCount: Cap on the number of extents (ignored below 1); qemu's 131072 by default.
    /// - Returns: The extents, empty only when the input covers nothing.
    public static func extendedExtents(
        from runs: some Sequence<(length: UInt64, flags: UInt32)>,
        requestLength: UInt64,
        requestOne: Bool,
        maximumExtentCount: Int = NBD.defaultMaximumExtentCount
    ) -> [NBDExtendedExtent] {
        let limit = requestOne ? 1 : max(1, maximumExtentCount)
        var remaining = requestLength
        var extents: [NBDExtendedExtent] = []
        for run in runs {
            guard remaining > 0 else { break }
            guard run.length > 0 else { continue }
            let take = min(run.length, remaining)
            let flags = UInt64(run.flags)
            if let last = extents.last, last.flags == flags {
                // Cannot overflow: the sum of all extents never exceeds requestLength.
                extents[extents.count - 1].length = last.length + take
            } else {
                guard extents.count < limit else { break }
                extents.append(NBDExtendedExtent(length: take, flags: flags))
            }
            remaining -= take
        }
        return extents
    }

    /// Turns storage extents into the extents of one compact `NBD_REPLY_TYPE_BLOCK_STATUS` chunk; the rules
    /// of ``extendedExtents(from:requestLength:requestOne:maximumExtentCount:)``, with 32-bit lengths (a
    /// compact request is at most 2³² − 1 bytes long, so every extent fits).
    /// - Parameters:
    ///   - runs: `(length, flags)` pairs in bytes, in export order, starting at the request offset.
    ///   - requestLength: The length of the BLOCK_STATUS request, in bytes.
    ///   - requestOne: Whether the client set `NBD_CMD_FLAG_REQ_ONE`.
    ///   - maximumExtentCount: Cap on the number of extents (ignored below 1); qemu's 131072 by default.
    /// - Returns: The extents, empty only when the input covers nothing.
    public static func extents(
        from runs: some Sequence<(length: UInt64, flags: UInt32)>,
        requestLength: UInt32,
        requestOne: Bool,
        maximumExtentCount: Int = NBD.defaultMaximumExtentCount
    ) -> [NBDExtent] {
        Self.extendedExtents(
            from: runs,
            requestLength: UInt64(requestLength),
            requestOne: requestOne,
            maximumExtentCount: maximumExtentCount
        ).map {
            // Both fit: lengths sum to at most requestLength (32 bits), flags came in as 32 bits.
            NBDExtent(length: UInt32(truncatingIfNeeded: $0.length), flags: UInt32(truncatingIfNeeded: $0.flags))
        }
    }

    /// Builds the BLOCK_STATUS chunk for one metadata context: `BLOCK_STATUS_EXT` when `extended`, else the
    /// compact `BLOCK_STATUS` (then `requestLength` must fit in 32 bits, as it does for any compact request).
    ///
    /// The protocol wants exactly one such chunk per selected context; set `isFinal` on the last one (or send
    /// a final ``NBDStructuredReplyChunk/done(cookie:)`` afterwards).
    /// - Parameters:
    ///   - cookie: The cookie of the request.
    ///   - contextID: The metadata context id.
    ///   - runs: `(length, flags)` pairs in bytes, in export order, starting at the request offset.
    ///   - requestLength: The effect length of the request, in bytes.
    ///   - requestOne: Whether the client set `NBD_CMD_FLAG_REQ_ONE`.
    ///   - isFinal: Whether to set ``NBDReplyFlags/done``.
    ///   - extended: Whether extended headers are in use.
    ///   - maximumExtentCount: Cap on the number of extents.
    /// - Returns: The chunk, or `nil` if `runs` covers nothing (answer with an error chunk instead).
    public static func chunk(
        cookie: UInt64,
        contextID: UInt32,
        runs: some Sequence<(length: UInt64, flags: UInt32)>,
        requestLength: UInt64,
        requestOne: Bool,
        isFinal: Bool,
        extended: Bool = false,
        maximumExtentCount: Int = NBD.defaultMaximumExtentCount
    ) -> NBDStructuredReplyChunk? {
        let content: NBDStructuredReplyChunk.Content
        if extended {
            let extents = Self.extendedExtents(
                from: runs, requestLength: requestLength, requestOne: requestOne,
                maximumExtentCount: maximumExtentCount)
            guard !extents.isEmpty else { return nil }
            content = .blockStatusExtended(contextID: contextID, extents: extents)
        } else {
            let extents = Self.extents(
                from: runs, requestLength: UInt32(clamping: requestLength), requestOne: requestOne,
                maximumExtentCount: maximumExtentCount)
            guard !extents.isEmpty else { return nil }
            content = .blockStatus(contextID: contextID, extents: extents)
        }
        return NBDStructuredReplyChunk(cookie: cookie, flags: isFinal ? .done : [], content: content)
    }
}
