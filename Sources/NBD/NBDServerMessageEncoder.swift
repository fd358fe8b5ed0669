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
        switch message {
        case .simpleReply(let reply):
            if reply.error == nil, let payload = reply.data, payload.readableBytes > self.copyThreshold {
                var header = context.channel.allocator.buffer(capacity: NBD.simpleReplyHeaderLength)
                header.writeNBDSimpleReplyHeader(cookie: reply.cookie, error: nil)
                context.write(Self.wrapOutboundOut(header), promise: nil)
                context.write(Self.wrapOutboundOut(payload), promise: promise)
                return
            }
        case .structuredReply(let chunk):
            if case .offsetData(let offset, let payload) = chunk.content, payload.readableBytes > self.copyThreshold {
                var header = context.channel.allocator.buffer(capacity: NBD.structuredReplyHeaderLength + 8)
                header.writeNBDOffsetDataChunkHeader(
                    cookie: chunk.cookie,
                    flags: chunk.flags,
                    offset: offset,
                    dataLength: payload.readableBytes
                )
                context.write(Self.wrapOutboundOut(header), promise: nil)
                context.write(Self.wrapOutboundOut(payload), promise: promise)
                return
            }
        case .extendedReply(let chunk, let requestOffset):
            if case .offsetData(let offset, let payload) = chunk.content, payload.readableBytes > self.copyThreshold {
                var header = context.channel.allocator.buffer(capacity: NBD.extendedReplyHeaderLength + 8)
                header.writeNBDExtendedOffsetDataChunkHeader(
                    cookie: chunk.cookie,
                    flags: chunk.flags,
                    requestOffset: requestOffset,
                    offset: offset,
                    dataLength: payload.readableBytes
                )
                context.write(Self.wrapOutboundOut(header), promise: nil)
                context.write(Self.wrapOutboundOut(payload), promise: promise)
                return
            }
        case .greeting, .optionReply, .exportNameReply:
            break
        }
        // Room for the largest header (an extended OFFSET_DATA chunk's 40 bytes) and the data, so
        // the copy of a small READ's data never has to grow the buffer.
        var buffer = context.channel.allocator.buffer(capacity: 64 + Self.dataLength(message))
        buffer.writeNBDServerMessage(message)
        context.write(Self.wrapOutboundOut(buffer), promise: promise)
    }

    /// Bytes of READ data `message` carries (0 for anything else).
    private static func dataLength(_ message: NBDServerMessage) -> Int {
        switch message {
        case .simpleReply(let reply):
            return reply.data?.readableBytes ?? 0
        case .structuredReply(let chunk):
            if case .offsetData(_, let payload) = chunk.content { return payload.readableBytes }
            return 0
        case .extendedReply(let chunk, _):
            if case .offsetData(_, let payload) = chunk.content { return payload.readableBytes }
            return 0
        case .greeting, .optionReply, .exportNameReply:
            return 0
        }
    }
}
