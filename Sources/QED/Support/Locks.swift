#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A mutex paired with a condition variable, for the few places where a thread must wait for
/// another to finish something (an allocation of the same clusters, an L2 table being loaded, a
/// flush in flight). Plain `Mutex` from `Synchronization` is used where nobody waits.
///
/// `@unchecked Sendable`: the pthread objects live in heap memory owned by this instance and are
/// only touched through pthread calls, which are thread-safe by definition.
package final class ConditionLock: @unchecked Sendable {
    fileprivate let mutex: UnsafeMutablePointer<pthread_mutex_t>
    /// The condition ``wait()`` and ``broadcast()`` use; further ones can share the mutex
    /// (``wait(on:)``).
    private let condition = Condition()

    package init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the mutex held.
    package func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }

    /// Takes the mutex; balance with ``unlock()`` (for hand-over-hand loops `withLock` cannot express).
    package func lock() { pthread_mutex_lock(mutex) }
    /// Releases the mutex taken with ``lock()``.
    package func unlock() { pthread_mutex_unlock(mutex) }

    /// Waits for a broadcast. Only call from inside `withLock`.
    package func wait() { wait(on: condition) }

    /// Wakes every waiter. Call with or without the mutex held.
    package func broadcast() { condition.broadcast() }

    /// Runs `body` with the mutex released. Only call from inside `withLock`.
    func unlockedDuring(_ body: () -> Void) {
        unlock()
        body()
        lock()
    }
}

/// A further condition variable used with a ``ConditionLock``'s mutex, so that waiters for
/// different events can be woken apart (one `signal` per event instead of waking everyone).
///
/// `@unchecked Sendable`: like ``ConditionLock``, it owns a heap-allocated pthread object that is
/// only touched through pthread calls.
package final class Condition: @unchecked Sendable {
    fileprivate let cond: UnsafeMutablePointer<pthread_cond_t>

    package init() {
        cond = .allocate(capacity: 1)
        cond.initialize(to: pthread_cond_t())
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        cond.deallocate()
    }

    /// Wakes one waiter.
    package func signal() { pthread_cond_signal(cond) }
    /// Wakes every waiter.
    package func broadcast() { pthread_cond_broadcast(cond) }
}

extension ConditionLock {
    /// Waits for `condition` to be signalled. Only call with this lock's mutex held.
    package func wait(on condition: Condition) {
        pthread_cond_wait(condition.cond, mutex)
    }
}
