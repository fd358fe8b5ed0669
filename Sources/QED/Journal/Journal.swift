import Synchronization

/// The journal's writer: a log of records in a fixed region of a ``BlockFile``, appended into the
/// buffer of the current journal cluster, committed with sequence numbers and chained CRC-32Cs,
/// flushed on demand, recycled in place at checkpoints (docs/journal.md §1).
///
/// Knows nothing of QED: its user chooses the record types (``JournalFormat/userTypes``) and
/// when to commit and flush. Thread-safe: every call takes ``state``.
///
/// Locking: `state` (a `Mutex`) guards the buffer, the position, the sequence numbers and the
/// write-outs waiting. ``writeOut()`` and ``recycle()`` write the region's sectors holding it;
/// ``recycle()`` and ``format(_:layout:clusterSequence:commitSequence:)`` also sync holding it (a
/// checkpoint runs with no appender); ``flush()`` syncs after releasing it.
package final class Journal: Sendable {
    /// Where the writer is and what it has not written out yet; guarded by ``state``.
    private struct State {
        /// The current journal cluster's bytes; reset content (0xFF) after ``offset``.
        var buffer: [UInt8]
        /// Index of the current journal cluster.
        var cluster = 0
        /// Next free byte in ``buffer``; 0 while the cluster's header is not placed yet.
        var offset = 0
        /// The chain CRC the current cluster continues (the previous cluster's END CRC).
        var seed: UInt32 = 0
        /// CRC of `buffer[0..<offset]` continuing ``seed`` (meaningful once ``offset`` > 0).
        var crc: UInt32 = 0
        /// The sequence number the next new cluster header gets.
        var nextClusterSequence: UInt64
        /// The sequence number of the next COMMIT.
        var nextCommitSequence: UInt64
        /// Entries appended since the last COMMIT.
        var uncommitted = 0
        /// Bytes of ``buffer`` changed since the last write-out: `dirtyFrom..<dirtyTo`.
        var dirtyFrom: Int?
        var dirtyTo = 0
        /// Closed clusters' changed sectors not written out yet: (file offset, bytes).
        var waiting: [(offset: UInt64, bytes: [UInt8])] = []
        /// The highest journal cluster that may hold non-reset bytes (written by this writer, or
        /// found at ``Journal/resume(_:layout:)``); -1 when the whole region is reset.
        var highestUsed = -1
        /// Set by ``stop()``.
        var stopped = false
        /// The first write or sync failure; every later call throws it.
        var failure: QEDError?
    }

    /// The file holding the region.
    package let file: any BlockFile
    /// The region.
    package let layout: JournalLayout
    private let state: Mutex<State>

    private init(file: any BlockFile, layout: JournalLayout, state: State) {
        self.file = file
        self.layout = layout
        self.state = Mutex(state)
    }

    // MARK: Opening

    /// Resets the whole region (fills it with 0xFF), syncs, and returns a writer at the start of
    /// an empty log whose first cluster and first COMMIT get the given sequence numbers.
    package static func format(
        _ file: any BlockFile, layout: JournalLayout, clusterSequence: UInt64 = 1, commitSequence: UInt64 = 1
    ) throws -> Journal {
        try reset(file, layout: layout, clusters: layout.clusterCount)
        try file.sync()
        let state = State(
            buffer: freshCluster(layout), nextClusterSequence: clusterSequence, nextCommitSequence: commitSequence)
        return Journal(file: file, layout: layout, state: state)
    }

    /// Reads the log (``JournalReader/scan(_:layout:)``) and returns a writer placed right after its
    /// last valid COMMIT, with the scan. Nothing is written until the writer's first write-out, which
    /// also resets the rest of that journal cluster (uncommitted bytes a crash left there). Also
    /// reads the whole region to learn which clusters are not reset, so that ``recycle()``
    /// resets just those (nothing at all for a region that is wholly reset).
    package static func resume(_ file: any BlockFile, layout: JournalLayout) throws -> (Journal, JournalScan) {
        let scan = try JournalReader.scan(file, layout: layout)
        let highestNonReset = try JournalReader.highestNonResetCluster(file, layout: layout)
        var state = State(
            buffer: freshCluster(layout), nextClusterSequence: scan.nextClusterSequence,
            nextCommitSequence: scan.nextCommitSequence)
        state.cluster = scan.resumeCluster
        state.offset = scan.resumeOffset
        state.seed = scan.resumeSeed
        // The log's clusters are among the non-reset ones; a cluster the writer starts is added then.
        state.highestUsed = highestNonReset
        if scan.resumeOffset > 0 {
            state.buffer.replaceSubrange(0..<scan.resumeOffset, with: scan.resumePrefix)
            state.crc = CRC32C.checksum(state.buffer[0..<scan.resumeOffset], continuing: scan.resumeSeed)
        }
        state.dirtyFrom = scan.resumeOffset
        state.dirtyTo = layout.clusterSize
        return (Journal(file: file, layout: layout, state: state), scan)
    }

    // MARK: Writing

    /// Appends a record of `type` (0x03…0xFE) with `payload` (≤ 252 bytes) to the buffer. It is
    /// part of the log once committed, and durable once flushed. Throws
    /// ``QEDError/Code/invalidArgument`` for a bad type or payload, ``QEDError/Code/noSpace``
    /// when the region is full (the log is then unchanged), ``QEDError/Code/closed`` after
    /// ``stop()``, and the first write failure after one.
    package func append(type: UInt8, payload: [UInt8]) throws {
        guard JournalFormat.userTypes.contains(type) else {
            throw QEDError(.invalidArgument, "journal record type is reserved", value: UInt64(type))
        }
        guard payload.count <= JournalFormat.maximumPayload else {
            throw QEDError(.invalidArgument, "journal record payload exceeds 252 bytes", value: UInt64(payload.count))
        }
        let entrySize = payload.count + 2
        try state.withLock { s in
            try usable(s)
            if s.offset == 0 {
                placeHeader(&s)
            } else if s.offset + entrySize + JournalFormat.reserve > layout.clusterSize {
                guard s.cluster + 1 < layout.clusterCount else {
                    throw QEDError(
                        .noSpace, "journal is full (\(layout.clusterCount) clusters)", value: layout.size,
                        path: file.path)
                }
                closeCluster(&s)
                placeHeader(&s)
            }
            var entry = [UInt8(entrySize), type]
            entry.append(contentsOf: payload)
            put(entry, into: &s)
            s.uncommitted += 1
        }
    }

    /// Appends a COMMIT for the entries appended since the last one and returns its sequence
    /// number; with none, writes nothing and returns the last COMMIT's number (the next one's
    /// minus one). Durable once flushed.
    @discardableResult
    package func commit() throws -> UInt64 {
        try state.withLock { s in
            try usable(s)
            guard s.uncommitted > 0 else { return s.nextCommitSequence &- 1 }
            // Every append left room for this COMMIT and an END after it.
            var entry = [UInt8](repeating: 0, count: JournalFormat.commitSize)
            entry[0] = UInt8(JournalFormat.commitSize)
            entry[1] = JournalFormat.commitType
            JournalFormat.put64(s.nextCommitSequence, into: &entry, at: 2)
            JournalFormat.put32(s.crc, into: &entry, at: 10)
            put(entry, into: &s)
            s.uncommitted = 0
            let sequence = s.nextCommitSequence
            s.nextCommitSequence &+= 1
            return sequence
        }
    }

    /// Writes every change since the last write-out (whole 512-byte sectors) without syncing.
    package func writeOut() throws {
        try state.withLock { s in
            if let failure = s.failure { throw failure }
            try writeOut(&s)
        }
    }

    /// Writes out and syncs the file: every COMMIT made before the call is durable when it returns.
    package func flush() throws {
        try writeOut()
        do {
            try file.sync()
        } catch {
            let failure = error as? QEDError ?? QEDError(.io, "journal sync failed", path: file.path)
            state.withLock { s in if s.failure == nil { s.failure = failure } }
            throw failure
        }
    }

    /// Resets the journal clusters that may hold non-reset bytes (those this writer wrote, and
    /// after ``resume`` those found so), syncs, and starts a new, empty log in cluster 0;
    /// sequence numbers continue. Writes and syncs nothing when the region is wholly reset
    /// already. Uncommitted entries are dropped. For checkpoints: the caller has made what the
    /// log described durable.
    package func recycle() throws {
        try state.withLock { s in
            try usable(s)
            let clusters = min(s.highestUsed + 1, layout.clusterCount)
            do {
                if clusters > 0 {
                    try Self.reset(file, layout: layout, clusters: clusters)
                    try file.sync()
                }
            } catch {
                let failure = error as? QEDError ?? QEDError(.io, "journal reset failed", path: file.path)
                s.failure = failure
                throw failure
            }
            s.buffer = Self.freshCluster(layout)
            s.cluster = 0
            s.offset = 0
            s.seed = 0
            s.crc = 0
            s.uncommitted = 0
            s.dirtyFrom = nil
            s.dirtyTo = 0
            s.waiting = []
            s.highestUsed = -1
        }
    }

    /// Flushes, then refuses further appends and commits (``QEDError/Code/closed``).
    package func stop() throws {
        try flush()
        state.withLock { $0.stopped = true }
    }

    // MARK: Inspection

    /// Where the next entry goes: journal cluster and byte offset in it (0 = header not placed).
    package var position: (cluster: Int, offset: Int) { state.withLock { ($0.cluster, $0.offset) } }

    /// The sequence number the next COMMIT will carry.
    package var nextCommitSequence: UInt64 { state.withLock { $0.nextCommitSequence } }

    // MARK: Internals (called holding `state`)

    private func usable(_ s: State) throws {
        if let failure = s.failure { throw failure }
        if s.stopped { throw QEDError(.closed, "journal is stopped", path: file.path) }
    }

    /// Starts the current cluster: magic and the next cluster sequence number.
    private func placeHeader(_ s: inout State) {
        var header = JournalFormat.magic + [UInt8](repeating: 0, count: 8)
        JournalFormat.put64(s.nextClusterSequence, into: &header, at: 4)
        s.nextClusterSequence &+= 1
        s.offset = 0
        s.crc = s.seed
        s.highestUsed = max(s.highestUsed, s.cluster)
        put(header, into: &s)
    }

    /// Copies `bytes` to the buffer at the offset, extends the dirty range and the running CRC.
    private func put(_ bytes: [UInt8], into s: inout State) {
        let end = s.offset + bytes.count
        s.buffer.replaceSubrange(s.offset..<end, with: bytes)
        s.crc = CRC32C.checksum(s.buffer[s.offset..<end], continuing: s.crc)
        s.dirtyFrom = min(s.dirtyFrom ?? s.offset, s.offset)
        s.dirtyTo = max(s.dirtyTo, end)
        s.offset = end
    }

    /// Ends the current cluster with an END, queues its changed sectors and moves to the next
    /// cluster (reset, header not placed).
    private func closeCluster(_ s: inout State) {
        var end = [UInt8](repeating: 0, count: JournalFormat.endSize)
        end[0] = UInt8(JournalFormat.endSize)
        end[1] = JournalFormat.endType
        let skip = layout.clusterSize - s.offset - JournalFormat.endSize
        end[2] = UInt8(skip >> 8)
        end[3] = UInt8(skip & 0xFF)
        JournalFormat.put32(s.crc, into: &end, at: 4)
        let chain = s.crc
        put(end, into: &s)
        if let range = dirtySectors(s) {
            s.waiting.append((layout.offset(ofCluster: s.cluster) + UInt64(range.lowerBound), Array(s.buffer[range])))
        }
        s.buffer = Self.freshCluster(layout)
        s.cluster += 1
        s.offset = 0
        s.seed = chain
        s.crc = chain
        s.dirtyFrom = nil
        s.dirtyTo = 0
    }

    /// The changed bytes of the buffer widened to whole 512-byte sectors.
    private func dirtySectors(_ s: State) -> Range<Int>? {
        guard let from = s.dirtyFrom, s.dirtyTo > from else { return nil }
        let low = from / 512 * 512
        let high = min((s.dirtyTo + 511) / 512 * 512, layout.clusterSize)
        return low..<high
    }

    private func writeOut(_ s: inout State) throws {
        do {
            while let first = s.waiting.first {
                try file.writeBytes(first.bytes, at: first.offset)
                s.waiting.removeFirst()
            }
            if let range = dirtySectors(s) {
                try file.writeBytes(
                    Array(s.buffer[range]), at: layout.offset(ofCluster: s.cluster) + UInt64(range.lowerBound))
            }
            s.dirtyFrom = nil
            s.dirtyTo = 0
        } catch {
            let failure = error as? QEDError ?? QEDError(.io, "journal write failed", path: file.path)
            s.failure = failure
            throw failure
        }
    }

    /// A journal cluster of reset content.
    private static func freshCluster(_ layout: JournalLayout) -> [UInt8] {
        [UInt8](repeating: JournalFormat.none, count: layout.clusterSize)
    }

    /// Fills journal clusters `0..<clusters` with 0xFF, at most 1 MiB per write.
    private static func reset(_ file: any BlockFile, layout: JournalLayout, clusters: Int) throws {
        guard clusters > 0 else { return }
        let total = UInt64(clusters) * UInt64(layout.clusterSize)
        let chunk = Int(min(total, 1 << 20))
        let fill = [UInt8](repeating: JournalFormat.none, count: chunk)
        var done: UInt64 = 0
        while done < total {
            let n = Int(min(UInt64(chunk), total - done))
            try file.writeBytes(n == chunk ? fill : Array(fill[0..<n]), at: layout.start + done)
            done += UInt64(n)
        }
    }
}
