public import NIOCore

/// The header a reply chunk goes out behind.
enum NBDChunkHeaderStyle {
    /// The 20-byte structured reply header (32-bit payload length).
    case structured
    /// The 32-byte extended reply header, which repeats the request's offset (bytes).
    case extended(requestOffset: UInt64)
}

extension ByteBuffer {
    /// Writes the 20-byte structured reply chunk header; the caller appends `length` payload bytes.
    /// - Parameters:
    ///   - cookie: The cookie of the request being answered.
    ///   - flags: Chunk flags.
    ///   - type: Chunk type.
    ///   - length: Payload length in bytes.
    /// - Returns: Number of bytes written (20).
    @discardableResult
    public mutating func writeNBDStructuredReplyHeader(
        cookie: UInt64,
        flags: NBDReplyFlags,
        type: NBDReplyChunkType,
        length: UInt32
    ) -> Int {
        writeMultipleIntegers(NBD.structuredReplyMagic, flags.rawValue, type.rawValue, cookie, length)
    }

    /// Writes the 32-byte extended reply chunk header; the caller appends `length` payload bytes.
    /// - Parameters:
    ///   - cookie: The cookie of the request being answered.
    ///   - flags: Chunk flags.
    ///   - type: Chunk type.
    ///   - requestOffset: The offset of the request being answered, in bytes (echoed as the protocol requires).
    ///   - length: Payload length in bytes.
    /// - Returns: Number of bytes written (32).
    @discardableResult
    public mutating func writeNBDExtendedReplyHeader(
        cookie: UInt64,
        flags: NBDReplyFlags,
        type: NBDReplyChunkType,
        requestOffset: UInt64,
        length: UInt64
    ) -> Int {
        writeMultipleIntegers(NBD.extendedReplyMagic, flags.rawValue, type.rawValue, cookie, requestOffset, length)
    }

    /// Writes the header and offset of an `OFFSET_DATA` chunk (28 bytes); the caller then writes
    /// `dataLength` bytes of data, here or as a separate buffer on the channel.
    /// - Parameters:
    ///   - cookie: The cookie of the request.
    ///   - flags: Chunk flags.
    ///   - offset: Export offset of the data, in bytes.
    ///   - dataLength: Length of the data that follows, in bytes (1 ... 2³² − 9).
    /// - Returns: Number of bytes written (28).
    @discardableResult
    public mutating func writeNBDOffsetDataChunkHeader(
        cookie: UInt64,
        flags: NBDReplyFlags,
        offset: UInt64,
        dataLength: Int
    ) -> Int {
        writeNBDChunkHeader(
            style: .structured, cookie: cookie, flags: flags, type: .offsetData, payloadLength: 8 + UInt64(dataLength)
        ) + writeInteger(offset)
    }

    /// Writes the extended header and offset of an `OFFSET_DATA` chunk (40 bytes); the caller then writes
    /// `dataLength` bytes of data, here or as a separate buffer on the channel.
    /// - Parameters:
    ///   - cookie: The cookie of the request.
    ///   - flags: Chunk flags.
    ///   - requestOffset: The offset of the READ request, in bytes.
    ///   - offset: Export offset of the data, in bytes.
    ///   - dataLength: Length of the data that follows, in bytes.
    /// - Returns: Number of bytes written (40).
    @discardableResult
    public mutating func writeNBDExtendedOffsetDataChunkHeader(
        cookie: UInt64,
        flags: NBDReplyFlags,
        requestOffset: UInt64,
        offset: UInt64,
        dataLength: Int
    ) -> Int {
        writeNBDChunkHeader(
            style: .extended(requestOffset: requestOffset), cookie: cookie, flags: flags, type: .offsetData,
            payloadLength: 8 + UInt64(dataLength)
        ) + writeInteger(offset)
    }

