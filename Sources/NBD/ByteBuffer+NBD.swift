public import NIOCore

extension NBD {
    /// The UTF-8 bytes of `string`, cut at a scalar boundary so that they fit in `maximumBytes`.
    static func utf8Bytes(_ string: String, maximumBytes: Int = NBD.maximumStringLength) -> [UInt8] {
        if string.utf8.count <= maximumBytes { return Array(string.utf8) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(maximumBytes)
        for scalar in string.unicodeScalars {
            let encoded = scalar.utf8
            guard bytes.count + encoded.count <= maximumBytes else { break }
            bytes.append(contentsOf: encoded)
        }
        return bytes
    }
}

// MARK: - Server → client

extension ByteBuffer {
    /// Writes the 18-byte server greeting: `NBDMAGIC` · `IHAVEOPT` · handshake flags.
    /// - Parameter flags: Handshake flags; `FIXED_NEWSTYLE | NO_ZEROES` (0x0003) by default.
    /// - Returns: Number of bytes written (18).
    @discardableResult
    public mutating func writeNBDGreeting(flags: NBDHandshakeFlags = [.fixedNewstyle, .noZeroes]) -> Int {
        self.writeMultipleIntegers(NBD.greetingMagic, NBD.optionRequestMagic, flags.rawValue)
    }

    /// Writes a 20-byte option reply header; the caller appends `length` bytes of reply data.
    /// - Parameters:
    ///   - option: The option being answered.
    ///   - type: The reply type.
    ///   - length: Length of the reply data that follows, in bytes.
    /// - Returns: Number of bytes written (20).
    @discardableResult
    public mutating func writeNBDOptionReplyHeader(option: NBDOption, type: NBDOptionReplyType, length: UInt32) -> Int {
        self.writeMultipleIntegers(NBD.optionReplyMagic, option.rawValue, type.rawValue, length)
    }

    /// Writes a complete option reply (header and data). Strings are cut to 4096 bytes.
    /// - Parameter reply: The reply.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDOptionReply(_ reply: NBDOptionReply) -> Int {
        switch reply.body {
        case .ack:
            return self.writeNBDOptionReplyHeader(option: reply.option, type: .ack, length: 0)
        case .server(let name, let details):
            let nameBytes = NBD.utf8Bytes(name)
            let detailBytes = details.map { NBD.utf8Bytes($0) } ?? []
            var written = self.writeNBDOptionReplyHeader(
                option: reply.option,
                type: .server,
                length: UInt32(4 + nameBytes.count + detailBytes.count)
            )
            written += self.writeInteger(UInt32(nameBytes.count))
            written += self.writeBytes(nameBytes)
            written += self.writeBytes(detailBytes)
            return written
        case .information(let information):
            return self.writeNBDInformationReply(option: reply.option, information)
        case .metaContext(let id, let name):
            let nameBytes = NBD.utf8Bytes(name)
            var written = self.writeNBDOptionReplyHeader(
                option: reply.option,
                type: .metaContext,
                length: UInt32(4 + nameBytes.count)
            )
            written += self.writeInteger(id)
            written += self.writeBytes(nameBytes)
            return written
        case .error(let type, let message):
            let messageBytes = message.map { NBD.utf8Bytes($0) } ?? []
            var written = self.writeNBDOptionReplyHeader(
                option: reply.option,
                type: type,
                length: UInt32(messageBytes.count)
            )
            written += self.writeBytes(messageBytes)
            return written
        }
    }

    private mutating func writeNBDInformationReply(option: NBDOption, _ information: NBDInformation) -> Int {
        switch information {
        case .export(let size, let flags):
            return self.writeNBDOptionReplyHeader(option: option, type: .info, length: 12)
                + self.writeMultipleIntegers(NBDInfoType.export.rawValue, size, flags.rawValue)
        case .name(let text), .description(let text):
            let bytes = NBD.utf8Bytes(text)
            return self.writeNBDOptionReplyHeader(option: option, type: .info, length: UInt32(2 + bytes.count))
                + self.writeInteger(information.type.rawValue) + self.writeBytes(bytes)
        case .blockSize(let sizes):
            return self.writeNBDOptionReplyHeader(option: option, type: .info, length: 14)
                + self.writeMultipleIntegers(
                    NBDInfoType.blockSize.rawValue,
                    sizes.minimum,
                    sizes.preferred,
                    sizes.maximum
                )
        }
    }

