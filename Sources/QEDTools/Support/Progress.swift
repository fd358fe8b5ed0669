import Synchronization

/// Progress reports: called with the fraction done, 0...1 (from any thread, serialised).
public typealias ProgressHandler = @Sendable (Double) -> Void

/// Counts done bytes and reports the fraction to a ``ProgressHandler``; thread-safe.
final class ProgressCounter: Sendable {
    private let done = Mutex<UInt64>(0)
    let total: UInt64
    let handler: ProgressHandler?

    init(total: UInt64, handler: ProgressHandler?) {
        self.total = total
        self.handler = handler
        handler?(0)
    }

    func add(_ bytes: UInt64) {
        guard let handler else { return }
        done.withLock { d in
            d += bytes
            handler(total == 0 ? 1 : min(1, Double(d) / Double(total)))
        }
    }

    func finish() { handler?(1) }
}
