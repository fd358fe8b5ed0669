import Testing

@testable import QED

/// Helpers of the journal suites: a region in a file, a model of the records, torn survivors.
enum JournalKit {
    /// A region of `clusters` journal clusters of `clusterSize` bytes, placed `start` bytes into the
    /// file so that bytes around it prove the journal never writes outside it.
    static func layout(clusters: Int, clusterSize: Int = 512, start: UInt64 = 1024) throws -> JournalLayout {
        try JournalLayout(start: start, size: UInt64(clusters * clusterSize), clusterSize: clusterSize)
    }

    /// A file with 0xA5 around where `layout` will be (the region is formatted by the caller).
    static func surroundedFile(_ layout: JournalLayout) -> FaultInjectingFile {
        let total = Int(layout.start + layout.size) + 1024
        return FaultInjectingFile([UInt8](repeating: 0xA5, count: total))
    }

    /// Whether the bytes outside the region are still 0xA5.
    static func outsideUntouched(_ bytes: [UInt8], _ layout: JournalLayout) -> Bool {
        let start = Int(layout.start)
        let end = Int(layout.start + layout.size)
        return bytes[..<start].allSatisfy { $0 == 0xA5 } && bytes[end...].allSatisfy { $0 == 0xA5 }
    }

    /// A record whose payload says which record it is (so a shuffled replay cannot pass).
    static func entry(_ number: Int, size payloadSize: Int) -> JournalEntry {
        var payload = [UInt8](repeating: UInt8(truncatingIfNeeded: number &* 31 &+ 7), count: payloadSize)
        if payloadSize >= 2 {
            payload[0] = UInt8(truncatingIfNeeded: number >> 8)
            payload[1] = UInt8(truncatingIfNeeded: number)
        }
        return JournalEntry(type: UInt8(3 + number % 200), payload: payload)
    }

    /// Appends `entry` to `journal`.
    static func append(_ entry: JournalEntry, to journal: Journal) throws {
        try journal.append(type: entry.type, payload: entry.payload)
    }

    /// The bytes after applying `pending` to `durable` piece by piece: each write is cut at 512-byte
    /// file sectors, the pieces numbered in order from 0, and piece `i` is kept when `keep(i)`.
    static func survivor(durable: [UInt8], pending: [FaultInjectingFile.Operation], keep: (Int) -> Bool) -> [UInt8] {
        var out = durable
        var piece = 0
        for op in pending {
            guard case .write(let offset, let bytes) = op else {
                FaultInjectingFile.apply(op, to: &out)
                continue
            }
            var start = 0
            while start < bytes.count {
                let at = Int(offset) + start
                let n = min(bytes.count - start, (at / 512 + 1) * 512 - at)
                if keep(piece) {
                    if out.count < at + n { out += [UInt8](repeating: 0, count: at + n - out.count) }
                    out.replaceSubrange(at..<at + n, with: bytes[start..<start + n])
                }
                piece += 1
                start += n
            }
        }
        return out
    }

    /// How many sector pieces `survivor` numbers in `pending`.
    static func pieceCount(_ pending: [FaultInjectingFile.Operation]) -> Int {
        var count = 0
        _ = survivor(durable: [], pending: pending) { _ in
            count += 1
            return false
        }
        return count
    }
}
