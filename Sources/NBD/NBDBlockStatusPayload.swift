public import NIOCore

/// The payload of a BLOCK_STATUS request sent with `NBD_CMD_FLAG_PAYLOAD_LEN` (extended headers, when the
/// server advertised `NBD_FLAG_BLOCK_STATUS_PAYLOAD`): effect length (8 bytes) · n × context id (4 bytes).
/// It asks for status of only the listed contexts.
public struct NBDBlockStatusPayload: Hashable, Sendable {
    /// How much of the export the request covers, in bytes.
    public var effectLength: UInt64
    /// The metadata context ids to answer, in the client's order (at least one, no duplicates).
    public var contextIDs: [UInt32]

    /// Creates a payload.
    /// - Parameters:
    ///   - effectLength: Effect length in bytes.
    ///   - contextIDs: Context ids to answer.
    public init(effectLength: UInt64, contextIDs: [UInt32]) {
        self.effectLength = effectLength
        self.contextIDs = contextIDs
    }

    /// Parses a payload, checking its shape only (whether the ids were negotiated is the validator's
    /// business).
    /// - Parameter payload: The bytes that followed the request header.
    /// - Returns: The payload, or nil when its length is not 8 + 4n with n ≥ 1 or an id repeats.
    public init?(parsing payload: ByteBuffer) {
        var buffer = payload
        guard buffer.readableBytes >= 12, (buffer.readableBytes - 8) % 4 == 0,
            let effectLength = buffer.readInteger(as: UInt64.self)
        else { return nil }
        var ids: [UInt32] = []
        var seen: Set<UInt32> = []
        ids.reserveCapacity(buffer.readableBytes / 4)
        while let id = buffer.readInteger(as: UInt32.self) {
            guard seen.insert(id).inserted else { return nil }
            ids.append(id)
        }
        self.effectLength = effectLength
        self.contextIDs = ids
    }

    /// Appends the wire form to `buffer`.
    /// - Returns: Number of bytes written.
    @discardableResult
    public func write(to buffer: inout ByteBuffer) -> Int {
        var written = buffer.writeInteger(self.effectLength)
        for id in self.contextIDs { written += buffer.writeInteger(id) }
        return written
    }
}
