public import NIOCore

/// One option request as framed on the wire: `IHAVEOPT` · option · length · data.
///
/// The data is kept raw; option-specific parsers (``NBDExportInfoRequest``, ``NBDMetaContextRequest``)
/// interpret it so that a malformed payload becomes an `NBD_REP_ERR_INVALID` reply rather than a
/// framing error.
public struct NBDOptionRequest: Hashable, Sendable {
    /// The option number.
    public var option: NBDOption
    /// The option data (its length is the length field of the request, in bytes).
    public var data: ByteBuffer

    /// Creates an option request.
    /// - Parameters:
    ///   - option: The option number.
    ///   - data: The option data; empty by default.
    public init(option: NBDOption, data: ByteBuffer = ByteBuffer()) {
        self.option = option
        self.data = data
    }
}

/// The header of a transmission request: 28 bytes in the compact form, 32 in the extended form that
/// `NBD_OPT_EXTENDED_HEADERS` switches a session to.
public struct NBDRequestHeader: Hashable, Sendable {
    /// Command flags.
    public var flags: NBDCommandFlags
    /// Command type.
    public var command: NBDCommand
    /// Opaque value the server must echo in every reply to this request (formerly called "handle").
    public var cookie: UInt64
    /// Offset into the export, in bytes.
    public var offset: UInt64
    /// The length field, in bytes: at most 2³² − 1 in the compact form. It is the payload length for a compact
    /// WRITE and for an extended request with ``NBDCommandFlags/payloadLength``; otherwise the effect length
    /// (how much of the export the command covers; up to 2⁶⁴ − 1 in the extended form).
    public var length: UInt64
    /// Whether the request came in the extended (32-byte) form.
    public var isExtended: Bool

    /// Creates a request header.
    /// - Parameters:
    ///   - command: Command type.
    ///   - flags: Command flags; none by default.
    ///   - cookie: Value echoed in the reply.
    ///   - offset: Offset into the export, in bytes.
    ///   - length: Payload or effect length, in bytes (compact headers carry at most 2³² − 1).
    ///   - isExtended: Whether the header is (or is to be written in) the extended form.
    public init(
        command: NBDCommand,
        flags: NBDCommandFlags = [],
        cookie: UInt64,
        offset: UInt64,
        length: UInt64,
        isExtended: Bool = false
    ) {
        self.flags = flags
        self.command = command
        self.cookie = cookie
        self.offset = offset
        self.length = length
        self.isExtended = isExtended
    }

    /// Whether a payload of ``length`` bytes follows this header on the wire: a WRITE in either form, and in
    /// the extended form any command with ``NBDCommandFlags/payloadLength``. (The protocol says an extended
    /// WRITE must set `PAYLOAD_LEN`, but QEMU 10's client leaves it clear and QEMU's server reads the data
    /// anyway; so does this module.)
    public var carriesPayload: Bool {
        self.command == .write || (self.isExtended && self.flags.contains(.payloadLength))
    }
}

/// The payload that followed a transmission request header.
public enum NBDRequestPayload: Hashable, Sendable {
    /// No payload followed the header.
    case none
    /// The payload, exactly `header.length` bytes (a slice of the receive buffer, not a copy): the data of a
    /// WRITE, or (extended headers) whatever a command with `NBD_CMD_FLAG_PAYLOAD_LEN` sent.
    case data(ByteBuffer)
    /// A payload longer than the decoder's maximum: its bytes were read off the connection and
    /// thrown away so the stream stays in sync. The server must answer EINVAL. Carries the length in bytes.
    case discarded(length: UInt64)
}

/// A decoded transmission request: header plus payload.
public struct NBDRequest: Hashable, Sendable {
    /// The request header.
    public var header: NBDRequestHeader
    /// The payload (a compact WRITE, or an extended request with `NBD_CMD_FLAG_PAYLOAD_LEN`).
    public var payload: NBDRequestPayload

