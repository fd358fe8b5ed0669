import Foundation

/// A body run on a thread of its own, with its result collected by ``join(seconds:)``. For tests
/// that need a call blocked in the background while the test thread watches it.
final class BackgroundThread<T: Sendable>: @unchecked Sendable {
    private let done = DispatchGroup()
    /// The body's result once it returned; guarded by `lock`.
    private var outcome: Result<T, any Error>?
    private let lock = NSLock()

    /// Starts `body` on a new thread at once.
    init(_ body: @escaping @Sendable () throws -> T) {
        done.enter()
        let thread = Thread { [self] in
            let result = Result { try body() }
            lock.lock()
            outcome = result
            lock.unlock()
            done.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Waits up to `seconds` for the body to return; nil if it has not (the test should then
    /// fail: the bound is generous, not a timing assertion).
    func join(seconds: Double = 30) -> Result<T, any Error>? {
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        lock.lock()
        defer { lock.unlock() }
        return outcome
    }

    /// Whether the body has returned.
    var isFinished: Bool {
        lock.lock()
        defer { lock.unlock() }
        return outcome != nil
    }
}

/// Polls `condition` every millisecond until it holds or `seconds` pass; returns whether it held.
/// The bound is generous and only ends a test that would otherwise hang.
func waitUntil(seconds: Double = 30, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        if Date() >= deadline { return false }
        usleep(1_000)
    }
    return true
}
