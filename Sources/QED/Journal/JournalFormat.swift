/// The journal's on-disk constants and entry encoding (docs/journal.md §1). Pure values, no I/O.
package enum JournalFormat {
    /// "QEDJ": the first bytes of every journal cluster.
    package static let magic: [UInt8] = [0x51, 0x45, 0x44, 0x4A]
    /// Bytes before the first entry of a journal cluster: magic (4) and cluster sequence (8).
    package static let clusterHeaderSize = 12
    /// The reset content; as a size byte, the end of the log.
    package static let none: UInt8 = 0xFF
    /// Closes a journal cluster: `skip` (u16) and the cluster's running CRC (u32).
    package static let endType: UInt8 = 0x01
    /// Commits the entries since the previous COMMIT: `sequence` (u64) and the running CRC (u32).
    package static let commitType: UInt8 = 0x02
    /// Bytes of an END entry.
    package static let endSize = 8
    /// Bytes of a COMMIT entry.
    package static let commitSize = 14
    /// The largest entry (its size byte can never read as NONE).
    package static let maximumEntrySize = 254
    /// The largest payload of a user entry.
    package static let maximumPayload = maximumEntrySize - 2
    /// Types the journal's user may append.
    package static let userTypes: ClosedRange<UInt8> = 0x03...0xFE
    /// Room every append leaves after its entry, so that a COMMIT and then an END always fit.
    package static let reserve = commitSize + endSize

    /// Writes `value` big-endian into `bytes[at..<at+8]`.
    static func put64(_ value: UInt64, into bytes: inout [UInt8], at: Int) {
        for i in 0..<8 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (56 - 8 * i)) }
    }

    /// Writes `value` big-endian into `bytes[at..<at+4]`.
    static func put32(_ value: UInt32, into bytes: inout [UInt8], at: Int) {
        for i in 0..<4 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * i)) }
    }

    /// The big-endian u16 at `bytes[at..<at+2]`.
    static func get16(_ bytes: [UInt8], at: Int) -> Int {
        Int(bytes[at]) << 8 | Int(bytes[at + 1])
    }

    /// The big-endian u64 at `bytes[at..<at+8]`.
    static func get64(_ bytes: [UInt8], at: Int) -> UInt64 {
        (0..<8).reduce(0) { ($0 << 8) | UInt64(bytes[at + $1]) }
    }

    /// The big-endian u32 at `bytes[at..<at+4]`.
    static func get32(_ bytes: [UInt8], at: Int) -> UInt32 {
        (0..<4).reduce(0) { ($0 << 8) | UInt32(bytes[at + $1]) }
    }
}

/// One user record of the journal: a type in ``JournalFormat/userTypes`` and up to 252 bytes.
package struct JournalEntry: Sendable, Equatable {
    /// The record type (0x03…0xFE).
    package var type: UInt8
    /// The record's bytes (0…252).
    package var payload: [UInt8]

    /// A record of `type` carrying `payload`.
    package init(type: UInt8, payload: [UInt8]) {
        self.type = type
        self.payload = payload
    }
}

/// The entries one COMMIT made durable, with its sequence number.
package struct JournalCommit: Sendable, Equatable {
    /// The COMMIT's sequence number: each is its predecessor's plus one.
    package var sequence: UInt64
    /// The entries since the previous COMMIT, in append order.
    package var entries: [JournalEntry]
}
