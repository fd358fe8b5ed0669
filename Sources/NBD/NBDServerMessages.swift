public import NIOCore

/// The block size constraints advertised in `NBD_INFO_BLOCK_SIZE`, in bytes.
public struct NBDBlockSizeConstraints: Hashable, Sendable {
    /// Smallest addressable length and alignment (a power of two, at most 64 KiB).
    public var minimum: UInt32
    /// Size and alignment for efficient I/O (a power of two, at least `max(minimum, 512)`).
    public var preferred: UInt32
    /// Largest READ/WRITE payload the server accepts.
    public var maximum: UInt32

    /// Creates constraints.
    /// - Parameters:
    ///   - minimum: Minimum block size in bytes.
    ///   - preferred: Preferred block size in bytes.
    ///   - maximum: Maximum payload in bytes.
    public init(minimum: UInt32, preferred: UInt32, maximum: UInt32) {
        self.minimum = minimum
        self.preferred = preferred
        self.maximum = maximum
    }

    /// 1 / 4096 / 32 MiB: what qemu-nbd advertises for files and what every client accepts.
    public static let `default` = NBDBlockSizeConstraints(
        minimum: 1,
        preferred: 4096,
        maximum: UInt32(NBD.defaultMaximumPayloadLength)
    )
}

/// One information item of an `NBD_REP_INFO` reply.
public enum NBDInformation: Hashable, Sendable {
    /// `NBD_INFO_EXPORT`: export size in bytes and transmission flags.
    case export(size: UInt64, flags: NBDTransmissionFlags)
    /// `NBD_INFO_NAME`: canonical export name.
    case name(String)
    /// `NBD_INFO_DESCRIPTION`: human-readable description.
    case description(String)
    /// `NBD_INFO_BLOCK_SIZE`: block size constraints.
    case blockSize(NBDBlockSizeConstraints)

    /// The information type of this item.
    public var type: NBDInfoType {
        switch self {
        case .export: return .export
        case .name: return .name
        case .description: return .description
        case .blockSize: return .blockSize
        }
    }
}

/// One reply to an option request (every option but `NBD_OPT_EXPORT_NAME`).
public struct NBDOptionReply: Hashable, Sendable {
    /// What a reply carries.
    public enum Body: Hashable, Sendable {
        /// `NBD_REP_ACK`: final success reply, no data.
        case ack
        /// `NBD_REP_SERVER`: one export of a LIST answer, with an optional human-readable description.
        case server(name: String, details: String?)
        /// `NBD_REP_INFO`: one information item.
        case information(NBDInformation)
        /// `NBD_REP_META_CONTEXT`: a metadata context id and name.
        case metaContext(id: UInt32, name: String)
        /// An error reply (`type` must have bit 31 set) with an optional human-readable message.
        case error(NBDOptionReplyType, message: String?)
    }

    /// The option being answered (echoed on the wire).
    public var option: NBDOption
    /// The reply content.
    public var body: Body

    /// Creates a reply.
    /// - Parameters:
    ///   - option: The option being answered.
    ///   - body: The reply content.
    public init(option: NBDOption, body: Body) {
        self.option = option
        self.body = body
    }
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size(8) · flags(2) · 124 zero bytes (omitted with `NO_ZEROES`).
public struct NBDExportNameReply: Hashable, Sendable {
    /// Export size in bytes.
    public var size: UInt64
    /// Transmission flags.
    public var flags: NBDTransmissionFlags
    /// Whether the 124 zero bytes are sent (false only when the client set `NBD_FLAG_C_NO_ZEROES`).
    public var includesZeroPadding: Bool

    /// Creates an EXPORT_NAME reply.
    /// - Parameters:
    ///   - size: Export size in bytes.
    ///   - flags: Transmission flags.
    ///   - includesZeroPadding: Whether to append the 124 zero bytes.
    public init(size: UInt64, flags: NBDTransmissionFlags, includesZeroPadding: Bool) {
        self.size = size
        self.flags = flags
        self.includesZeroPadding = includesZeroPadding
    }
}

/// A simple reply: magic · error · cookie, followed by the READ data when successful.
public struct NBDSimpleReply: Hashable, Sendable {
    /// The cookie of the request being answered.
    public var cookie: UInt64
    /// The error, or `nil` for success (0 on the wire).
    public var error: NBDError?
    /// READ data, sent after the header only on success. `nil` for every other command.
    public var data: ByteBuffer?

    /// Creates a simple reply.
    /// - Parameters:
    ///   - cookie: The cookie of the request.
    ///   - error: The error, or `nil` for success.
    ///   - data: READ data (ignored when `error` is set).
    public init(cookie: UInt64, error: NBDError? = nil, data: ByteBuffer? = nil) {
        self.cookie = cookie
        self.error = error
        self.data = data
    }
}

/// One extent of a BLOCK_STATUS chunk as sent on the wire.
public struct NBDExtent: Hashable, Sendable {
    /// Extent length in bytes (never zero on the wire).
    public var length: UInt32
    /// Context-specific status flags (for `base:allocation`: bit 0 hole, bit 1 zero).
    public var flags: UInt32

