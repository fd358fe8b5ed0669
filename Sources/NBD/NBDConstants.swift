/// An option number sent by the client during the handshake (`NBD_OPT_*`).
///
/// Unknown values are representable so that the server can echo them in an `NBD_REP_ERR_UNSUP` reply.
public struct NBDOption: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The option number as sent on the wire.
    public var rawValue: UInt32

    /// Wraps a raw option number.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NBD_OPT_EXPORT_NAME` (1): select an export and enter transmission without option-reply framing.
    public static let exportName = NBDOption(rawValue: 1)
    /// `NBD_OPT_ABORT` (2): the client ends the session; the server acknowledges and closes.
    public static let abort = NBDOption(rawValue: 2)
    /// `NBD_OPT_LIST` (3): list the exports.
    public static let list = NBDOption(rawValue: 3)
    /// `NBD_OPT_PEEK_EXPORT` (4): withdrawn; answered as unsupported.
    public static let peekExport = NBDOption(rawValue: 4)
    /// `NBD_OPT_STARTTLS` (5): upgrade the connection to TLS.
    public static let startTLS = NBDOption(rawValue: 5)
    /// `NBD_OPT_INFO` (6): describe an export without entering transmission.
    public static let info = NBDOption(rawValue: 6)
    /// `NBD_OPT_GO` (7): describe an export and enter transmission.
    public static let go = NBDOption(rawValue: 7)
    /// `NBD_OPT_STRUCTURED_REPLY` (8): enable structured replies.
    public static let structuredReply = NBDOption(rawValue: 8)
    /// `NBD_OPT_LIST_META_CONTEXT` (9): list metadata contexts matching queries.
    public static let listMetaContext = NBDOption(rawValue: 9)
    /// `NBD_OPT_SET_META_CONTEXT` (10): select metadata contexts for BLOCK_STATUS.
    public static let setMetaContext = NBDOption(rawValue: 10)
    /// `NBD_OPT_EXTENDED_HEADERS` (11): 32-byte request and reply headers with 64-bit lengths for the rest of
    /// the session.
    public static let extendedHeaders = NBDOption(rawValue: 11)

    /// A readable name, e.g. `"GO"`, or the number for unknown options.
    public var description: String {
        switch self.rawValue {
        case 1: return "EXPORT_NAME"
        case 2: return "ABORT"
        case 3: return "LIST"
        case 4: return "PEEK_EXPORT"
        case 5: return "STARTTLS"
        case 6: return "INFO"
        case 7: return "GO"
        case 8: return "STRUCTURED_REPLY"
        case 9: return "LIST_META_CONTEXT"
        case 10: return "SET_META_CONTEXT"
        case 11: return "EXTENDED_HEADERS"
        default: return "option(\(self.rawValue))"
        }
    }
}

