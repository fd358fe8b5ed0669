import Foundation
import Testing

@testable import QED

/// ``InflightClusters``: overlapping ranges exclude each other, disjoint ones do not, releases
/// wake the waiters.
@Suite("In-flight clusters")
struct InflightClustersTests {
    @Test("an overlapping range waits until the holder releases")
    func overlapWaits() throws {
        let inflight = InflightClusters()
        inflight.acquire(0..<4)
        let second = BackgroundThread { () -> Int in
            inflight.acquire(3..<6)  // shares cluster 3
            return inflight.count
        }
        #expect(waitUntil { inflight.waiterCount == 1 }, "the overlapping acquire must wait")
        #expect(!second.isFinished && inflight.count == 1)
        inflight.release(0..<4)
        let held = try #require(second.join(), "the waiter was not woken").get()
        #expect(held == 1, "only the second range is held once it got in")
        inflight.release(3..<6)
        #expect(inflight.count == 0 && inflight.waiterCount == 0)
    }

    @Test("disjoint ranges do not wait for each other")
    func disjointDoesNotWait() throws {
        let inflight = InflightClusters()
        inflight.acquire(0..<4)
        inflight.acquire(8..<9)
        // Adjacent but not overlapping; run in the background so a wrong implementation fails
        // the test instead of hanging it.
        let other = BackgroundThread { () -> Int in
            inflight.acquire(4..<8)
            return inflight.count
        }
        let held = try #require(other.join(), "a disjoint acquire blocked").get()
        #expect(held == 3)
        #expect(inflight.waiterCount == 0)
        for r in [0..<4, 4..<8, 8..<9] as [Range<UInt64>] { inflight.release(r) }
        #expect(inflight.count == 0)
    }

    @Test("one release wakes every waiter whose range became free")
    func releaseWakesAllWaiters() throws {
        let inflight = InflightClusters()
        inflight.acquire(0..<16)
        let wanted: [Range<UInt64>] = [0..<1, 5..<7, 15..<16, 8..<12]
        let threads = wanted.map { range in
            BackgroundThread { () -> Void in
                inflight.acquire(range)
            }
        }
        #expect(waitUntil { inflight.waiterCount == wanted.count })
        inflight.release(0..<16)
        for t in threads { #expect(t.join() != nil, "a waiter was never woken") }
        #expect(inflight.count == wanted.count && inflight.waiterCount == 0)
        // A range overlapping one of them now waits for that one only.
        let late = BackgroundThread { () -> Void in inflight.acquire(6..<9) }
        #expect(waitUntil { inflight.waiterCount == 1 })
        inflight.release(5..<7)
        #expect(waitUntil { inflight.waiterCount == 1 }, "8..<12 is still held")
        #expect(!late.isFinished)
        inflight.release(8..<12)
        #expect(late.join() != nil)
        #expect(inflight.count == 3)
    }
}
