import NBD
import NIOCore

/// A client sent bytes right behind a `NBD_OPT_STARTTLS` that the server is going to accept, before it
/// could have seen the ACK.
///
/// Those bytes were sent in clear text but would be read as if they had come through TLS (a STARTTLS
/// injection: an attacker on the path prepends commands to the protected stream). Conforming clients wait
/// for the ACK before starting the handshake, so this is always an attack or a broken client; the
/// connection is closed.
struct NBDDataAfterStartTLSError: Error, CustomStringConvertible {
    var bufferedBytes: Int
    var description: String { "\(bufferedBytes) bytes arrived behind STARTTLS before the TLS handshake" }
}

/// ``NBD/NBDServerDecoder`` plus the one check that TLS needs from the decoder: when the server will start
/// TLS after a `STARTTLS`, no byte may be left in the receive buffer behind it.
///
/// The connection handler puts the TLS handler in front of the decoder while it processes `STARTTLS`, so
/// every byte read from the socket later goes through TLS; only bytes that arrived in the same reads as
/// the `STARTTLS` can already sit in the decoder's buffer, and they are what this rejects.
struct NBDConnectionDecoder: ByteToMessageDecoder {
    typealias InboundOut = NBDClientMessage

    private var decoder: NBDServerDecoder
    /// Whether a `STARTTLS` now would be accepted: TLS is configured and not started yet.
    private var startTLSPending: Bool

    /// - Parameters:
    ///   - decoder: The NBD decoder.
    ///   - tls: The server's TLS policy (anything but ``NBD/NBDTLSMode/disabled`` accepts one `STARTTLS`).
    init(_ decoder: NBDServerDecoder, tls: NBDTLSMode) {
        self.decoder = decoder
        startTLSPending = tls != .disabled
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let message = try self.decoder.decodeNext(from: &buffer) else { return .needMoreData }
        // The negotiation accepts a STARTTLS without data when TLS is configured and not active yet (or
        // closes the connection); mirror that condition.
        if startTLSPending, case .option(let request) = message, request.option == .startTLS,
            request.data.readableBytes == 0
        {
            startTLSPending = false
            guard buffer.readableBytes == 0 else {
                throw NBDDataAfterStartTLSError(bufferedBytes: buffer.readableBytes)
            }
        }
        context.fireChannelRead(Self.wrapInboundOut(message))
        return .continue
    }

    mutating func decodeLast(
        context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
    ) throws
        -> DecodingState
    {
        if try decode(context: context, buffer: &buffer) == .continue { return .continue }
        // The NBD decoder's end-of-input checks (a truncated message is an error).
        return try self.decoder.decodeLast(context: context, buffer: &buffer, seenEOF: seenEOF)
    }
}
