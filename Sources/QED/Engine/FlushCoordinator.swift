/// Shares `fdatasync` calls between concurrent callers (group commit).
///
/// A caller needs a sync that *starts* after its writes completed. If a sync is already running
/// it may have started too early, so the caller waits for it and then for the next one, which a
/// single waiter starts on behalf of everyone waiting. Many concurrent flushes cost two syncs, not
/// one each. State is guarded by `cond`'s mutex.
final class FlushCoordinator: @unchecked Sendable {
    private let cond = ConditionLock()
    private var running = false
    private var started: UInt64 = 0
    private var completed: UInt64 = 0
    private var failures: [UInt64: any Error] = [:]

    /// Returns when every write completed before this call is durable, or throws the sync error.
    func sync(_ file: any BlockFile) throws {
        try cond.withLock {
            let target = started + 1
            while completed < target {
                if running {
                    cond.wait()
                    continue
                }
                running = true
                started += 1
                let generation = started
                var failure: (any Error)?
                cond.unlockedDuring {
                    do { try file.sync() } catch { failure = error }
                }
                running = false
                completed = generation
                if let failure { failures[generation] = failure }
                if failures.count > 16 { failures.removeAll() }
                cond.broadcast()
            }
            if let failure = failures[target] { throw failure }
        }
    }
}