    /// Creates an extent.
    /// - Parameters:
    ///   - length: Length in bytes.
    ///   - flags: Status flags.
    public init(length: UInt32, flags: UInt32) {
        self.length = length
        self.flags = flags
    }

    /// `NBD_STATE_HOLE` of `base:allocation`: the range is not allocated.
    public static let stateHole: UInt32 = 0x1
    /// `NBD_STATE_ZERO` of `base:allocation`: the range reads as zeroes.
    public static let stateZero: UInt32 = 0x2
}

/// One extent of an `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` chunk (extended headers): 64-bit length and status.
public struct NBDExtendedExtent: Hashable, Sendable {
    /// Extent length in bytes (never zero on the wire); may exceed 4 GiB.
    public var length: UInt64
    /// Context-specific status; the contexts served here use only the low 32 bits.
    public var flags: UInt64

    /// Creates an extent.
    /// - Parameters:
    ///   - length: Length in bytes.
    ///   - flags: Status flags.
    public init(length: UInt64, flags: UInt64) {
        self.length = length
        self.flags = flags
    }
}

/// One chunk of a structured reply. With extended headers the same chunk goes out behind the 32-byte
/// extended header (see ``NBDServerMessage/extendedReply(_:requestOffset:)``).
public struct NBDStructuredReplyChunk: Hashable, Sendable {
    /// The chunk payload, one case per chunk type.
    public enum Content: Hashable, Sendable {
        /// `NBD_REPLY_TYPE_NONE`: no payload; used as the final chunk.
        case none
        /// `NBD_REPLY_TYPE_OFFSET_DATA`: export offset (bytes) and the data read there (at least 1 byte).
        case offsetData(offset: UInt64, data: ByteBuffer)
        /// `NBD_REPLY_TYPE_OFFSET_HOLE`: a range of `length` bytes at `offset` that reads as zeroes.
        case offsetHole(offset: UInt64, length: UInt32)
        /// `NBD_REPLY_TYPE_BLOCK_STATUS`: extents of one metadata context. Build with ``NBDBlockStatus``.
        /// Compact headers only.
        case blockStatus(contextID: UInt32, extents: [NBDExtent])
        /// `NBD_REPLY_TYPE_BLOCK_STATUS_EXT`: extents of one metadata context with 64-bit lengths. Build with
        /// ``NBDBlockStatus``. Extended headers only (an ``NBDServerMessage/extendedReply(_:requestOffset:)``).
        case blockStatusExtended(contextID: UInt32, extents: [NBDExtendedExtent])
        /// `NBD_REPLY_TYPE_ERROR`: an error with an optional message (empty string for none).
        case error(NBDError, message: String)
        /// `NBD_REPLY_TYPE_ERROR_OFFSET`: an error at an export offset (bytes), with a message.
        case errorOffset(NBDError, message: String, offset: UInt64)
    }

    /// Chunk flags; ``NBDReplyFlags/done`` marks the last chunk of a reply.
    public var flags: NBDReplyFlags
    /// The cookie of the request being answered.
    public var cookie: UInt64
    /// The payload.
    public var content: Content

    /// Creates a chunk.
    /// - Parameters:
    ///   - cookie: The cookie of the request.
    ///   - flags: Chunk flags (set ``NBDReplyFlags/done`` on the last chunk).
    ///   - content: The payload.
    public init(cookie: UInt64, flags: NBDReplyFlags, content: Content) {
        self.cookie = cookie
        self.flags = flags
        self.content = content
    }

    /// A final `NONE` chunk (DONE set) for `cookie`.
    /// - Parameter cookie: The cookie of the request.
    public static func done(cookie: UInt64) -> NBDStructuredReplyChunk {
        NBDStructuredReplyChunk(cookie: cookie, flags: .done, content: .none)
    }

    /// A final `ERROR` chunk (DONE set) for `cookie`.
    /// - Parameters:
    ///   - cookie: The cookie of the request.
    ///   - error: The error value.
    ///   - message: Human-readable text; empty by default.
    public static func error(cookie: UInt64, _ error: NBDError, message: String = "") -> NBDStructuredReplyChunk {
        NBDStructuredReplyChunk(cookie: cookie, flags: .done, content: .error(error, message: message))
    }
}

/// Everything the server sends, in a form ``NBDServerMessageEncoder`` or the `ByteBuffer.writeNBD…`
/// functions turn into bytes.
public enum NBDServerMessage: Hashable, Sendable {
    /// The 18-byte greeting: `NBDMAGIC` · `IHAVEOPT` · handshake flags.
    case greeting(NBDHandshakeFlags)
    /// A reply to an option request.
    case optionReply(NBDOptionReply)
    /// The reply to `NBD_OPT_EXPORT_NAME`.
    case exportNameReply(NBDExportNameReply)
    /// A simple transmission reply.
    case simpleReply(NBDSimpleReply)
    /// One structured reply chunk (20-byte header).
    case structuredReply(NBDStructuredReplyChunk)
    /// One reply chunk behind the 32-byte extended header, which repeats the offset of the request it answers
    /// (`requestOffset`, bytes). The only reply form once extended headers are negotiated.
    case extendedReply(NBDStructuredReplyChunk, requestOffset: UInt64)
}
