import Synchronization

/// The engine's use of the metadata journal (docs/journal.md §2): opens a period with a CHECKPOINT
/// record, names each L1 index before the period first changes its L1 entry or L2 table, and
/// recycles the log at checkpoints.
///
/// Locking: `state` (a `Mutex`, rank 3 in docs/design.md) guards the mode, the period and the set
/// of L1 indices whose records are durable. It is held across the journal's append, write-out and
/// the sync that makes a record durable (``name(_:durable:)``), so a writer that finds an index
/// named knows its record is durable; inside it the journal's own `Journal.state` (rank 4) and the
/// `FlushCoordinator` (rank 4) are taken one after the other. Callers hold at most the cluster
/// claim (1), `NeedCheckTimer.cond` (2) or `Image.tableCreation` (2); never `HeaderStore.value`.
final class JournalRecorder: Sendable {
    enum Mode: Equatable {
        /// No journal (none reserved, the bit clear, or turned off): records nothing.
        case off
        /// Opened dirty and not recovered yet: the log from before the crash is kept for recovery;
        /// an allocation meanwhile appends OVERFLOW (recovery must then run the full check).
        case awaitingRecovery
        /// Recording: the log is empty between periods and describes the current period.
        case ready
    }

    private struct State {
        var mode: Mode = .off
        var journal: Journal?
        /// The log found at open (kept for recovery while ``Mode/awaitingRecovery``).
        var scan: JournalScan?
        /// Whether a CHECKPOINT opened a period that no checkpoint has closed yet.
        var periodOpen = false
        /// L1 indices whose TOUCHED record is durable in this period.
        var named: Set<UInt32> = []
        /// TOUCHED records appended in this period.
        var touched = 0
        /// Whether OVERFLOW was recorded (nothing more is named until the next checkpoint).
        var overflowed = false
        /// Whether a repairing check started on the image waiting for recovery.
        var repairing = false
    }

    private let state = Mutex(State())
    private let file: any BlockFile
    private let flusher: FlushCoordinator

    /// A recorder for `file` (off until ``attach(_:scan:dirty:)``), syncing through `flusher`.
    init(file: any BlockFile, flusher: FlushCoordinator) {
        self.file = file
        self.flusher = flusher
    }

    /// How many TOUCHED records a period may hold in a journal of `layout` before OVERFLOW:
    /// each TOUCHED with its COMMIT takes 20 bytes and a journal cluster holds at least 200 of
    /// them after its header and the room for its END; the last cluster is kept for the CHECKPOINT
    /// and OVERFLOW.
    static func capacity(of layout: JournalLayout) -> Int {
        let perCluster = (layout.clusterSize - JournalFormat.clusterHeaderSize - JournalFormat.reserve) / 20
        return max(0, (layout.clusterCount - 1) * max(0, perCluster - 1))
    }

    /// Starts using `journal`, whose log `scan` was found at open. With `dirty` (NEED_CHECK set)
    /// the log is kept for recovery; otherwise it is recycled at once (reset and synced), so every
    /// period starts an empty log in a region with nothing stale in it.
    func attach(_ journal: Journal, scan: JournalScan, dirty: Bool) throws {
        try state.withLock { s in
            s.journal = journal
            s.scan = scan
            if dirty {
                s.mode = .awaitingRecovery
            } else {
                try flusher.failure.recording { try journal.recycle() }
                s.mode = .ready
                s.scan = nil
            }
        }
    }

    /// The mode now.
    var mode: Mode { state.withLock { $0.mode } }

    /// Whether NEED_CHECK must stay set: the image was opened dirty, its log waits for recovery, and
    /// no repairing check has started. Clearing the bit then (the idle timer, a close) would drop
    /// the log of a crash nobody repaired.
    var holdsDirty: Bool { state.withLock { $0.mode == .awaitingRecovery && !$0.repairing } }

    /// A repairing check (journal recovery or the full check) starts: it may clear NEED_CHECK.
    func beginRepair() {
        state.withLock { $0.repairing = true }
    }

    /// The log found at open, while it waits for recovery and nothing was allocated since; nil
    /// otherwise.
    var logAwaitingRecovery: JournalScan? {
        state.withLock { $0.mode == .awaitingRecovery && !$0.overflowed ? $0.scan : nil }
    }

    /// Opens a period: appends CHECKPOINT(`highWater`) and writes it out. Call under
    /// `NeedCheckTimer.cond` just before the NEED_CHECK header update, whose sync makes both
    /// durable before any allocation of the period starts.
    func beginPeriod(highWater: UInt64) throws {
        try state.withLock { s in
            guard s.mode == .ready, let journal = s.journal else { return }
            try flusher.failure.recording {
                try append(.checkpoint(highWater: highWater), to: journal)
                try journal.writeOut()
            }
            s.periodOpen = true
            s.named = []
            s.touched = 0
            s.overflowed = false
        }
    }

    /// Names L1 index `l1Index` before the period changes its L1 entry or L2 table. With `durable`
    /// the record is synced before this returns; without, the caller syncs before the change and
    /// then calls ``confirm(_:)`` (a new L2 table rides on the sync that makes the table durable).
    func name(_ l1Index: UInt32, durable: Bool) throws {
        try state.withLock { s in
            guard s.mode != .off, let journal = s.journal else { return }
            if s.mode == .awaitingRecovery {
                // The log describes the crash being waited on; it cannot describe this too.
                guard !s.overflowed else { return }
                try flusher.failure.recording {
                    try append(.overflow, to: journal)
                    try journal.writeOut()
                }
                try flusher.sync(file)
                s.overflowed = true
                return
            }
            guard s.periodOpen, !s.overflowed, !s.named.contains(l1Index) else { return }
            if s.touched >= Self.capacity(of: journal.layout) {
                try flusher.failure.recording {
                    try append(.overflow, to: journal)
                    try journal.writeOut()
                }
                try flusher.sync(file)
                s.overflowed = true
                return
            }
            try flusher.failure.recording {
                try append(.touched(l1Index: l1Index), to: journal)
                try journal.writeOut()
            }
            s.touched += 1
            if durable {
                try flusher.sync(file)
                s.named.insert(l1Index)
            }
        }
    }

    /// Records that the record naming `l1Index` is durable (the caller synced after ``name(_:durable:)``).
    func confirm(_ l1Index: UInt32) {
        state.withLock { s in
            if s.mode == .ready && s.periodOpen { s.named.insert(l1Index) }
        }
    }

    /// The checkpoint: the caller has synced the file and then made the header without NEED_CHECK
    /// durable, so the log is no longer read; this resets the log's clusters and syncs, and the
    /// next period starts an empty log. Call under `NeedCheckTimer.cond`. (Resetting before the
    /// header write would be wrong: a reset that reached the disk only in part can leave a shorter
    /// log that names fewer tables than the period changed.) Ends waiting for recovery.
    func checkpoint() throws {
        try state.withLock { s in
            guard s.mode != .off, let journal = s.journal else { return }
            try flusher.failure.recording { try journal.recycle() }
            s.mode = .ready
            s.scan = nil
            s.periodOpen = false
            s.named = []
            s.touched = 0
            s.overflowed = false
            s.repairing = false
        }
    }

    /// Stops recording for good (the header's journal bit is being cleared).
    func turnOff() {
        state.withLock { s in
            s.mode = .off
            s.journal = nil
            s.scan = nil
            s.periodOpen = false
        }
    }

    /// Appends `record` and its COMMIT.
    private func append(_ record: JournalRecord, to journal: Journal) throws {
        let (type, payload) = record.encoded
        try journal.append(type: type, payload: payload)
        try journal.commit()
    }
}
