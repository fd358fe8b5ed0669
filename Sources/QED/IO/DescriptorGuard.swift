import Synchronization
import SystemPackage

/// Keeps a file descriptor's number from being used once it is closed, even by a call that races
/// with the close — after `close(2)` the kernel may hand the same number to another file, and a
/// stale `pwrite` would land there.
///
/// One atomic word holds the number of calls in flight (low bits) and two flags: `closing` (set by
/// ``close()``; calls that enter afterwards are refused) and `released` (the descriptor has been
/// closed). A call enters with one atomic add and leaves with one atomic subtract — no mutex on the
/// I/O path. The descriptor is closed by whoever comes last: ``close()`` itself when no call is in
/// flight, else the last call in flight as it leaves. Guarantees:
/// - no system call starts on the descriptor after ``close()`` began (late calls are refused);
/// - the descriptor is never closed while a call admitted before ``close()`` is still using it;
/// - it is closed exactly once.
/// When calls are in flight, ``close()`` returns before the descriptor is actually closed (the
/// last of them closes it); callers that close while others still do I/O get no other promise.
final class DescriptorGuard: Sendable {
    private static let closing = 1 << 62
    private static let released = 1 << 61
    /// In-flight count plus the two flags; the only state.
    private let state = Atomic<Int>(0)
    /// The guarded descriptor (a value; closed once, by ``releaseIfLast()``).
    let descriptor: FileDescriptor

    /// Guards the open descriptor `descriptor`, which it now owns.
    init(_ descriptor: FileDescriptor) { self.descriptor = descriptor }

    /// Runs `body` with the descriptor number unless ``close()`` has begun; then throws `refusal()`
    /// without calling `body`.
    @inline(__always)
    func use<T>(orThrow refusal: () -> any Error, _ body: (Int32) throws -> T) throws -> T {
        guard enter() else { throw refusal() }
        defer { leave() }
        return try body(descriptor.rawValue)
    }

    /// Whether ``close()`` has begun.
    var isClosed: Bool { state.load(ordering: .acquiring) & Self.closing != 0 }

    /// Admits a call: false (and nothing to balance) when closing has begun.
    @inline(__always)
    private func enter() -> Bool {
        let now = state.wrappingAdd(1, ordering: .acquiring).newValue
        if now & Self.closing != 0 {
            leave()
            return false
        }
        return true
    }

    @inline(__always)
    private func leave() {
        let now = state.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue
        if now == Self.closing { releaseIfLast() }
    }

    /// Refuses every later call and closes the descriptor once no admitted call is using it.
    /// Idempotent; returns whether this call was the first.
    @discardableResult
    func close() -> Bool {
        let before = state.bitwiseOr(Self.closing, ordering: .acquiringAndReleasing).oldValue
        guard before & Self.closing == 0 else { return false }
        if before == 0 { releaseIfLast() }
        return true
    }

    /// Closes the descriptor if closing has begun, nothing is in flight and nobody closed it yet.
    /// The compare-exchange lets exactly one of the racing candidates do it.
    private func releaseIfLast() {
        let won = state.compareExchange(
            expected: Self.closing, desired: Self.closing | Self.released,
            ordering: .acquiringAndReleasing
        ).exchanged
        if won { try? descriptor.close() }
    }
}
