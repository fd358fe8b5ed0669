/// A bounded, least-recently-used cache of L2 tables, keyed by the table's file offset.
///
/// Write-through (``Table`` writes every change at once), so evicting is just forgetting.
/// Tables in use are *pinned* and never evicted: a pinned table may be being updated, and dropping
/// it could let a reload from disk race with that update. Only one ``Table`` object exists per
/// offset at any time: a miss inserts a loading placeholder first and other threads wait for it.
/// All state is guarded by `cond`'s mutex.
final class L2Cache: @unchecked Sendable {
    private final class Slot {
        var table: Table?
        var loadError: (any Error)?
        var pins = 0
        var lastUse: UInt64 = 0
    }

    private let cond = ConditionLock()
    private var slots: [UInt64: Slot] = [:]
    private var clock: UInt64 = 0
    /// Most tables kept when unpinned (≥ 1).
    let capacity: Int
    /// How many lookups found their table cached or being loaded.
    private var hits = 0
    /// How many lookups had to read the table from the file.
    private var misses = 0

    /// A cache that keeps at most `capacity` unpinned tables.
    init(capacity: Int) { self.capacity = max(1, capacity) }

    /// Returns the table at `offset`, pinned; loads it with `load` on a miss (without holding the
    /// cache lock, so other tables stay available). Balance with ``unpin(_:)``.
    func pin(offset: UInt64, load: () throws -> Table) throws -> Table {
        var mustLoad = false
        let slot: Slot = cond.withLock {
            clock &+= 1
            if let s = slots[offset] {
                s.pins += 1
                s.lastUse = clock
                hits += 1
                return s
            }
            let s = Slot()
            s.pins = 1
            s.lastUse = clock
            slots[offset] = s
            misses += 1
            mustLoad = true
            return s
        }
        if mustLoad {
            do {
                let table = try load()
                cond.withLock { slot.table = table }
                cond.broadcast()
                return table
            } catch {
                cond.withLock {
                    slot.loadError = error
                    slot.pins -= 1
                    if slots[offset] === slot { slots[offset] = nil }
                }
                cond.broadcast()
                throw error
            }
        }
        return try cond.withLock {
            while slot.table == nil && slot.loadError == nil { cond.wait() }
            if let table = slot.table { return table }
            slot.pins -= 1
            throw slot.loadError ?? QEDError(.io, "L2 table load failed", value: offset)
        }
    }

    /// The table at `offset`, pinned, if it is in the cache and loaded; nil otherwise (nothing is
    /// loaded or waited for). Balance a non-nil result with ``unpin(_:)``.
    func pinIfCached(offset: UInt64) -> Table? {
        cond.withLock {
            guard let s = slots[offset], let table = s.table else { return nil }
            clock &+= 1
            s.pins += 1
            s.lastUse = clock
            hits += 1
            return table
        }
    }

    /// Releases a pin taken by ``pin(offset:load:)`` or ``insert(_:)``, evicting if over capacity.
    func unpin(_ table: Table) {
        cond.withLock {
            if let s = slots[table.fileOffset], s.table === table { s.pins -= 1 }
            evictLocked()
        }
    }

    /// Adds a freshly created table, pinned.
    func insert(_ table: Table) {
        cond.withLock {
            clock &+= 1
            let s = Slot()
            s.table = table
            s.pins = 1
            s.lastUse = clock
            slots[table.fileOffset] = s
        }
    }

    /// Forgets every unpinned table (after a repair rewrote tables behind the cache's back).
    func invalidateAll() {
        cond.withLock { slots = slots.filter { $0.value.pins > 0 } }
    }

    /// Number of tables held (loading placeholders included).
    var count: Int { cond.withLock { slots.count } }

    /// Lookups that found their table (cached or being loaded by another thread) and lookups that
    /// had to load it.
    var statistics: (hits: Int, misses: Int) { cond.withLock { (hits, misses) } }

    /// Whether a loaded table for `offset` is held, without counting as a use (for tests).
    func isCached(offset: UInt64) -> Bool { cond.withLock { slots[offset]?.table != nil } }

    private func evictLocked() {
        while slots.count > capacity {
            var victim: (key: UInt64, use: UInt64)?
            for (key, s) in slots where s.pins == 0 && s.table != nil {
                if s.lastUse < victim?.use ?? .max { victim = (key, s.lastUse) }
            }
            guard let v = victim else { return }
            slots[v.key] = nil
        }
    }
}