/// The type of an option reply (`NBD_REP_*`). Error types have bit 31 set.
public struct NBDOptionReplyType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The reply type as sent on the wire.
    public var rawValue: UInt32

    /// Wraps a raw reply type.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NBD_REP_ACK` (1): the option succeeded; final reply.
    public static let ack = NBDOptionReplyType(rawValue: 1)
    /// `NBD_REP_SERVER` (2): one export in a LIST answer.
    public static let server = NBDOptionReplyType(rawValue: 2)
    /// `NBD_REP_INFO` (3): one information item in an INFO/GO answer.
    public static let info = NBDOptionReplyType(rawValue: 3)
    /// `NBD_REP_META_CONTEXT` (4): one metadata context in a LIST/SET_META_CONTEXT answer.
    public static let metaContext = NBDOptionReplyType(rawValue: 4)
    /// `NBD_REP_ERR_UNSUP`: option not supported.
    public static let errorUnsupported = NBDOptionReplyType(rawValue: 0x8000_0001)
    /// `NBD_REP_ERR_POLICY`: forbidden by server policy.
    public static let errorPolicy = NBDOptionReplyType(rawValue: 0x8000_0002)
    /// `NBD_REP_ERR_INVALID`: syntactically or semantically invalid request.
    public static let errorInvalid = NBDOptionReplyType(rawValue: 0x8000_0003)
    /// `NBD_REP_ERR_PLATFORM`: not supported on this platform.
    public static let errorPlatform = NBDOptionReplyType(rawValue: 0x8000_0004)
    /// `NBD_REP_ERR_TLS_REQD`: TLS must be negotiated first.
    public static let errorTLSRequired = NBDOptionReplyType(rawValue: 0x8000_0005)
    /// `NBD_REP_ERR_UNKNOWN`: the export does not exist.
    public static let errorUnknown = NBDOptionReplyType(rawValue: 0x8000_0006)
    /// `NBD_REP_ERR_SHUTDOWN`: the server is shutting down.
    public static let errorShutdown = NBDOptionReplyType(rawValue: 0x8000_0007)
    /// `NBD_REP_ERR_BLOCK_SIZE_REQD`: the client must request `NBD_INFO_BLOCK_SIZE`.
    public static let errorBlockSizeRequired = NBDOptionReplyType(rawValue: 0x8000_0008)
    /// `NBD_REP_ERR_TOO_BIG`: the request or reply would be too large.
    public static let errorTooBig = NBDOptionReplyType(rawValue: 0x8000_0009)
    /// `NBD_REP_ERR_EXT_HEADER_REQD`: extended headers must be negotiated first.
    public static let errorExtendedHeaderRequired = NBDOptionReplyType(rawValue: 0x8000_000A)

    /// A readable name, e.g. `"ERR_UNSUP"`.
    public var description: String {
        switch self.rawValue {
        case 1: return "ACK"
        case 2: return "SERVER"
        case 3: return "INFO"
        case 4: return "META_CONTEXT"
        case 0x8000_0001: return "ERR_UNSUP"
        case 0x8000_0002: return "ERR_POLICY"
        case 0x8000_0003: return "ERR_INVALID"
        case 0x8000_0004: return "ERR_PLATFORM"
        case 0x8000_0005: return "ERR_TLS_REQD"
        case 0x8000_0006: return "ERR_UNKNOWN"
        case 0x8000_0007: return "ERR_SHUTDOWN"
        case 0x8000_0008: return "ERR_BLOCK_SIZE_REQD"
        case 0x8000_0009: return "ERR_TOO_BIG"
        case 0x8000_000A: return "ERR_EXT_HEADER_REQD"
        default: return "reply(0x\(String(self.rawValue, radix: 16)))"
        }
    }
}

/// An information type requested in, or sent in reply to, `NBD_OPT_INFO` / `NBD_OPT_GO` (`NBD_INFO_*`).
public struct NBDInfoType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The information type as sent on the wire.
    public var rawValue: UInt16

    /// Wraps a raw information type.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_INFO_EXPORT` (0): size in bytes and transmission flags; always sent.
    public static let export = NBDInfoType(rawValue: 0)
    /// `NBD_INFO_NAME` (1): canonical export name.
    public static let name = NBDInfoType(rawValue: 1)
    /// `NBD_INFO_DESCRIPTION` (2): human-readable description.
    public static let description = NBDInfoType(rawValue: 2)
    /// `NBD_INFO_BLOCK_SIZE` (3): minimum, preferred and maximum block sizes in bytes.
    public static let blockSize = NBDInfoType(rawValue: 3)

    /// A readable name, e.g. `"BLOCK_SIZE"`.
    public var description: String {
        switch self.rawValue {
        case 0: return "EXPORT"
        case 1: return "NAME"
        case 2: return "DESCRIPTION"
        case 3: return "BLOCK_SIZE"
        default: return "info(\(self.rawValue))"
        }
    }
}

/// Handshake flags sent by the server in the greeting (16 bits).
public struct NBDHandshakeFlags: OptionSet, Hashable, Sendable {
    /// The flags as sent on the wire.
    public var rawValue: UInt16

    /// Wraps raw flags.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_FLAG_FIXED_NEWSTYLE` (bit 0).
    public static let fixedNewstyle = NBDHandshakeFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_NO_ZEROES` (bit 1): the server can omit the 124 padding bytes of the EXPORT_NAME reply.
    public static let noZeroes = NBDHandshakeFlags(rawValue: 1 << 1)
}

/// Client flags sent in reply to the greeting (32 bits). Unknown bits are preserved so they can be rejected.
public struct NBDClientFlags: OptionSet, Hashable, Sendable {
    /// The flags as sent on the wire.
    public var rawValue: UInt32

    /// Wraps raw flags.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NBD_FLAG_C_FIXED_NEWSTYLE` (bit 0).
    public static let fixedNewstyle = NBDClientFlags(rawValue: 1 << 0)
    /// `NBD_FLAG_C_NO_ZEROES` (bit 1).
    public static let noZeroes = NBDClientFlags(rawValue: 1 << 1)

    /// Every bit this module understands.
    public static let known: NBDClientFlags = [.fixedNewstyle, .noZeroes]
}

