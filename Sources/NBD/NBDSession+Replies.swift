public import NIOCore

extension NBDSession {
    /// `chunk` as the message this session sends: behind the 32-byte extended header (echoing the request's
    /// offset) when extended headers are on, behind the 20-byte structured header otherwise.
    /// - Parameters:
    ///   - chunk: The chunk.
    ///   - header: The request it answers.
    public func message(_ chunk: NBDStructuredReplyChunk, answering header: NBDRequestHeader) -> NBDServerMessage {
        extendedHeaders ? .extendedReply(chunk, requestOffset: header.offset) : .structuredReply(chunk)
    }

    /// The reply that answers a request with an error, in the style this session requires: a final `ERROR`
    /// chunk when replies are chunked (mandatory for READ, used for every command for uniformity, as
    /// qemu does), otherwise a simple reply.
    /// - Parameters:
    ///   - header: The request being answered.
    ///   - error: The error value.
    ///   - message: Human-readable text for the structured error chunk (ignored for simple replies).
    public func errorReply(to header: NBDRequestHeader, _ error: NBDError, message: String = "") -> NBDServerMessage {
        if structuredReplies {
            return self.message(.error(cookie: header.cookie, error, message: message), answering: header)
        }
        return .simpleReply(NBDSimpleReply(cookie: header.cookie, error: error))
    }

    /// The success reply of a command that returns no data (WRITE, FLUSH, TRIM, CACHE, WRITE_ZEROES): a
    /// simple reply, which the protocol allows even with structured replies, or with extended headers (where
    /// simple replies are forbidden) a final `NONE` chunk.
    /// - Parameter header: The request being answered.
    public func successReply(to header: NBDRequestHeader) -> NBDServerMessage {
        if extendedHeaders { return .extendedReply(.done(cookie: header.cookie), requestOffset: header.offset) }
        return .simpleReply(NBDSimpleReply(cookie: header.cookie))
    }

    /// The complete success reply of a READ: with chunked replies one final `OFFSET_DATA` chunk
    /// (or a `NONE` chunk for an empty read), otherwise a simple reply followed by the data.
    /// ``NBDServerMessageEncoder`` writes large `data` without copying it.
    /// - Parameters:
    ///   - header: The READ request being answered (its offset is used for the chunk).
    ///   - data: The bytes read, exactly `header.length` of them.
    public func readReply(to header: NBDRequestHeader, data: ByteBuffer) -> NBDServerMessage {
        guard structuredReplies else {
            return .simpleReply(NBDSimpleReply(cookie: header.cookie, data: data))
        }
        guard data.readableBytes > 0 else { return self.message(.done(cookie: header.cookie), answering: header) }
        let chunk = NBDStructuredReplyChunk(
            cookie: header.cookie,
            flags: .done,
            content: .offsetData(offset: header.offset, data: data)
        )
        return self.message(chunk, answering: header)
    }
}