    /// Creates a request.
    /// - Parameters:
    ///   - header: The request header.
    ///   - payload: The payload; ``NBDRequestPayload/none`` by default.
    public init(header: NBDRequestHeader, payload: NBDRequestPayload = .none) {
        self.header = header
        self.payload = payload
    }

    /// Whether the payload was too large and has been discarded (see ``NBDRequestPayload/discarded(length:)``).
    public var isOversized: Bool {
        if case .discarded = self.payload { return true }
        return false
    }
}

/// Everything a client sends, in connection order: client flags once, then option requests, then
/// transmission requests. Produced by ``NBDServerDecoder`` and consumed by ``NBDNegotiation``.
public enum NBDClientMessage: Hashable, Sendable {
    /// The 32-bit client flags that answer the greeting (unknown bits preserved).
    case clientFlags(NBDClientFlags)
    /// An option request of the handshake phase.
    case option(NBDOptionRequest)
    /// A transmission request.
    case request(NBDRequest)
}

/// Why an option's data could not be parsed. The server answers `NBD_REP_ERR_INVALID` with ``reason``.
public struct NBDOptionDataError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Human-readable explanation, suitable as the error reply's message.
    public var reason: String

    /// Creates an error with a reason.
    /// - Parameter reason: Human-readable explanation.
    public init(_ reason: String) { self.reason = reason }

    /// The reason.
    public var description: String { self.reason }
}

extension NBD {
    /// Decodes a protocol string: strict UTF-8, no NUL, at most ``maximumStringLength`` bytes.
    /// Returns `nil` if the bytes break any of these rules.
    static func string(from bytes: ByteBuffer) -> String? {
        guard bytes.readableBytes <= NBD.maximumStringLength else { return nil }
        let view = bytes.readableBytesView
        guard !view.contains(0) else { return nil }
        return String(validating: view, as: UTF8.self)
    }

    /// Reads a 32-bit length followed by that many bytes of protocol string.
    static func readLengthPrefixedString(
        from buffer: inout ByteBuffer,
        what: String
    ) throws(NBDOptionDataError) -> String {
        guard let length = buffer.readInteger(as: UInt32.self) else {
            throw NBDOptionDataError("\(what): length field truncated")
        }
        guard UInt64(length) <= UInt64(NBD.maximumStringLength) else {
            throw NBDOptionDataError("\(what): longer than \(NBD.maximumStringLength) bytes")
        }
        guard let bytes = buffer.readSlice(length: Int(length)) else {
            throw NBDOptionDataError("\(what): data truncated")
        }
        guard let string = NBD.string(from: bytes) else {
            throw NBDOptionDataError("\(what): not a valid NUL-free UTF-8 string")
        }
        return string
    }
}

/// Option data that begins with an export name (INFO, GO, LIST/SET_META_CONTEXT).
public protocol NBDExportNamingRequest {
    /// The export the option refers to; empty means the default export.
    var exportName: String { get }
    /// Parses option data.
    /// - Throws: ``NBDOptionDataError`` naming what is malformed.
    init(parsing data: ByteBuffer) throws(NBDOptionDataError)
}

/// The data of an `NBD_OPT_INFO` or `NBD_OPT_GO` request: namelen(4) · name · count(2) · count × type(2).
public struct NBDExportInfoRequest: NBDExportNamingRequest, Hashable, Sendable {
    /// The export name; empty means the default export.
    public var exportName: String
    /// The information types the client asked for, in order (may contain unknown or repeated types).
    public var requests: [NBDInfoType]

    /// Creates a request.
    /// - Parameters:
    ///   - exportName: The export name.
    ///   - requests: The information types to ask for.
    public init(exportName: String, requests: [NBDInfoType] = []) {
        self.exportName = exportName
        self.requests = requests
    }

