import Foundation
import Testing

@testable import QED

/// ``L2Cache``: one table object per offset, placeholder load failures, pinning and LRU eviction.
@Suite("L2 cache")
struct L2CacheTests {
    static func table(_ offset: UInt64) throws -> Table { try Table(fileOffset: offset, count: 8) }

    /// Pins and unpins the table at `offset` (loading it on a miss); returns whether it loaded.
    @discardableResult
    static func use(_ cache: L2Cache, _ offset: UInt64) throws -> Bool {
        var loaded = false
        let t = try cache.pin(offset: offset) {
            loaded = true
            return try table(offset)
        }
        cache.unpin(t)
        return loaded
    }

    @Test("a failed load removes its placeholder; waiters get the error; a later load succeeds")
    func placeholderLoadFailure() throws {
        let cache = L2Cache(capacity: 4)
        let gate = DispatchSemaphore(value: 0)
        let loading = AtomicFlag()
        let secondLoaded = AtomicFlag()
        let first = BackgroundThread { () throws -> Table in
            try cache.pin(offset: 4096) {
                _ = loading.setOnce()
                _ = gate.wait(timeout: .now() + 60)
                throw QEDError(.io, "injected load failure", value: 4096, errno: 5)
            }
        }
        #expect(waitUntil { loading.isSet })
        let second = BackgroundThread { () throws -> Table in
            try cache.pin(offset: 4096) {
                _ = secondLoaded.setOnce()
                return try Self.table(4096)
            }
        }
        // The second lookup found the placeholder (a hit) and waits on it instead of loading.
        #expect(waitUntil { cache.statistics.hits == 1 })
        #expect(cache.count == 1)
        gate.signal()
        for thread in [first, second] {
            let result = try #require(thread.join())
            let error = try #require(expectQEDError(.io) { _ = try result.get() })
            #expect(error.message == "injected load failure")
        }
        #expect(!secondLoaded.isSet, "a waiter must not load a second copy")
        #expect(cache.count == 0, "the failed placeholder must be gone")
        #expect(try Self.use(cache, 4096), "the next lookup loads afresh")
        #expect(cache.isCached(offset: 4096))
        #expect(cache.statistics.misses == 2)
    }

    @Test("pinned tables are never evicted, even far over capacity")
    func pinnedNeverEvicted() throws {
        let cache = L2Cache(capacity: 2)
        let tables = try (1...5).map { try Self.table(UInt64($0) << 16) }
        for t in tables { cache.insert(t) }  // inserted pinned
        #expect(cache.count == 5)
        // Lookups of pinned tables find the very same objects.
        for t in tables {
            let found = try cache.pin(offset: t.fileOffset) {
                Issue.record("reloaded a pinned table")
                return t
            }
            #expect(found === t)
            cache.unpin(found)
        }
        #expect(cache.count == 5)
        // Unpinning lets exactly the unpinned ones go while over capacity.
        cache.unpin(tables[0])
        #expect(!cache.isCached(offset: tables[0].fileOffset))
        #expect(cache.count == 4)
        cache.unpin(tables[3])
        #expect(!cache.isCached(offset: tables[3].fileOffset))
        for i in [1, 2, 4] { #expect(cache.isCached(offset: tables[i].fileOffset)) }
        cache.unpin(tables[1])  // still over capacity (3 > 2): it goes too
        #expect(!cache.isCached(offset: tables[1].fileOffset))
        // At capacity nothing more is evicted.
        cache.unpin(tables[2])
        cache.unpin(tables[4])
        #expect(cache.count == 2)
        #expect(cache.isCached(offset: tables[2].fileOffset) && cache.isCached(offset: tables[4].fileOffset))
    }

    @Test("eviction takes the least recently used table")
    func lruOrder() throws {
        let cache = L2Cache(capacity: 3)
        let (a, b, c, d, e): (UInt64, UInt64, UInt64, UInt64, UInt64) = (1 << 16, 2 << 16, 3 << 16, 4 << 16, 5 << 16)
        for offset in [a, b, c] { #expect(try Self.use(cache, offset)) }
        #expect(try !Self.use(cache, a), "a is cached")  // order of use now: b, c, a
        try Self.use(cache, d)  // evicts b
        #expect(!cache.isCached(offset: b))
        #expect(cache.isCached(offset: a) && cache.isCached(offset: c) && cache.isCached(offset: d))
        #expect(try !Self.use(cache, c))  // order: a, d, c
        try Self.use(cache, e)  // evicts a
        #expect(!cache.isCached(offset: a))
        #expect(cache.isCached(offset: c) && cache.isCached(offset: d) && cache.isCached(offset: e))
        #expect(cache.count == 3)
        // pinIfCached counts as a use too.
        let pinned = try #require(cache.pinIfCached(offset: d))
        cache.unpin(pinned)  // order: c, e, d
        #expect(try Self.use(cache, b))  // evicts c
        #expect(!cache.isCached(offset: c) && cache.isCached(offset: d) && cache.isCached(offset: e))
    }
}
