public import NIOCore

/// Turns ``NBDServerMessage`` values into bytes on the channel.
///
/// Bulk data (READ data in a simple reply or an `OFFSET_DATA` chunk, structured or extended) larger than ``copyThreshold`` bytes is
/// not copied: the header is written as its own buffer, followed by the caller's data buffer, and the
/// write promise completes with the data write. Smaller messages are written as one buffer.
public final class NBDServerMessageEncoder: ChannelOutboundHandler, Sendable {
    /// Accepts server messages.
    public typealias OutboundIn = NBDServerMessage
    /// Produces bytes.
    public typealias OutboundOut = ByteBuffer

    /// Data at most this long (bytes) is copied behind its header into one buffer; longer data is
    /// written separately.
    public let copyThreshold: Int

    /// Creates an encoder.
    /// - Parameter copyThreshold: Largest data length, in bytes, that is copied; 16 KiB by default.
    public init(copyThreshold: Int = 16 * 1024) {
        self.copyThreshold = copyThreshold
    }

    /// Encodes one message.
    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let message = Self.unwrapOutboundIn(data)
        let payload = Self.readData(of: message)
        if let payload, payload.readableBytes > self.copyThreshold,
            let header = Self.header(
                of: message, dataLength: payload.readableBytes, allocator: context.channel.allocator)
        {
            context.write(Self.wrapOutboundOut(header), promise: nil)
            context.write(Self.wrapOutboundOut(payload), promise: promise)
            return
        }
        // Room for the largest header (an extended OFFSET_DATA chunk's 40 bytes) and the data, so
        // the copy of a small READ's data never has to grow the buffer.
        var buffer = context.channel.allocator.buffer(capacity: 64 + (payload?.readableBytes ?? 0))
        buffer.writeNBDServerMessage(message)
        context.write(Self.wrapOutboundOut(buffer), promise: promise)
    }

    /// The READ data `message` carries: a successful simple reply's data or an `OFFSET_DATA`
    /// chunk's; nil for anything else.
    private static func readData(of message: NBDServerMessage) -> ByteBuffer? {
        switch message {
        case .simpleReply(let reply):
            return reply.error == nil ? reply.data : nil
        case .structuredReply(let chunk):
            if case .offsetData(_, let payload) = chunk.content { return payload }
            return nil
        case .extendedReply(let chunk, _):
            if case .offsetData(_, let payload) = chunk.content { return payload }
            return nil
        case .greeting, .optionReply, .exportNameReply:
            return nil
        }
    }

    /// The header that goes before `dataLength` bytes of READ data written as their own buffer,
    /// for a message ``readData(of:)`` finds data in; nil for any other.
    private static func header(
        of message: NBDServerMessage, dataLength: Int, allocator: ByteBufferAllocator
    ) -> ByteBuffer? {
        switch message {
        case .simpleReply(let reply):
            var header = allocator.buffer(capacity: NBD.simpleReplyHeaderLength)
            header.writeNBDSimpleReplyHeader(cookie: reply.cookie, error: nil)
            return header
        case .structuredReply(let chunk):
            guard case .offsetData(let offset, _) = chunk.content else { return nil }
            var header = allocator.buffer(capacity: NBD.structuredReplyHeaderLength + 8)
            header.writeNBDOffsetDataChunkHeader(
                cookie: chunk.cookie, flags: chunk.flags, offset: offset, dataLength: dataLength)
            return header
        case .extendedReply(let chunk, let requestOffset):
            guard case .offsetData(let offset, _) = chunk.content else { return nil }
            var header = allocator.buffer(capacity: NBD.extendedReplyHeaderLength + 8)
            header.writeNBDExtendedOffsetDataChunkHeader(
                cookie: chunk.cookie, flags: chunk.flags, requestOffset: requestOffset, offset: offset,
                dataLength: dataLength)
            return header
        case .greeting, .optionReply, .exportNameReply:
            return nil
        }
    }
}