    /// Writes the reply to `NBD_OPT_EXPORT_NAME`: size(8) · flags(2) · optional 124 zero bytes.
    /// - Parameter reply: The reply.
    /// - Returns: Number of bytes written (10 or 134).
    @discardableResult
    public mutating func writeNBDExportNameReply(_ reply: NBDExportNameReply) -> Int {
        var written = self.writeMultipleIntegers(reply.size, reply.flags.rawValue)
        if reply.includesZeroPadding {
            written += self.writeRepeatingByte(0, count: NBD.exportNameReplyPadding)
        }
        return written
    }

    /// Writes the 16-byte simple reply header. For a successful READ, the caller then writes the data
    /// (into this buffer, or as a separate buffer on the channel to avoid a copy).
    /// - Parameters:
    ///   - cookie: The cookie of the request being answered.
    ///   - error: The error, or `nil` for success.
    /// - Returns: Number of bytes written (16).
    @discardableResult
    public mutating func writeNBDSimpleReplyHeader(cookie: UInt64, error: NBDError?) -> Int {
        self.writeMultipleIntegers(NBD.simpleReplyMagic, error?.rawValue ?? 0, cookie)
    }

    /// Writes a simple reply: header, then `data` when `error` is `nil` (this copies the data).
    /// - Parameter reply: The reply.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDSimpleReply(_ reply: NBDSimpleReply) -> Int {
        guard reply.error == nil, var data = reply.data else {
            return self.writeNBDSimpleReplyHeader(cookie: reply.cookie, error: reply.error)
        }
        // One allocation for header and data, not a grow-and-copy once the data is appended.
        self.reserveCapacity(minimumWritableBytes: NBD.simpleReplyHeaderLength + data.readableBytes)
        return self.writeNBDSimpleReplyHeader(cookie: reply.cookie, error: nil) + self.writeBuffer(&data)
    }

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
        self.writeMultipleIntegers(NBD.structuredReplyMagic, flags.rawValue, type.rawValue, cookie, length)
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
        precondition(dataLength >= 0 && UInt64(dataLength) <= UInt64(UInt32.max) - 8, "OFFSET_DATA chunk too long")
        return self.writeNBDStructuredReplyHeader(
            cookie: cookie,
            flags: flags,
            type: .offsetData,
            length: UInt32(8 + dataLength)
        ) + self.writeInteger(offset)
    }

    /// Writes a complete structured reply chunk (header and payload; `OFFSET_DATA` data is copied).
    /// Error messages are cut to 4096 bytes.
    /// - Parameter chunk: The chunk.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDStructuredReplyChunk(_ chunk: NBDStructuredReplyChunk) -> Int {
        switch chunk.content {
        case .none:
            return self.writeNBDStructuredReplyHeader(cookie: chunk.cookie, flags: chunk.flags, type: .none, length: 0)
        case .offsetData(let offset, var data):
            self.reserveCapacity(minimumWritableBytes: NBD.structuredReplyHeaderLength + 8 + data.readableBytes)
            return self.writeNBDOffsetDataChunkHeader(
                cookie: chunk.cookie,
                flags: chunk.flags,
                offset: offset,
                dataLength: data.readableBytes
            ) + self.writeBuffer(&data)
        case .offsetHole(let offset, let length):
            return self.writeNBDStructuredReplyHeader(
                cookie: chunk.cookie,
                flags: chunk.flags,
                type: .offsetHole,
                length: 12
            ) + self.writeMultipleIntegers(offset, length)
        case .blockStatus(let contextID, let extents):
            precondition(extents.count <= (Int(UInt32.max) - 4) / 8, "too many extents for one chunk")
            self.reserveCapacity(minimumWritableBytes: NBD.structuredReplyHeaderLength + 4 + 8 * extents.count)
            var written = self.writeNBDStructuredReplyHeader(
                cookie: chunk.cookie,
                flags: chunk.flags,
                type: .blockStatus,
                length: UInt32(4 + 8 * extents.count)
            )
            written += self.writeInteger(contextID)
            for extent in extents {
                written += self.writeMultipleIntegers(extent.length, extent.flags)
            }
            return written
        case .error(let error, let message):
            let bytes = NBD.utf8Bytes(message)
            return self.writeNBDStructuredReplyHeader(
                cookie: chunk.cookie,
                flags: chunk.flags,
                type: .error,
                length: UInt32(6 + bytes.count)
            ) + self.writeMultipleIntegers(error.rawValue, UInt16(bytes.count)) + self.writeBytes(bytes)
        case .errorOffset(let error, let message, let offset):
            let bytes = NBD.utf8Bytes(message)
            return self.writeNBDStructuredReplyHeader(
                cookie: chunk.cookie,
                flags: chunk.flags,
                type: .errorOffset,
                length: UInt32(14 + bytes.count)
            ) + self.writeMultipleIntegers(error.rawValue, UInt16(bytes.count)) + self.writeBytes(bytes)
                + self.writeInteger(offset)
        }
    }

    /// Writes any server message in full (bulk data is copied; see ``NBDServerMessageEncoder`` for the
    /// copy-free path).
    /// - Parameter message: The message.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDServerMessage(_ message: NBDServerMessage) -> Int {
        switch message {
        case .greeting(let flags): return self.writeNBDGreeting(flags: flags)
        case .optionReply(let reply): return self.writeNBDOptionReply(reply)
        case .exportNameReply(let reply): return self.writeNBDExportNameReply(reply)
        case .simpleReply(let reply): return self.writeNBDSimpleReply(reply)
        case .structuredReply(let chunk): return self.writeNBDStructuredReplyChunk(chunk)
        }
    }
}

