import Dispatch

/// Owns the NEED_CHECK bit's life on a writable image without a backing file.
///
/// - Before the first allocating write of a clean image the bit is set and made durable (header
///   write + sync), so a crash before the next clean point is always followed by a check. QEMU does
///   not sync here; we do, because an unsynced header may be lost while later table writes survive.
/// - Each allocating write is counted in and out. When none is active and the bit is set, a timer
///   fires after `delay` seconds of quiet; its handler syncs the file (every completed allocation's
///   metadata becomes durable) and clears the bit — with the mutex held, so no allocation can start
///   half-way through.
/// - ``stop(clear:)`` (on close) takes the mutex, so it waits for a handler that is writing; every
///   handler that runs after it finds `stopped` and does nothing. Once it returns the timer never
///   touches the file again.
/// All state is guarded by `cond`'s mutex; header writes go through the `setBit` closure (the
/// image's ``HeaderStore/update(trailer:_:)``, which keeps memory unchanged when the write fails).
final class NeedCheckTimer: @unchecked Sendable {
    private let cond = ConditionLock()
    private var active = 0
    private var dirty: Bool
    private var generation: UInt64 = 0
    private var stopped = false
    /// Timers armed and handlers run so far, whether they did anything or not (tests wait for
    /// the two to meet).
    private var timersArmed = 0
    private var handlersRun = 0
    private let delay: Double
    private let readOnly: Bool
    /// Whether allocations must set the bit (no backing file, writable).
    private var managesBit: Bool
    private let setBit: @Sendable (Bool) throws -> Void

    /// `dirty`: the bit as on disk now. `setBit(true/false)` writes the header with the bit
    /// set/cleared (and syncs when setting).
    init(
        dirty: Bool, managesBit: Bool, readOnly: Bool, delay: Double,
        setBit: @escaping @Sendable (Bool) throws -> Void
    ) {
        self.dirty = dirty
        self.readOnly = readOnly
        self.managesBit = managesBit
        self.delay = delay
        self.setBit = setBit
    }

    /// Whether the bit is set (in memory, which equals the disk once a call returns).
    var isDirty: Bool { cond.withLock { dirty } }

    /// How many armed timers have not run their handler yet. Every armed timer's handler runs
    /// (and finds nothing to do if the timer was re-armed or stopped meanwhile) while the image
    /// is alive; tests wait for 0 to know no handler is still to come.
    var pendingHandlers: Int { cond.withLock { timersArmed - handlersRun } }

    /// Whether ``stop(clear:)`` was called (then no handler writes any more).
    var isStopped: Bool { cond.withLock { stopped } }

    /// Call before an allocating write touches the file; sets the bit first if needed.
    func beginAllocation() throws {
        try cond.withLock {
            generation &+= 1  // cancels a pending timer
            if managesBit && !dirty {
                try setBit(true)
                dirty = true
            }
            active += 1
        }
    }

    /// Call when an allocating write is done (successfully or not).
    func endAllocation() {
        cond.withLock {
            active -= 1
            if active == 0 && dirty && managesBit { armLocked() }
        }
    }

    /// Arms the timer if the bit is set (after open found it set, or after a repair kept it).
    func armIfDirty() {
        cond.withLock { if dirty && managesBit && active == 0 { armLocked() } }
    }

    private func armLocked() {
        generation &+= 1
        timersArmed += 1
        let mine = generation
        DispatchQueue.global().asyncAfter(deadline: .now() + delay) { [weak self] in
            self?.fire(mine)
        }
    }

    private func fire(_ expected: UInt64) {
        cond.withLock {
            handlersRun += 1
            guard !stopped, generation == expected, active == 0, dirty else { return }
            do {
                try setBit(false)
                dirty = false
            } catch {
                // Leave the bit set: the next open checks the image. Nothing is lost. (A failed
                // sync or header write has marked the image failed; it is not retried.)
            }
        }
    }

    /// Stops the timer for good, then clears the bit if `clear` (clean close). The timer is
    /// stopped even when clearing throws; no handler writes after this returns.
    func stop(clear: Bool) throws {
        try cond.withLock {
            stopped = true
            generation &+= 1
            if clear && dirty {
                try setBit(false)
                dirty = false
            }
        }
    }

    /// Whether allocations must set the bit from now on (a backing file was added or removed).
    func setManagesBit(_ value: Bool) {
        cond.withLock { managesBit = value && !readOnly }
    }

    /// Clears the bit after a repairing check left no corruption.
    func clearAfterCheck() throws {
        try cond.withLock {
            guard dirty else { return }
            try setBit(false)
            dirty = false
        }
    }
}
