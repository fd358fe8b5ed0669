/// Builds BLOCK_STATUS replies from the extents a storage layer reports.
public enum NBDBlockStatus {
    /// Turns storage extents into the extents of one BLOCK_STATUS chunk.
    ///
    /// Zero-length extents are skipped, neighbours with equal flags are merged, the total is clipped so it
    /// never exceeds `requestLength` (the last extent is shortened), and the count is capped (at 1 with
    /// `REQ_ONE`). The result covers a prefix of the request; a client asks again for the rest.
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
        let limit = requestOne ? 1 : max(1, maximumExtentCount)
        var remaining = requestLength
        var extents: [NBDExtent] = []
        for run in runs {
            guard remaining > 0 else { break }
            guard run.length > 0 else { continue }
            let take = UInt32(min(run.length, UInt64(remaining)))
            if let last = extents.last, last.flags == run.flags {
                // Cannot overflow: the sum of all extents never exceeds requestLength.
                extents[extents.count - 1].length = last.length + take
            } else {
                guard extents.count < limit else { break }
                extents.append(NBDExtent(length: take, flags: run.flags))
            }
            remaining -= take
        }
        return extents
    }

    /// Builds the BLOCK_STATUS chunk for one metadata context.
    ///
    /// The protocol wants exactly one such chunk per selected context; set `isFinal` on the last one (or send
    /// a final ``NBDStructuredReplyChunk/done(cookie:)`` afterwards).
    /// - Parameters:
    ///   - cookie: The cookie of the request.
    ///   - contextID: The metadata context id.
    ///   - runs: `(length, flags)` pairs in bytes, in export order, starting at the request offset.
    ///   - requestLength: The length of the request, in bytes.
    ///   - requestOne: Whether the client set `NBD_CMD_FLAG_REQ_ONE`.
    ///   - isFinal: Whether to set ``NBDReplyFlags/done``.
    ///   - maximumExtentCount: Cap on the number of extents.
    /// - Returns: The chunk, or `nil` if `runs` covers nothing (answer with an error chunk instead).
    public static func chunk(
        cookie: UInt64,
        contextID: UInt32,
        runs: some Sequence<(length: UInt64, flags: UInt32)>,
        requestLength: UInt32,
        requestOne: Bool,
        isFinal: Bool,
        maximumExtentCount: Int = NBD.defaultMaximumExtentCount
    ) -> NBDStructuredReplyChunk? {
        let extents = Self.extents(
            from: runs,
            requestLength: requestLength,
            requestOne: requestOne,
            maximumExtentCount: maximumExtentCount
        )
        guard !extents.isEmpty else { return nil }
        return NBDStructuredReplyChunk(
            cookie: cookie,
            flags: isFinal ? .done : [],
            content: .blockStatus(contextID: contextID, extents: extents)
        )
    }
}
