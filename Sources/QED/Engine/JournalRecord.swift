/// The QED engine's journal records (docs/journal.md §2, "What is recorded"): what a dirty period
/// may have changed, so that recovery looks only there.
enum JournalRecord: Equatable {
    /// First record of every period: the allocation high-water mark `H` (bytes) at its start.
    /// Every cluster allocated in the period lies at or above it.
    case checkpoint(highWater: UInt64)
    /// L1 index whose L1 entry or L2 table the period may change: recorded, committed and durable
    /// before the first such change of the period.
    case touched(l1Index: UInt32)
    /// The journal could not name everything: recovery must run the full check.
    case overflow

    static let checkpointType: UInt8 = 0x10
    static let touchedType: UInt8 = 0x11
    static let overflowType: UInt8 = 0x13

    /// The record's journal type and payload (big-endian).
    var encoded: (type: UInt8, payload: [UInt8]) {
        switch self {
        case .checkpoint(let h): (Self.checkpointType, (0..<8).map { UInt8(truncatingIfNeeded: h >> (56 - 8 * $0)) })
        case .touched(let i): (Self.touchedType, (0..<4).map { UInt8(truncatingIfNeeded: i >> (24 - 8 * $0)) })
        case .overflow: (Self.overflowType, [])
        }
    }

    /// Decodes a committed journal entry; nil for an unknown type or a payload of the wrong size
    /// (recovery then runs the full check).
    init?(_ entry: JournalEntry) {
        let p = entry.payload
        switch entry.type {
        case Self.checkpointType where p.count == 8:
            self = .checkpoint(highWater: p.reduce(0) { $0 << 8 | UInt64($1) })
        case Self.touchedType where p.count == 4:
            self = .touched(l1Index: p.reduce(0) { $0 << 8 | UInt32($1) })
        case Self.overflowType where p.isEmpty:
            self = .overflow
        default:
            return nil
        }
    }
}
