import TestSupport
import Testing

@testable import QED

/// The checker's fast L2 scan (runs marked word-wise) must count exactly like the plain
/// per-entry rules QEMU uses.
@Suite("Checker L2 scan")
struct CheckerScanTests {
    /// The per-entry reference: QEMU's counting, one bit at a time.
    static func reference(
        _ entries: [UInt64], used: inout [Bool], cs: UInt64, lowest: UInt64, end: UInt64,
        clear: Bool
    ) -> (Checker.L2Tally, [UInt64]) {
        var tally = Checker.L2Tally()
        var out = entries
        var previous: UInt64 = 0
        for (j, e) in entries.enumerated() where e > 1 {
            tally.allocated += 1
            if previous != 0 && previous + cs != e { tally.fragmented += 1 }
            previous = e
            guard e % cs == 0, e >= lowest, e < end else {
                if clear { out[j] = 0 }
                tally.invalid += 1
                continue
            }
            let c = Int(e / cs)
            if used[c] { tally.duplicates += 1 }
            used[c] = true
        }
        return (tally, out)
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func fastScanMatchesReference(seed: UInt64) {
        var rng = ModelRNG(seed: seed)
        let cs: UInt64 = 4096
        let clusters = 700
        let lowest = cs
        let end = UInt64(clusters) * cs
        for round in 0..<50 {
            var entries: [UInt64] = []
            while entries.count < 512 {
                switch rng.next() % 6 {
                case 0: entries.append(contentsOf: repeatElement(0, count: Int(rng.next() % 5)))
                case 1: entries.append(1)
                case 2: entries.append(rng.next() % (end + 8 * cs))  // anything, often invalid
                default:  // a contiguous run, sometimes running past the end of the file
                    let start = (rng.next() % UInt64(clusters + 4)) * cs
                    let length = 1 + rng.next() % 90
                    for k in 0..<length { entries.append(start + k * cs) }
                }
            }
            entries = Array(entries.prefix(512))
            let clear = round % 2 == 0
            var refUsed = [Bool](repeating: false, count: clusters)
            // Pre-mark some clusters, as earlier tables would have.
            let premarked = (0..<40).map { _ in Int(rng.next() % UInt64(clusters)) }
            for c in premarked { refUsed[c] = true }
            let (expected, expectedEntries) = Self.reference(
                entries, used: &refUsed, cs: cs, lowest: lowest,
                end: end, clear: clear)

            let words = (clusters + 63) / 64
            let used = UnsafeMutablePointer<UInt64>.allocate(capacity: words)
            defer { used.deallocate() }
            used.initialize(repeating: 0, count: words)
            for c in premarked { used[c / 64] |= 1 << UInt64(c % 64) }
            let buffer = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: entries.count)
            defer { buffer.deallocate() }
            for (i, e) in entries.enumerated() { buffer[i] = e.littleEndian }
            let got = Checker.scanL2(
                buffer, used: used, clusterSize: cs, lowest: lowest, end: end,
                clusterBits: 12, clearInvalid: clear)

            #expect(got.allocated == expected.allocated, "seed \(seed) round \(round)")
            #expect(got.fragmented == expected.fragmented, "seed \(seed) round \(round)")
            #expect(got.invalid == expected.invalid, "seed \(seed) round \(round)")
            #expect(got.duplicates == expected.duplicates, "seed \(seed) round \(round)")
            #expect(buffer.map { UInt64(littleEndian: $0) } == expectedEntries, "seed \(seed) round \(round)")
            let bits = (0..<clusters).map { used[$0 / 64] & (1 << UInt64($0 % 64)) != 0 }
            #expect(bits == refUsed, "seed \(seed) round \(round)")
        }
    }
}
