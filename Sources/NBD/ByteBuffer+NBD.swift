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
        writeMultipleIntegers(NBD.greetingMagic, NBD.optionRequestMagic, flags.rawValue)
    }

    /// Writes a 20-byte option reply header; the caller appends `length` bytes of reply data.
    /// - Parameters:
    ///   - option: The option being answered.
    ///   - type: The reply type.
    ///   - length: Length of the reply data that follows, in bytes.
    /// - Returns: Number of bytes written (20).
    @discardableResult
    public mutating func writeNBDOptionReplyHeader(option: NBDOption, type: NBDOptionReplyType, length: UInt32) -> Int {
        writeMultipleIntegers(NBD.optionReplyMagic, option.rawValue, type.rawValue, length)
    }

    /// Writes a complete option reply (header and data). Strings are cut to 4096 bytes.
    /// - Parameter reply: The reply.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDOptionReply(_ reply: NBDOptionReply) -> Int {
        switch reply.body {
        case .ack:
            return writeNBDOptionReplyHeader(option: reply.option, type: .ack, length: 0)
        case .server(let name, let details):
            let nameBytes = NBD.utf8Bytes(name)
            let detailBytes = details.map { NBD.utf8Bytes($0) } ?? []
            var written = writeNBDOptionReplyHeader(
                option: reply.option,
                type: .server,
                length: UInt32(4 + nameBytes.count + detailBytes.count)
            )
            written += writeInteger(UInt32(nameBytes.count))
            written += writeBytes(nameBytes)
            written += writeBytes(detailBytes)
            return written
        case .information(let information):
            return writeNBDInformationReply(option: reply.option, information)
        case .metaContext(let id, let name):
            let nameBytes = NBD.utf8Bytes(name)
            var written = writeNBDOptionReplyHeader(
                option: reply.option,
                type: .metaContext,
                length: UInt32(4 + nameBytes.count)
            )
            written += writeInteger(id)
            written += writeBytes(nameBytes)
            return written
        case .error(let type, let message):
            let messageBytes = message.map { NBD.utf8Bytes($0) } ?? []
            var written = writeNBDOptionReplyHeader(
                option: reply.option,
                type: type,
                length: UInt32(messageBytes.count)
            )
            written += writeBytes(messageBytes)
            return written
        }
    }

    private mutating func writeNBDInformationReply(option: NBDOption, _ information: NBDInformation) -> Int {
        switch information {
        case .export(let size, let flags):
            return writeNBDOptionReplyHeader(option: option, type: .info, length: 12)
                + writeMultipleIntegers(NBDInfoType.export.rawValue, size, flags.rawValue)
        case .name(let text), .description(let text):
            let bytes = NBD.utf8Bytes(text)
            return writeNBDOptionReplyHeader(option: option, type: .info, length: UInt32(2 + bytes.count))
                + writeInteger(information.type.rawValue) + writeBytes(bytes)
        case .blockSize(let sizes):
            return writeNBDOptionReplyHeader(option: option, type: .info, length: 14)
                + writeMultipleIntegers(
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
        var written = writeMultipleIntegers(reply.size, reply.flags.rawValue)
        if reply.includesZeroPadding {
            written += writeRepeatingByte(0, count: NBD.exportNameReplyPadding)
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
        writeMultipleIntegers(NBD.simpleReplyMagic, error?.rawValue ?? 0, cookie)
    }

    /// Writes a simple reply: header, then `data` when `error` is `nil` (this copies the data).
    /// - Parameter reply: The reply.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDSimpleReply(_ reply: NBDSimpleReply) -> Int {
        guard reply.error == nil, var data = reply.data else {
            return writeNBDSimpleReplyHeader(cookie: reply.cookie, error: reply.error)
        }
        // One allocation for header and data, not a grow-and-copy once the data is appended.
        reserveCapacity(minimumWritableBytes: NBD.simpleReplyHeaderLength + data.readableBytes)
        return writeNBDSimpleReplyHeader(cookie: reply.cookie, error: nil) + writeBuffer(&data)
    }

    /// Writes any server message in full (bulk data is copied; see ``NBDServerMessageEncoder`` for the
    /// copy-free path).
    /// - Parameter message: The message.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDServerMessage(_ message: NBDServerMessage) -> Int {
        switch message {
        case .greeting(let flags): return writeNBDGreeting(flags: flags)
        case .optionReply(let reply): return writeNBDOptionReply(reply)
        case .exportNameReply(let reply): return writeNBDExportNameReply(reply)
        case .simpleReply(let reply): return writeNBDSimpleReply(reply)
        case .structuredReply(let chunk): return writeNBDStructuredReplyChunk(chunk)
        case .extendedReply(let chunk, let requestOffset):
            return writeNBDExtendedReplyChunk(chunk, requestOffset: requestOffset)
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
        writeInteger(flags.rawValue)
    }

    /// Writes an option request: `IHAVEOPT` · option · length · data.
    /// - Parameter request: The option request.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDOptionRequest(_ request: NBDOptionRequest) -> Int {
        var data = request.data
        return writeMultipleIntegers(
            NBD.optionRequestMagic,
            request.option.rawValue,
            UInt32(truncatingIfNeeded: data.readableBytes)
        ) + writeBuffer(&data)
    }

    /// Writes a transmission request header: 28 bytes in the compact form, 32 in the extended form
    /// (``NBDRequestHeader/isExtended``). A compact header's length must fit in 32 bits.
    /// - Parameter header: The header.
    /// - Returns: Number of bytes written (28 or 32).
    @discardableResult
    public mutating func writeNBDRequestHeader(_ header: NBDRequestHeader) -> Int {
        if header.isExtended {
            return writeMultipleIntegers(
                NBD.extendedRequestMagic,
                header.flags.rawValue,
                header.command.rawValue,
                header.cookie,
                header.offset,
                header.length
            )
        }
        precondition(header.length <= UInt64(UInt32.max), "a compact request header carries a 32-bit length")
        return writeMultipleIntegers(
            NBD.requestMagic,
            header.flags.rawValue,
            header.command.rawValue,
            header.cookie,
            header.offset,
            UInt32(truncatingIfNeeded: header.length)
        )
    }

    /// Writes a transmission request: header, then the payload if any. A ``NBDRequestPayload/discarded(length:)``
    /// payload is written as that many zero bytes.
    /// - Parameter request: The request.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDRequest(_ request: NBDRequest) -> Int {
        var written = writeNBDRequestHeader(request.header)
        switch request.payload {
        case .none: break
        case .data(var data): written += writeBuffer(&data)
        case .discarded(let length): written += writeRepeatingByte(0, count: Int(length))
        }
        return written
    }
}
