import NBD
import NIOCore

/// Builds a buffer from hexadecimal text; spaces, newlines and `|` separators are ignored.
func hex(_ text: String) -> ByteBuffer {
    let digits = text.filter { $0.isHexDigit }
    precondition(digits.count % 2 == 0, "odd number of hex digits in test data")
    var bytes: [UInt8] = []
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        bytes.append(UInt8(digits[index..<next], radix: 16) ?? 0)
        index = next
    }
    return ByteBuffer(bytes: bytes)
}

/// Hex of ASCII text.
func ascii(_ text: String) -> String {
    text.utf8.map { byte in
        let digits = String(byte, radix: 16)
        return digits.count == 1 ? "0" + digits : digits
    }.joined()
}

/// The bytes a server message encodes to.
func encoded(_ message: NBDServerMessage) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeNBDServerMessage(message)
    return buffer
}

/// Byte array of a buffer's readable bytes (for readable failure output).
func bytes(_ buffer: ByteBuffer) -> [UInt8] { Array(buffer.readableBytesView) }

// MARK: - Client-side builders

func optionRequest(_ option: NBDOption, _ data: ByteBuffer = ByteBuffer()) -> NBDOptionRequest {
    NBDOptionRequest(option: option, data: data)
}

func infoRequest(_ option: NBDOption, name: String, _ requests: [NBDInfoType] = []) -> NBDOptionRequest {
    var data = ByteBuffer()
    NBDExportInfoRequest(exportName: name, requests: requests).write(to: &data)
    return NBDOptionRequest(option: option, data: data)
}

func metaRequest(_ option: NBDOption, name: String, _ queries: [String]) -> NBDOptionRequest {
    var data = ByteBuffer()
    NBDMetaContextRequest(exportName: name, queries: queries).write(to: &data)
    return NBDOptionRequest(option: option, data: data)
}

func exportNameRequest(_ name: String) -> NBDOptionRequest {
    NBDOptionRequest(option: .exportName, data: ByteBuffer(string: name))
}

func wire(_ option: NBDOptionRequest) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeNBDOptionRequest(option)
    return buffer
}

func wire(_ request: NBDRequest) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeNBDRequest(request)
    return buffer
}

func request(
    _ command: NBDCommand,
    flags: NBDCommandFlags = [],
    cookie: UInt64 = 1,
    offset: UInt64 = 0,
    length: UInt32 = 0,
    payload: NBDRequestPayload = .none
) -> NBDRequest {
    NBDRequest(
        header: NBDRequestHeader(
            command: command, flags: flags, cookie: cookie, offset: offset, length: UInt64(length)),
        payload: payload
    )
}

func writeRequest(cookie: UInt64, offset: UInt64, payload: [UInt8]) -> NBDRequest {
    request(
        .write,
        cookie: cookie,
        offset: offset,
        length: UInt32(payload.count),
        payload: .data(ByteBuffer(bytes: payload))
    )
}

func concat(_ buffers: ByteBuffer...) -> ByteBuffer {
    var out = ByteBuffer()
    for var buffer in buffers { out.writeBuffer(&buffer) }
    return out
}
