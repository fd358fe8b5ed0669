/// The NBD (Network Block Device) protocol: wire types, encoding, decoding, negotiation state and request
/// validation. This module performs no I/O and knows nothing about the storage behind an export.
///
/// A server built on it typically:
/// 1. installs ``NBDServerDecoder`` (inbound, wrapped in a `ByteToMessageHandler`) and
///    ``NBDServerMessageEncoder`` (outbound) on each connection,
/// 2. writes ``NBDNegotiation/greeting`` and feeds every decoded ``NBDClientMessage`` to
///    ``NBDNegotiation/receive(_:)`` until it yields ``NBDNegotiation/Action/enterTransmission(_:)``,
/// 3. checks every transmission request with ``NBDRequestValidator`` and answers with
///    ``NBDSimpleReply`` or ``NBDStructuredReplyChunk`` values, through the ``NBDSession`` helpers that pick
///    the header style negotiated (simple, structured, or extended after `NBD_OPT_EXTENDED_HEADERS`).
public enum NBD {
    /// The IANA-registered TCP port for NBD.
    public static let defaultPort: Int = 10809

    /// The first magic of the server greeting, `"NBDMAGIC"` in ASCII.
    public static let greetingMagic: UInt64 = 0x4e42_444d_4147_4943

    /// The magic preceding every option request (and the second greeting magic), `"IHAVEOPT"` in ASCII.
    public static let optionRequestMagic: UInt64 = 0x4948_4156_454F_5054

    /// The magic preceding every option reply.
    public static let optionReplyMagic: UInt64 = 0x0003_e889_0455_65a9

    /// The magic of a compact (28-byte) transmission request header.
    public static let requestMagic: UInt32 = 0x2560_9513

    /// The magic of an extended (32-byte) transmission request header, used once `NBD_OPT_EXTENDED_HEADERS`
    /// was acknowledged.
    public static let extendedRequestMagic: UInt32 = 0x21e4_1c71

    /// The magic of an extended (32-byte) reply chunk header, the only reply form once extended headers
    /// were negotiated.
    public static let extendedReplyMagic: UInt32 = 0x6e8a_278c

    /// The magic of a simple reply header.
    public static let simpleReplyMagic: UInt32 = 0x6744_6698

    /// The magic of a structured reply chunk header.
    public static let structuredReplyMagic: UInt32 = 0x668e_33ef

    /// Size in bytes of an option request header (magic, option, length).
    public static let optionRequestHeaderLength: Int = 16

    /// Size in bytes of a compact transmission request header.
    public static let requestHeaderLength: Int = 28

    /// Size in bytes of an extended transmission request header.
    public static let extendedRequestHeaderLength: Int = 32

    /// Size in bytes of an extended reply chunk header.
    public static let extendedReplyHeaderLength: Int = 32

    /// Size in bytes of a simple reply header.
    public static let simpleReplyHeaderLength: Int = 16

    /// Size in bytes of a structured reply chunk header.
    public static let structuredReplyHeaderLength: Int = 20

    /// Number of zero bytes that pad the `NBD_OPT_EXPORT_NAME` reply unless both sides agreed on `NO_ZEROES`.
    public static let exportNameReplyPadding: Int = 124

    /// Longest string (export name, description, message, context name) the protocol allows, in bytes.
    public static let maximumStringLength: Int = 4096

    /// Default maximum payload of a READ or WRITE, in bytes (32 MiB, the limit every client respects).
    public static let defaultMaximumPayloadLength: Int = 32 * 1024 * 1024

    /// Largest option request data accepted before the connection is dropped, in bytes (32 MiB, as qemu does).
    public static let maximumOptionLength: Int = 32 * 1024 * 1024

    /// Default cap on the number of extents in one BLOCK_STATUS chunk (qemu's value: 1 MiB of extent descriptors).
    public static let defaultMaximumExtentCount: Int = 131_072
}