/// Transmission flags describing an export (16 bits, `NBD_FLAG_*`), sent in the EXPORT_NAME reply and
/// in `NBD_INFO_EXPORT`.
public struct NBDTransmissionFlags: OptionSet, Hashable, Sendable {
    /// The flags as sent on the wire.
    public var rawValue: UInt16

    /// Wraps raw flags.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_FLAG_HAS_FLAGS` (0x0001): always set.
    public static let hasFlags = NBDTransmissionFlags(rawValue: 0x0001)
    /// `NBD_FLAG_READ_ONLY` (0x0002): writes, trims and zeroing are refused.
    public static let readOnly = NBDTransmissionFlags(rawValue: 0x0002)
    /// `NBD_FLAG_SEND_FLUSH` (0x0004): `NBD_CMD_FLUSH` is accepted.
    public static let sendFlush = NBDTransmissionFlags(rawValue: 0x0004)
    /// `NBD_FLAG_SEND_FUA` (0x0008): `NBD_CMD_FLAG_FUA` is accepted.
    public static let sendFUA = NBDTransmissionFlags(rawValue: 0x0008)
    /// `NBD_FLAG_ROTATIONAL` (0x0010): scheduling hint.
    public static let rotational = NBDTransmissionFlags(rawValue: 0x0010)
    /// `NBD_FLAG_SEND_TRIM` (0x0020): `NBD_CMD_TRIM` is accepted.
    public static let sendTrim = NBDTransmissionFlags(rawValue: 0x0020)
    /// `NBD_FLAG_SEND_WRITE_ZEROES` (0x0040): `NBD_CMD_WRITE_ZEROES` (and `NO_HOLE`) is accepted.
    public static let sendWriteZeroes = NBDTransmissionFlags(rawValue: 0x0040)
    /// `NBD_FLAG_SEND_DF` (0x0080): READ honours `NBD_CMD_FLAG_DF`; only with structured replies.
    public static let sendDF = NBDTransmissionFlags(rawValue: 0x0080)
    /// `NBD_FLAG_CAN_MULTI_CONN` (0x0100): flush/FUA on one connection covers all connections.
    public static let canMultiConn = NBDTransmissionFlags(rawValue: 0x0100)
    /// `NBD_FLAG_SEND_RESIZE` (0x0200): experimental RESIZE; never advertised by this module.
    public static let sendResize = NBDTransmissionFlags(rawValue: 0x0200)
    /// `NBD_FLAG_SEND_CACHE` (0x0400): `NBD_CMD_CACHE` is understood.
    public static let sendCache = NBDTransmissionFlags(rawValue: 0x0400)
    /// `NBD_FLAG_SEND_FAST_ZERO` (0x0800): `NBD_CMD_FLAG_FAST_ZERO` is accepted; needs `sendWriteZeroes`.
    public static let sendFastZero = NBDTransmissionFlags(rawValue: 0x0800)
    /// `NBD_FLAG_BLOCK_STATUS_PAYLOAD` (0x1000): BLOCK_STATUS accepts a payload naming the contexts to answer;
    /// advertised only with extended headers and at least one selected metadata context.
    public static let blockStatusPayload = NBDTransmissionFlags(rawValue: 0x1000)
}

/// A transmission command type (`NBD_CMD_*`). Unknown values are representable so they can be rejected.
public struct NBDCommand: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The command type as sent on the wire.
    public var rawValue: UInt16

    /// Wraps a raw command type.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_CMD_READ` (0).
    public static let read = NBDCommand(rawValue: 0)
    /// `NBD_CMD_WRITE` (1): the only command followed by a payload.
    public static let write = NBDCommand(rawValue: 1)
    /// `NBD_CMD_DISC` (2): soft disconnect; never answered.
    public static let disconnect = NBDCommand(rawValue: 2)
    /// `NBD_CMD_FLUSH` (3).
    public static let flush = NBDCommand(rawValue: 3)
    /// `NBD_CMD_TRIM` (4).
    public static let trim = NBDCommand(rawValue: 4)
    /// `NBD_CMD_CACHE` (5).
    public static let cache = NBDCommand(rawValue: 5)
    /// `NBD_CMD_WRITE_ZEROES` (6).
    public static let writeZeroes = NBDCommand(rawValue: 6)
    /// `NBD_CMD_BLOCK_STATUS` (7).
    public static let blockStatus = NBDCommand(rawValue: 7)
    /// `NBD_CMD_RESIZE` (8): experimental; rejected by ``NBDRequestValidator``.
    public static let resize = NBDCommand(rawValue: 8)

    /// A readable name, e.g. `"WRITE_ZEROES"`.
    public var description: String {
        switch self.rawValue {
        case 0: return "READ"
        case 1: return "WRITE"
        case 2: return "DISC"
        case 3: return "FLUSH"
        case 4: return "TRIM"
        case 5: return "CACHE"
        case 6: return "WRITE_ZEROES"
        case 7: return "BLOCK_STATUS"
        case 8: return "RESIZE"
        default: return "command(\(self.rawValue))"
        }
    }
}

