/// Shares `fdatasync` calls between concurrent callers (group commit), and never reports success
/// once one has failed.
///
/// A caller needs a sync that *starts* after its writes completed. If a sync is already running
/// it may have started too early, so the caller waits for it and then for the next one, which a
/// single waiter starts on behalf of everyone waiting. Many concurrent flushes cost two syncs, not
/// one each.
///
/// Syncs are numbered (generations) and run one at a time, so they complete in order. When
/// generation `g` fails, the callers it covered (target `g`) get its error, and so does every
/// caller with a later target — including those that arrive later, which get ``StickyFailure``'s
/// error without a sync being issued: after a failed `fdatasync` the kernel may have dropped the
/// pages it could not write, so no later sync can vouch for them. Callers whose target came before
/// `g` were covered by an earlier, successful sync and succeed. Failures recorded by others in the
/// shared ``StickyFailure`` (a failed metadata write) make every later call throw as well.
///
/// `running`, `started`, `completed`, `failedGeneration` and `waiting` are guarded by `cond`'s
/// mutex.
final class FlushCoordinator: @unchecked Sendable {
    private let cond = ConditionLock()
    private var running = false
    private var started: UInt64 = 0
    private var completed: UInt64 = 0
    /// The generation of the first failed sync and its error; never cleared.
    private var failedGeneration: (generation: UInt64, error: any Error)?
    /// Callers inside ``sync(_:)`` waiting for a sync someone else runs (for tests).
    private var waiting = 0
    /// Where a failed sync is recorded, and where failures recorded elsewhere are seen.
    let failure: StickyFailure

    /// A coordinator that records failed syncs in `failure` (shared with the image).
    init(failure: StickyFailure) { self.failure = failure }

    /// A coordinator with a failure latch of its own (tests).
    convenience init(path: String = "file") { self.init(failure: StickyFailure(path: path)) }

    /// Returns when every write completed before this call is durable. Throws the sync error when
    /// the sync that covered this call failed, and ``StickyFailure/failedError`` when any earlier
    /// failure was recorded; then it issues no sync.
    func sync(_ file: any BlockFile) throws {
        try failure.check()
        try cond.withLock {
            let target = started + 1
            while true {
                if let failed = failedGeneration, failed.generation <= target {
                    throw failed.generation == target ? failed.error : (failure.failedError ?? failed.error)
                }
                if completed >= target { return }
                if running {
                    waiting += 1
                    cond.wait()
                    waiting -= 1
                    continue
                }
                running = true
                started += 1
                let generation = started
                var error: (any Error)?
                cond.unlockedDuring {
                    do { try file.sync() } catch let e { error = e }
                }
                running = false
                completed = generation
                if let error, failedGeneration == nil {
                    failedGeneration = (generation, error)
                    failure.record(error)
                }
                cond.broadcast()
            }
        }
    }

    /// How many callers are waiting for a sync another caller runs (for tests).
    var waiterCount: Int { cond.withLock { waiting } }
}