    /// Writes a complete structured reply chunk (20-byte header and payload; `OFFSET_DATA` data is copied).
    /// Error messages are cut to 4096 bytes. A ``NBDStructuredReplyChunk/Content/blockStatusExtended(contextID:extents:)``
    /// chunk cannot be sent this way (extended headers only).
    /// - Parameter chunk: The chunk.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDStructuredReplyChunk(_ chunk: NBDStructuredReplyChunk) -> Int {
        writeNBDChunk(chunk, style: .structured)
    }

    /// Writes a complete reply chunk behind the 32-byte extended header (`OFFSET_DATA` data is copied).
    /// Error messages are cut to 4096 bytes. A ``NBDStructuredReplyChunk/Content/blockStatus(contextID:extents:)``
    /// chunk cannot be sent this way (compact headers only).
    /// - Parameters:
    ///   - chunk: The chunk.
    ///   - requestOffset: The offset of the request being answered, in bytes.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDExtendedReplyChunk(_ chunk: NBDStructuredReplyChunk, requestOffset: UInt64) -> Int {
        writeNBDChunk(chunk, style: .extended(requestOffset: requestOffset))
    }

    private mutating func writeNBDChunkHeader(
        style: NBDChunkHeaderStyle,
        cookie: UInt64,
        flags: NBDReplyFlags,
        type: NBDReplyChunkType,
        payloadLength: UInt64
    ) -> Int {
        switch style {
        case .structured:
            precondition(payloadLength <= UInt64(UInt32.max), "structured reply chunk payload too long")
            return writeNBDStructuredReplyHeader(
                cookie: cookie, flags: flags, type: type, length: UInt32(truncatingIfNeeded: payloadLength))
        case .extended(let requestOffset):
            return writeNBDExtendedReplyHeader(
                cookie: cookie, flags: flags, type: type, requestOffset: requestOffset, length: payloadLength)
        }
    }

    /// Writes `chunk`'s header in `style`, then its payload. The chunk is built by the server, never read from
    /// the network, so a mismatch between content and style is a programming error.
    private mutating func writeNBDChunk(_ chunk: NBDStructuredReplyChunk, style: NBDChunkHeaderStyle) -> Int {
        let isExtended: Bool
        if case .extended = style { isExtended = true } else { isExtended = false }
        func header(_ type: NBDReplyChunkType, _ length: Int) -> Int {
            writeNBDChunkHeader(
                style: style, cookie: chunk.cookie, flags: chunk.flags, type: type, payloadLength: UInt64(length))
        }
        let headerLength = isExtended ? NBD.extendedReplyHeaderLength : NBD.structuredReplyHeaderLength
        switch chunk.content {
        case .none:
            return header(.none, 0)
        case .offsetData(let offset, var data):
            reserveCapacity(minimumWritableBytes: headerLength + 8 + data.readableBytes)
            return header(.offsetData, 8 + data.readableBytes) + writeInteger(offset) + writeBuffer(&data)
        case .offsetHole(let offset, let length):
            return header(.offsetHole, 12) + writeMultipleIntegers(offset, length)
        case .blockStatus(let contextID, let extents):
            precondition(!isExtended, "BLOCK_STATUS chunks are for compact headers; use BLOCK_STATUS_EXT")
            precondition(extents.count <= (Int(UInt32.max) - 4) / 8, "too many extents for one chunk")
            reserveCapacity(minimumWritableBytes: headerLength + 4 + 8 * extents.count)
            var written = header(.blockStatus, 4 + 8 * extents.count) + writeInteger(contextID)
            for extent in extents { written += writeMultipleIntegers(extent.length, extent.flags) }
            return written
        case .blockStatusExtended(let contextID, let extents):
            precondition(isExtended, "BLOCK_STATUS_EXT chunks need extended headers")
            precondition(extents.count <= Int(UInt32.max), "too many extents for one chunk")
            reserveCapacity(minimumWritableBytes: headerLength + 8 + 16 * extents.count)
            var written = header(.blockStatusExtended, 8 + 16 * extents.count)
            written += writeMultipleIntegers(contextID, UInt32(truncatingIfNeeded: extents.count))
            for extent in extents { written += writeMultipleIntegers(extent.length, extent.flags) }
            return written
        case .error(let error, let message):
            let bytes = NBD.utf8Bytes(message)
            return header(.error, 6 + bytes.count)
                + writeMultipleIntegers(error.rawValue, UInt16(bytes.count)) + writeBytes(bytes)
        case .errorOffset(let error, let message, let offset):
            let bytes = NBD.utf8Bytes(message)
            return header(.errorOffset, 14 + bytes.count)
                + writeMultipleIntegers(error.rawValue, UInt16(bytes.count)) + writeBytes(bytes)
                + writeInteger(offset)
        }
    }
}
