public import NIOCore

/// Decodes everything a client sends on one connection, from the client flags to the last transmission
/// request, into ``NBDClientMessage`` values.
///
/// One decoder covers both phases, so nothing has to be swapped in the pipeline when the handshake ends and
/// bytes a client pipelines right behind `NBD_OPT_GO` are never lost or misparsed. The phase switch is driven
/// by the wire itself:
/// - before any `GO` or `EXPORT_NAME`, only option requests (`IHAVEOPT` …) are accepted;
/// - after a `GO` or `EXPORT_NAME`, the next message may be either another option (the server refused the
///   export) or a transmission request (the server accepted it); the two magics differ in their first byte;
/// - once a transmission request has been decoded, only transmission requests are accepted.
///
/// The decoder does not judge whether a message is *allowed*: ``NBDNegotiation`` rejects a `.request` that
/// arrives before it entered transmission, and the server must drop a connection that sends `.option`
/// after it entered transmission.
///
/// Transmission requests may come in either header form: compact (28 bytes, magic `0x25609513`) or extended
/// (32 bytes, magic `0x21e41c71`); the header records which (``NBDRequestHeader/isExtended``) and the server
/// drops a connection whose form does not match what was negotiated. A payload follows every WRITE, and
/// any extended request with `NBD_CMD_FLAG_PAYLOAD_LEN` (whatever its command, so the stream stays in sync
/// even when the command then gets EINVAL); see ``NBDRequestHeader/carriesPayload``.
///
/// Payloads up to ``maximumPayloadLength`` bytes are delivered as a slice of the receive buffer.
/// Longer payloads (up to 2³² − 1 bytes) are read and thrown away without being buffered, and the request is
/// delivered afterwards with ``NBDRequestPayload/discarded(length:)`` so the server can answer EINVAL and stay
/// in sync; an extended payload length of 2³² or more is a framing error
/// (``NBDDecodingError/payloadTooLarge(command:length:)``).
///
/// Framing errors (``NBDDecodingError``) are thrown; `ByteToMessageHandler` then fires them down the
/// pipeline and discards further input. The server must close the connection.
public struct NBDServerDecoder: ByteToMessageDecoder, Sendable {
    /// The messages produced.
    public typealias InboundOut = NBDClientMessage

    /// Where decoding starts.
    public enum Phase: Hashable, Sendable {
        /// Expect the 4-byte client flags first (a fresh connection after the greeting).
        case clientFlags
        /// Expect option requests.
        case options
        /// Expect transmission requests only.
        case transmission
    }

    private enum State: Hashable, Sendable {
        case clientFlags
        case options
        case optionsOrRequests
        case requests
        case discardingPayload(NBDRequestHeader, remaining: UInt64)
    }

    private var state: State

    /// Largest option data accepted, in bytes; a longer option is an
    /// ``NBDDecodingError/optionTooLarge(option:length:limit:)``.
    public let maximumOptionLength: Int

    /// Largest payload buffered, in bytes; longer payloads are discarded.
    public let maximumPayloadLength: Int

    /// Creates a decoder.
    /// - Parameters:
    ///   - phase: Where to start; ``Phase/clientFlags`` for a new connection.
    ///   - maximumOptionLength: Option data limit in bytes; 32 MiB by default.
    ///   - maximumPayloadLength: WRITE payload limit in bytes; 32 MiB by default. Should equal the maximum
    ///     block size advertised in `NBD_INFO_BLOCK_SIZE`.
    public init(
        startingAt phase: Phase = .clientFlags,
        maximumOptionLength: Int = NBD.maximumOptionLength,
        maximumPayloadLength: Int = NBD.defaultMaximumPayloadLength
    ) {
        precondition(maximumOptionLength >= 0 && maximumPayloadLength >= 0, "limits must not be negative")
        switch phase {
        case .clientFlags: state = .clientFlags
        case .options: state = .options
        case .transmission: state = .requests
        }
        self.maximumOptionLength = maximumOptionLength
        self.maximumPayloadLength = maximumPayloadLength
    }

    /// Decodes the next complete message from `buffer`, consuming its bytes.
    ///
    /// Returns `nil` when more bytes are needed (bytes of a discarded WRITE payload may still have been
    /// consumed). This is the whole decoder; `decode(context:buffer:)` only forwards its result.
    /// - Parameter buffer: Received bytes; the reader index advances past what was consumed.
    /// - Throws: ``NBDDecodingError`` on a framing error.
    public mutating func decodeNext(from buffer: inout ByteBuffer) throws(NBDDecodingError) -> NBDClientMessage? {
        switch state {
        case .clientFlags:
            guard let raw = buffer.readInteger(as: UInt32.self) else { return nil }
            state = .options
            return .clientFlags(NBDClientFlags(rawValue: raw))

        case .options:
            return try decodeOption(from: &buffer)

        case .optionsOrRequests:
            guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
            if first == UInt8(truncatingIfNeeded: NBD.optionRequestMagic >> 56) {
                return try decodeOption(from: &buffer)
            }
            return try decodeRequest(from: &buffer)

        case .requests:
            return try decodeRequest(from: &buffer)

        case .discardingPayload(let header, let remaining):
            let available = UInt64(buffer.readableBytes)
            let skip = min(remaining, available)
            buffer.moveReaderIndex(forwardBy: Int(skip))
            if skip < remaining {
                state = .discardingPayload(header, remaining: remaining - skip)
                return nil
            }
            state = .requests
            return .request(NBDRequest(header: header, payload: .discarded(length: header.length)))
        }
    }