/// Command flags of a transmission request (16 bits, `NBD_CMD_FLAG_*`).
public struct NBDCommandFlags: OptionSet, Hashable, Sendable {
    /// The flags as sent on the wire.
    public var rawValue: UInt16

    /// Wraps raw flags.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_CMD_FLAG_FUA` (0x01): force unit access.
    public static let fua = NBDCommandFlags(rawValue: 0x01)
    /// `NBD_CMD_FLAG_NO_HOLE` (0x02): WRITE_ZEROES must allocate.
    public static let noHole = NBDCommandFlags(rawValue: 0x02)
    /// `NBD_CMD_FLAG_DF` (0x04): READ must not be fragmented.
    public static let dontFragment = NBDCommandFlags(rawValue: 0x04)
    /// `NBD_CMD_FLAG_REQ_ONE` (0x08): BLOCK_STATUS must return one extent.
    public static let requestOne = NBDCommandFlags(rawValue: 0x08)
    /// `NBD_CMD_FLAG_FAST_ZERO` (0x10): WRITE_ZEROES must fail fast with ENOTSUP unless it is cheap.
    public static let fastZero = NBDCommandFlags(rawValue: 0x10)
    /// `NBD_CMD_FLAG_PAYLOAD_LEN` (0x20): extended headers only. The header's length is the length of a payload
    /// that follows (WRITE must set it; BLOCK_STATUS may, for context filtering); without it the length is an
    /// effect length and nothing follows.
    public static let payloadLength = NBDCommandFlags(rawValue: 0x20)
}

/// Flags of a structured reply chunk (16 bits).
public struct NBDReplyFlags: OptionSet, Hashable, Sendable {
    /// The flags as sent on the wire.
    public var rawValue: UInt16

    /// Wraps raw flags.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_REPLY_FLAG_DONE` (bit 0): last chunk of the reply.
    public static let done = NBDReplyFlags(rawValue: 1)
}

/// The type of a structured reply chunk (`NBD_REPLY_TYPE_*`). Error types have bit 15 set.
public struct NBDReplyChunkType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The chunk type as sent on the wire.
    public var rawValue: UInt16

    /// Wraps a raw chunk type.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NBD_REPLY_TYPE_NONE` (0): empty final chunk.
    public static let none = NBDReplyChunkType(rawValue: 0)
    /// `NBD_REPLY_TYPE_OFFSET_DATA` (1): offset followed by data.
    public static let offsetData = NBDReplyChunkType(rawValue: 1)
    /// `NBD_REPLY_TYPE_OFFSET_HOLE` (2): a range that reads as zeroes.
    public static let offsetHole = NBDReplyChunkType(rawValue: 2)
    /// `NBD_REPLY_TYPE_BLOCK_STATUS` (5): extents of one metadata context.
    public static let blockStatus = NBDReplyChunkType(rawValue: 5)
    /// `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` (6): extents with 64-bit lengths and status; the only block status
    /// chunk allowed once extended headers are negotiated.
    public static let blockStatusExtended = NBDReplyChunkType(rawValue: 6)
    /// `NBD_REPLY_TYPE_ERROR` (0x8001): error without offset.
    public static let error = NBDReplyChunkType(rawValue: 0x8001)
    /// `NBD_REPLY_TYPE_ERROR_OFFSET` (0x8002): error at an offset.
    public static let errorOffset = NBDReplyChunkType(rawValue: 0x8002)

    /// A readable name, e.g. `"OFFSET_DATA"`.
    public var description: String {
        switch self.rawValue {
        case 0: return "NONE"
        case 1: return "OFFSET_DATA"
        case 2: return "OFFSET_HOLE"
        case 5: return "BLOCK_STATUS"
        case 6: return "BLOCK_STATUS_EXT"
        case 0x8001: return "ERROR"
        case 0x8002: return "ERROR_OFFSET"
        default: return "chunk(0x\(String(self.rawValue, radix: 16)))"
        }
    }
}
