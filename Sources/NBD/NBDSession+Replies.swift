public import NIOCore

extension NBDSession {
    /// The reply that answers a request with an error, in the style this session requires: a final `ERROR`
    /// chunk when structured replies are on (mandatory for READ, used for every command for uniformity, as
    /// qemu does), otherwise a simple reply.
    /// - Parameters:
    ///   - header: The request being answered.
    ///   - error: The error value.
    ///   - message: Human-readable text for the structured error chunk (ignored for simple replies).
    public func errorReply(to header: NBDRequestHeader, _ error: NBDError, message: String = "") -> NBDServerMessage {
        if self.structuredReplies {
            return .structuredReply(.error(cookie: header.cookie, error, message: message))
        }
        return .simpleReply(NBDSimpleReply(cookie: header.cookie, error: error))
    }

    /// The success reply of a command that returns no data (WRITE, FLUSH, TRIM, CACHE, WRITE_ZEROES): a
    /// simple reply, which the protocol allows even with structured replies.
    /// - Parameter header: The request being answered.
    public func successReply(to header: NBDRequestHeader) -> NBDServerMessage {
        .simpleReply(NBDSimpleReply(cookie: header.cookie))
    }

    /// The complete success reply of a READ: with structured replies one final `OFFSET_DATA` chunk
    /// (or a `NONE` chunk for an empty read), otherwise a simple reply followed by the data.
    /// ``NBDServerMessageEncoder`` writes large `data` without copying it.
    /// - Parameters:
    ///   - header: The READ request being answered (its offset is used for the chunk).
    ///   - data: The bytes read, exactly `header.length` of them.
    public func readReply(to header: NBDRequestHeader, data: ByteBuffer) -> NBDServerMessage {
        guard self.structuredReplies else {
            return .simpleReply(NBDSimpleReply(cookie: header.cookie, data: data))
        }
        guard data.readableBytes > 0 else { return .structuredReply(.done(cookie: header.cookie)) }
        return .structuredReply(
            NBDStructuredReplyChunk(
                cookie: header.cookie,
                flags: .done,
                content: .offsetData(offset: header.offset, data: data)
            )
        )
    }
}
