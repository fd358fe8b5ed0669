import TestSupport
import Testing

@testable import QED

/// The lock-free COW bitmap against a plain array of flags: runs, counts, what reaches the file
/// (a bitmap loaded again from it), growth, and bits past the last cluster.
@Suite("COW bitmap")
struct COWBitmapTests {
    @Test(
        "random sets and clears: runs, count and the file agree with a model", arguments: [1, 63, 64, 65, 4097, 9000])
    func randomAgainstModel(clusters: Int) throws {
        var rng = SplitMix64(seed: 0xB17 + UInt64(clusters))
        let file = MemoryFile(path: "bitmap")
        let base: UInt64 = 4096
        let bitmap = try COWBitmap(file: file, base: base, clusters: UInt64(clusters))
        var model = [Bool](repeating: false, count: clusters)
        for _ in 0..<300 {
            let a = Int(rng.next() % UInt64(clusters))
            let b = min(clusters, a + 1 + Int(rng.next() % UInt64(min(clusters, 5000))))
            let value = rng.chance(0.6)
            if value { try bitmap.set(UInt64(a)..<UInt64(b)) } else { try bitmap.clear(UInt64(a)..<UInt64(b)) }
            for i in a..<b { model[i] = value }
            // A few runs from random places with random limits.
            for _ in 0..<4 {
                let c = Int(rng.next() % UInt64(clusters))
                let limit = 1 + Int(rng.next() % UInt64(clusters - c))
                var n = 1
                while n < limit && model[c + n] == model[c] { n += 1 }
                let got = bitmap.run(from: UInt64(c), limit: UInt64(limit))
                #expect(got.set == model[c] && got.count == UInt64(n), "run(\(c), \(limit)) = \(got), model \(n)")
            }
        }
        #expect(bitmap.setCount == UInt64(model.filter { $0 }.count))
        for i in 0..<clusters where bitmap.isSet(UInt64(i)) != model[i] {
            Issue.record("cluster \(i): \(bitmap.isSet(UInt64(i))) vs \(model[i])")
            break
        }
        // What the file holds loads back the same, and holds no bit past the last cluster.
        let again = try COWBitmap(file: file, base: base, clusters: UInt64(clusters))
        #expect((0..<clusters).allSatisfy { again.isSet(UInt64($0)) == model[$0] })
        let bytes = try file.readBytes(count: (clusters + 7) / 8, at: base)
        if clusters % 8 != 0, let last = bytes.last {
            #expect(last >> (clusters % 8) == 0, "bits past the last cluster are written as 0")
        }
    }

    @Test("growing keeps the bits, new ones start clear; bits past the end on disk are dropped at load")
    func growAndTail() throws {
        let file = MemoryFile(path: "bitmap")
        // 10 clusters on disk with bits 0...15 set: 10...15 are past the end.
        try file.writeBytes([0xFF, 0xFF], at: 512)
        let bitmap = try COWBitmap(file: file, base: 512, clusters: 10)
        #expect(bitmap.setCount == 10)
        #expect(bitmap.run(from: 0, limit: 10) == (true, 10))
        bitmap.grow(to: 200)
        #expect(bitmap.clusters == 200 && bitmap.setCount == 10)
        #expect(bitmap.run(from: 10, limit: 190) == (false, 190))
        try bitmap.set(150..<200)
        #expect(bitmap.run(from: 10, limit: 190) == (false, 140))
        #expect(bitmap.run(from: 150, limit: 50) == (true, 50))
        #expect(bitmap.setCount == 60)
    }

    /// Published bits take effect in memory at once and reach the file only through
    /// writePending, after its data sync; a failed sync leaves them pending (never written).
    @Test("published bits are pending until writePending, which writes them after the data sync")
    func publishedBitsWaitForTheDataSync() throws {
        struct SyncFailed: Error {}
        let file = MemoryFile(path: "bitmap")
        let base: UInt64 = 4096
        let clusters: UInt64 = 10_000
        let bitmap = try COWBitmap(file: file, base: base, clusters: clusters)
        try bitmap.set(5..<7)
        let before = file.contents
        for range in [100..<101, 4090..<4200, 9990..<10_000] as [Range<UInt64>] { bitmap.publish(range) }
        #expect(bitmap.isSet(100) && bitmap.isSet(4150) && bitmap.isSet(9999) && !bitmap.isSet(101))
        #expect(bitmap.setCount == 2 + 1 + 110 + 10)
        #expect(file.contents == before, "publishing writes nothing")
        #expect(throws: SyncFailed.self) { try bitmap.writePending { throw SyncFailed() } }
        #expect(file.contents == before, "nothing written when the data sync fails")
        #expect(bitmap.hasPending)
        // A maintenance write of a sector holding pending bits leaves them out of the file.
        try bitmap.set(4000..<4001)
        let loaded = try COWBitmap(file: file, base: base, clusters: clusters)
        #expect(loaded.isSet(4000) && loaded.isSet(5) && !loaded.isSet(4090) && !loaded.isSet(100))
        var synced = false
        try bitmap.writePending {
            // The data sync runs before any pending bit is written.
            let during = try COWBitmap(file: file, base: base, clusters: clusters)
            #expect(!during.isSet(100) && !during.isSet(4150) && !during.isSet(9999))
            synced = true
        }
        #expect(synced && !bitmap.hasPending)
        let after = try COWBitmap(file: file, base: base, clusters: clusters)
        for c: UInt64 in [5, 6, 100, 4000, 4090, 4199, 9990, 9999] { #expect(after.isSet(c), "cluster \(c)") }
        #expect(after.setCount == bitmap.setCount)
    }
}