    /// Parses option data.
    /// - Parameter data: The option data of an INFO or GO request.
    /// - Throws: ``NBDOptionDataError`` if lengths are inconsistent or the name is not a valid string.
    public init(parsing data: ByteBuffer) throws(NBDOptionDataError) {
        var buffer = data
        let name = try NBD.readLengthPrefixedString(from: &buffer, what: "export name")
        guard let count = buffer.readInteger(as: UInt16.self) else {
            throw NBDOptionDataError("information request count truncated")
        }
        guard buffer.readableBytes == Int(count) * 2 else {
            throw NBDOptionDataError("information request count \(count) does not match the option length")
        }
        var requests: [NBDInfoType] = []
        requests.reserveCapacity(Int(count))
        while let raw = buffer.readInteger(as: UInt16.self) {
            requests.append(NBDInfoType(rawValue: raw))
        }
        self.exportName = name
        self.requests = requests
    }

    /// Appends the wire form of this request's option data to `buffer`.
    /// - Parameter buffer: Destination buffer.
    /// - Returns: Number of bytes written.
    @discardableResult
    public func write(to buffer: inout ByteBuffer) -> Int {
        var written = buffer.writeNBDLengthPrefixedString(self.exportName)
        written += buffer.writeInteger(UInt16(truncatingIfNeeded: self.requests.count))
        for request in self.requests { written += buffer.writeInteger(request.rawValue) }
        return written
    }
}

/// The data of an `NBD_OPT_LIST_META_CONTEXT` or `NBD_OPT_SET_META_CONTEXT` request:
/// namelen(4) · name · count(4) · count × (len(4) · query).
public struct NBDMetaContextRequest: NBDExportNamingRequest, Hashable, Sendable {
    /// The export the contexts refer to.
    public var exportName: String
    /// The queries, e.g. `"base:allocation"` or (LIST only) the wildcard `"base:"`.
    public var queries: [String]

    /// Creates a request.
    /// - Parameters:
    ///   - exportName: The export name.
    ///   - queries: The context queries.
    public init(exportName: String, queries: [String] = []) {
        self.exportName = exportName
        self.queries = queries
    }

    /// Parses option data.
    /// - Parameter data: The option data of a LIST/SET_META_CONTEXT request.
    /// - Throws: ``NBDOptionDataError`` if any length is inconsistent with the data or a string is invalid.
    public init(parsing data: ByteBuffer) throws(NBDOptionDataError) {
        var buffer = data
        let name = try NBD.readLengthPrefixedString(from: &buffer, what: "export name")
        guard let count = buffer.readInteger(as: UInt32.self) else {
            throw NBDOptionDataError("query count truncated")
        }
        var queries: [String] = []
        var remaining = count
        while remaining > 0 {
            // Each query consumes at least its 4-byte length, so this loop is bounded by the data size.
            queries.append(try NBD.readLengthPrefixedString(from: &buffer, what: "query"))
            remaining -= 1
        }
        guard buffer.readableBytes == 0 else {
            throw NBDOptionDataError("\(buffer.readableBytes) unexpected bytes after the last query")
        }
        self.exportName = name
        self.queries = queries
    }

    /// Appends the wire form of this request's option data to `buffer`.
    /// - Parameter buffer: Destination buffer.
    /// - Returns: Number of bytes written.
    @discardableResult
    public func write(to buffer: inout ByteBuffer) -> Int {
        var written = buffer.writeNBDLengthPrefixedString(self.exportName)
        written += buffer.writeInteger(UInt32(truncatingIfNeeded: self.queries.count))
        for query in self.queries { written += buffer.writeNBDLengthPrefixedString(query) }
        return written
    }
}

extension ByteBuffer {
    /// Writes `string` as option data carries strings: its UTF-8 length (4 bytes) then its bytes;
    /// the counterpart of ``NBD/readLengthPrefixedString(from:what:)``.
    /// - Returns: Number of bytes written.
    @discardableResult
    public mutating func writeNBDLengthPrefixedString(_ string: String) -> Int {
        writeInteger(UInt32(truncatingIfNeeded: string.utf8.count)) + writeString(string)
    }
}
