import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Keeps an image's *exclusive* operations apart from its *requests*, QEMU's "drain": an exclusive
/// operation (``Image/check(repair:)``, ``Image/makeEmpty()``, ``Image/resize(to:)``,
/// ``Image/setBacking(name:format:open:)``, ``Image/close()``) waits until no request (read,
/// write, zero write, discard, extents, flush) is running, and new requests wait until it is done.
/// Those operations store table entries with the requests' lock-free readers absent, truncate the
/// file, swap the backing disk or close the descriptor, so they must never overlap a request.
///
/// Requests pass with one atomic compare-and-exchange on entry and one atomic subtraction on exit
/// while no exclusive operation runs; they never wait for an exclusive operation that is only
/// *waiting*, so a request nested in another (``Image/read(at:count:)`` calls
/// ``Image/read(into:at:)``) can never deadlock. The price is that a steady stream of overlapping
/// requests can postpone an exclusive operation; the callers that run them (qed-img's verbs, and
/// qed-nbd after its requests have drained) do not overlap them with requests anyway.
///
/// The thread running an exclusive operation may itself make requests and nested exclusive calls
/// (they pass straight through).
///
/// `@unchecked Sendable`: `owner`, `depth` and `waitingRequests` are guarded by `lock`; `state` is atomic.
final class OperationGate: @unchecked Sendable {
    /// Bits 0…61: requests running. ``waitingBit``: an exclusive operation waits for them to end.
    /// ``runningBit``: an exclusive operation runs (then no other request enters).
    private let state = Atomic<UInt64>(0)
    private static let waitingBit: UInt64 = 1 << 62
    private static let runningBit: UInt64 = 1 << 63
    private static let countMask: UInt64 = (1 << 62) - 1

    /// The mutex of every wait here, and the one that serialises exclusive operations. Rank 0 of
    /// the engine's lock order: it is never taken while another engine lock is held, and it is not
    /// held while the operation runs (the state bits are).
    private let lock = ConditionLock()
    /// The thread running the exclusive operation, or nil (guarded by `lock`).
    private var owner: pthread_t?
    /// How many exclusive calls the owner has nested (guarded by `lock`).
    private var depth = 0
    /// Requests waiting for an exclusive operation to end (guarded by `lock`; for tests).
    private var waitingRequests = 0

    /// Runs `body` as a request: waits while an exclusive operation runs.
    @inline(__always)
    func request<T>(_ body: () throws -> T) rethrows -> T {
        enter()
        defer { leave() }
        return try body()
    }

    /// Runs `body` as a request if that needs no waiting; nil when an exclusive operation runs
    /// (for event loops, which must not block).
    @inline(__always)
    func requestIfFree<T>(_ body: () throws -> T) rethrows -> T? {
        guard tryEnter() else { return nil }
        defer { leave() }
        return try body()
    }

    /// Runs `body` as an exclusive operation: waits until no request runs and no other exclusive
    /// operation does, and keeps new requests out until it returns.
    func exclusive<T>(_ body: () throws -> T) rethrows -> T {
        beginExclusive()
        defer { endExclusive() }
        return try body()
    }

    /// Requests running now (for tests and diagnostics).
    var requestCount: UInt64 { state.load(ordering: .acquiring) & Self.countMask }
    /// Whether an exclusive operation is waiting for requests to end (for tests).
    var exclusiveWaiting: Bool { state.load(ordering: .acquiring) & Self.waitingBit != 0 }
    /// Requests waiting for an exclusive operation to end (for tests).
    var requestsWaiting: Int { lock.withLock { waitingRequests } }

    // MARK: Requests

    @inline(__always)
    private func tryEnter() -> Bool {
        var s = state.load(ordering: .relaxed)
        while s & Self.runningBit == 0 {
            let (exchanged, original) = state.compareExchange(expected: s, desired: s + 1, ordering: .acquiring)
            if exchanged { return true }
            s = original
        }
        return false
    }

    @inline(__always)
    private func enter() {
        if !tryEnter() { enterSlowly() }
    }

    /// An exclusive operation runs: pass if this thread runs it, else wait until it ends.
    private func enterSlowly() {
        lock.withLock {
            if let owner, pthread_equal(owner, pthread_self()) != 0 {
                state.wrappingAdd(1, ordering: .acquiring)
                return
            }
            // Entering under the lock: an exclusive operation only starts under it, so it cannot
            // start between this check and the increment.
            waitingRequests += 1
            while state.load(ordering: .acquiring) & Self.runningBit != 0 { lock.wait() }
            waitingRequests -= 1
            state.wrappingAdd(1, ordering: .acquiring)
        }
    }

    @inline(__always)
    private func leave() {
        let now = state.wrappingSubtract(1, ordering: .releasing).newValue
        if now == Self.waitingBit {
            // The last request an exclusive operation waited for. Broadcasting under the lock
            // cannot be lost: the waiter holds the lock from its check until it sleeps.
            lock.withLock { lock.broadcast() }
        }
    }

    // MARK: Exclusive operations

    private func beginExclusive() {
        lock.withLock {
            if let owner, pthread_equal(owner, pthread_self()) != 0 {
                depth += 1
                return
            }
            // One exclusive operation at a time: wait for another to finish (or to stop waiting).
            while state.load(ordering: .acquiring) & (Self.waitingBit | Self.runningBit) != 0 { lock.wait() }
            state.bitwiseOr(Self.waitingBit, ordering: .acquiringAndReleasing)
            // Then for the running requests to end (the last one broadcasts).
            while !state.compareExchange(
                expected: Self.waitingBit, desired: Self.runningBit,
                ordering: .acquiringAndReleasing
            ).exchanged {
                lock.wait()
            }
            owner = pthread_self()
            depth = 1
        }
    }

    private func endExclusive() {
        lock.withLock {
            depth -= 1
            guard depth == 0 else { return }
            owner = nil
            // Requests the owner made itself have ended (they are synchronous), so only the bit is left.
            state.bitwiseAnd(~Self.runningBit, ordering: .releasing)
            lock.broadcast()
        }
    }
}