// MARK: - Client → server (for clients, proxies and tests)

extension ByteBuffer {
    /// Writes the 4-byte client flags that answer the greeting.
    /// - Parameter flags: The client flags.
    /// - Returns: Number of bytes written (4).
    @discardableResult
    public mutating func writeNBDClientFlags(_ flags: NBDClientFlags) -> Int {
        self.writeInteger(flags.rawValue)
    }

    /// Writes an option request: `IHAVEOPT` · option · length · data.
    /// - Parameter request: The option request.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDOptionRequest(_ request: NBDOptionRequest) -> Int {
        var data = request.data
        return self.writeMultipleIntegers(
            NBD.optionRequestMagic,
            request.option.rawValue,
            UInt32(truncatingIfNeeded: data.readableBytes)
        ) + self.writeBuffer(&data)
    }

    /// Writes a transmission request header (28 bytes).
    /// - Parameter header: The header.
    /// - Returns: Number of bytes written (28).
    @discardableResult
    public mutating func writeNBDRequestHeader(_ header: NBDRequestHeader) -> Int {
        self.writeMultipleIntegers(
            NBD.requestMagic,
            header.flags.rawValue,
            header.command.rawValue,
            header.cookie,
            header.offset,
            header.length
        )
    }

    /// Writes a transmission request: header, then the WRITE payload if any. A ``NBDRequestPayload/discarded(length:)``
    /// payload is written as that many zero bytes.
    /// - Parameter request: The request.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDRequest(_ request: NBDRequest) -> Int {
        var written = self.writeNBDRequestHeader(request.header)
        switch request.payload {
        case .none: break
        case .data(var data): written += self.writeBuffer(&data)
        case .discarded(let length): written += self.writeRepeatingByte(0, count: Int(length))
        }
        return written
    }
}