    private mutating func decodeOption(from buffer: inout ByteBuffer) throws(NBDDecodingError) -> NBDClientMessage? {
        let start = buffer.readerIndex
        guard let magic = buffer.getInteger(at: start, as: UInt64.self) else { return nil }
        guard magic == NBD.optionRequestMagic else { throw .invalidOptionMagic(magic) }
        guard let rawOption = buffer.getInteger(at: start + 8, as: UInt32.self),
            let length = buffer.getInteger(at: start + 12, as: UInt32.self)
        else { return nil }
        let option = NBDOption(rawValue: rawOption)
        guard UInt64(length) <= UInt64(self.maximumOptionLength) else {
            throw .optionTooLarge(option: option, length: length, limit: self.maximumOptionLength)
        }
        let dataLength = Int(length)
        guard buffer.readableBytes >= NBD.optionRequestHeaderLength + dataLength else { return nil }
        buffer.moveReaderIndex(forwardBy: NBD.optionRequestHeaderLength)
        guard let data = buffer.readSlice(length: dataLength) else { return nil }  // unreachable: checked above
        state = (option == .go || option == .exportName) ? .optionsOrRequests : .options
        return .option(NBDOptionRequest(option: option, data: data))
    }

    private mutating func decodeRequest(from buffer: inout ByteBuffer) throws(NBDDecodingError) -> NBDClientMessage? {
        let start = buffer.readerIndex
        guard let magic = buffer.getInteger(at: start, as: UInt32.self) else { return nil }
        let header: NBDRequestHeader
        let headerLength: Int
        switch magic {
        case NBD.requestMagic:
            guard
                let (_, rawFlags, rawCommand, cookie, offset, length) = buffer.getMultipleIntegers(
                    at: start,
                    as: (UInt32, UInt16, UInt16, UInt64, UInt64, UInt32).self
                )
            else { return nil }
            headerLength = NBD.requestHeaderLength
            header = NBDRequestHeader(
                command: NBDCommand(rawValue: rawCommand),
                flags: NBDCommandFlags(rawValue: rawFlags),
                cookie: cookie,
                offset: offset,
                length: UInt64(length)
            )
        case NBD.extendedRequestMagic:
            guard
                let (_, rawFlags, rawCommand, cookie, offset, length) = buffer.getMultipleIntegers(
                    at: start,
                    as: (UInt32, UInt16, UInt16, UInt64, UInt64, UInt64).self
                )
            else { return nil }
            headerLength = NBD.extendedRequestHeaderLength
            header = NBDRequestHeader(
                command: NBDCommand(rawValue: rawCommand),
                flags: NBDCommandFlags(rawValue: rawFlags),
                cookie: cookie,
                offset: offset,
                length: length,
                isExtended: true
            )
        default:
            throw .invalidRequestMagic(magic)
        }
        guard header.carriesPayload else {
            buffer.moveReaderIndex(forwardBy: headerLength)
            state = .requests
            return .request(NBDRequest(header: header))
        }
        // A payload no 32-bit maximum could allow (the block size reply caps it at 2³² − 1): the spec says
        // to drop the connection rather than read that many bytes.
        guard header.length <= UInt64(UInt32.max) else {
            throw .payloadTooLarge(command: header.command, length: header.length)
        }
        guard header.length <= UInt64(self.maximumPayloadLength) else {
            buffer.moveReaderIndex(forwardBy: headerLength)
            state = .discardingPayload(header, remaining: header.length)
            return try decodeNext(from: &buffer)
        }
        let payloadLength = Int(header.length)  // at most maximumPayloadLength, an Int
        guard buffer.readableBytes >= headerLength + payloadLength else { return nil }
        buffer.moveReaderIndex(forwardBy: headerLength)
        guard let payload = buffer.readSlice(length: payloadLength) else { return nil }  // unreachable: checked above
        state = .requests
        return .request(NBDRequest(header: header, payload: .data(payload)))
    }

    /// Decodes one message and forwards it down the pipeline.
    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let message = try decodeNext(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(message))
        return .continue
    }

    /// Decodes what is left; at end of input, a partial message is reported as
    /// ``NBDDecodingError/truncatedMessage(missingOrBufferedBytes:)``.
    public mutating func decodeLast(
        context: ChannelHandlerContext,
        buffer: inout ByteBuffer,
        seenEOF: Bool
    ) throws -> DecodingState {
        if try decode(context: context, buffer: &buffer) == .continue { return .continue }
        guard seenEOF else { return .needMoreData }
        if case .discardingPayload(_, let remaining) = state {
            state = .requests
            throw NBDDecodingError.truncatedMessage(missingOrBufferedBytes: Int(clamping: remaining))
        }
        if buffer.readableBytes > 0 {
            let buffered = buffer.readableBytes
            buffer.moveReaderIndex(forwardBy: buffered)
            throw NBDDecodingError.truncatedMessage(missingOrBufferedBytes: buffered)
        }
        return .needMoreData
    }
}
