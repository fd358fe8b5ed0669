/// What reading a journal found: the committed records, why the log ended, and where a writer
/// resumes (docs/journal.md §1, "Reading the log").
package struct JournalScan: Sendable, Equatable {
    /// Why the log ended.
    package enum Stop: Sendable, Equatable {
        /// A NONE size byte (reset content): the normal end.
        case none
        /// Every journal cluster of the region was read to its END.
        case regionEnd
        /// A cluster without the magic or with a sequence number that does not continue the log.
        case badClusterHeader
        /// A size byte of 0 or 1, an entry reaching past its cluster, type 0 or 0xFF, a wrong END
        /// or COMMIT size or `skip`.
        case badFraming
        /// An END or COMMIT whose CRC does not match the bytes before it.
        case badChecksum
        /// A COMMIT whose sequence number is not its predecessor's plus one.
        case badSequence
    }

    /// The committed records, oldest first.
    package var commits: [JournalCommit] = []
    /// Why the log ended.
    package var stop: Stop = .none
    /// The journal cluster the log ended in.
    package var stopCluster = 0
    /// Entries after the last valid COMMIT (never returned: they were not committed).
    package var uncommittedEntries = 0
    /// Whether, after a log that ended at damage (not at NONE or the region's end), a later
    /// cluster carries the log's next cluster sequence number: possibly damage in the middle of the
    /// log rather than a torn tail. The QED engine then runs the full check.
    package var continuesAfterStop = false
    /// The journal cluster a writer resumes in.
    package var resumeCluster = 0
    /// The byte in that cluster a writer resumes at: just after the last valid COMMIT, or 0 when the
    /// log holds no commit (the cluster header is then written anew).
    package var resumeOffset = 0
    /// The CRC the resume cluster's chain continues (the previous cluster's END CRC; 0 for cluster 0).
    package var resumeSeed: UInt32 = 0
    /// The resume cluster's bytes before ``resumeOffset``.
    package var resumePrefix: [UInt8] = []
    /// The sequence number the writer gives its next new journal cluster.
    package var nextClusterSequence: UInt64 = 1
    /// The sequence number of the writer's next COMMIT.
    package var nextCommitSequence: UInt64 = 1

    /// Every committed entry, in order.
    package var entries: [JournalEntry] { commits.flatMap(\.entries) }
}

/// Reads a journal's log without writing (read-only opens may call it).
package enum JournalReader {
    /// Reads the log in `layout`'s region of `file`. Throws only when the file cannot be read; a
    /// damaged log is not an error but an end (``JournalScan/stop``).
    package static func scan(_ file: any BlockFile, layout: JournalLayout) throws -> JournalScan {
        let size = layout.clusterSize
        var scan = JournalScan()
        var buffer = [UInt8](repeating: 0, count: size)
        var seed: UInt32 = 0
        var base: UInt64 = 0
        var pending: [JournalEntry] = []
        var expectedCommit: UInt64?
        var lastHeaderSequence: UInt64?
        var ended = false

        clusters: for index in 0..<layout.clusterCount {
            scan.stopCluster = index
            try buffer.withUnsafeMutableBytes { try file.readFully(into: $0, at: layout.offset(ofCluster: index)) }
            if buffer[0] == JournalFormat.none {
                scan.stop = .none
                ended = true
                break
            }
            let sequence = JournalFormat.get64(buffer, at: 4)
            if index == 0 { base = sequence }
            let (expected, overflow) = base.addingReportingOverflow(UInt64(index))
            guard Array(buffer[0..<4]) == JournalFormat.magic, !overflow, sequence == expected else {
                scan.stop = .badClusterHeader
                ended = true
                break
            }
            lastHeaderSequence = sequence
            let clusterSeed = seed
            var crc = CRC32C.checksum(buffer[0..<JournalFormat.clusterHeaderSize], continuing: seed)
            var at = JournalFormat.clusterHeaderSize
            while true {
                guard at < size else {
                    scan.stop = .badFraming
                    ended = true
                    break clusters
                }
                let entrySize = Int(buffer[at])
                if buffer[at] == JournalFormat.none {
                    scan.stop = .none
                    ended = true
                    break clusters
                }
                guard entrySize >= 2, at + entrySize <= size else {
                    scan.stop = .badFraming
                    ended = true
                    break clusters
                }
                let type = buffer[at + 1]
                switch type {
                case JournalFormat.endType:
                    guard entrySize == JournalFormat.endSize,
                        JournalFormat.get16(buffer, at: at + 2) == size - at - entrySize
                    else {
                        scan.stop = .badFraming
                        ended = true
                        break clusters
                    }
                    guard JournalFormat.get32(buffer, at: at + 4) == crc else {
                        scan.stop = .badChecksum
                        ended = true
                        break clusters
                    }
                    seed = crc
                    continue clusters
                case JournalFormat.commitType:
                    guard entrySize == JournalFormat.commitSize else {
                        scan.stop = .badFraming
                        ended = true
                        break clusters
                    }
                    guard JournalFormat.get32(buffer, at: at + 10) == crc else {
                        scan.stop = .badChecksum
                        ended = true
                        break clusters
                    }
                    let commit = JournalFormat.get64(buffer, at: at + 2)
                    guard expectedCommit == nil || expectedCommit == commit, commit != .max else {
                        scan.stop = .badSequence
                        ended = true
                        break clusters
                    }
                    scan.commits.append(JournalCommit(sequence: commit, entries: pending))
                    pending = []
                    expectedCommit = commit + 1
                    crc = CRC32C.checksum(buffer[at..<at + entrySize], continuing: crc)
                    at += entrySize
                    scan.resumeCluster = index
                    scan.resumeOffset = at
                    scan.resumeSeed = clusterSeed
                    scan.resumePrefix = Array(buffer[0..<at])
                    scan.nextClusterSequence = sequence &+ 1
                    scan.nextCommitSequence = commit + 1
                case 0, JournalFormat.none:
                    scan.stop = .badFraming
                    ended = true
                    break clusters
                default:
                    pending.append(JournalEntry(type: type, payload: Array(buffer[at + 2..<at + entrySize])))
                    crc = CRC32C.checksum(buffer[at..<at + entrySize], continuing: crc)
                    at += entrySize
                }
            }
        }
        if !ended { scan.stop = .regionEnd }
        scan.uncommittedEntries = pending.count
        if scan.commits.isEmpty, let last = lastHeaderSequence {
            // No commit: the writer starts cluster 0 anew, with a number no header read so far had.
            scan.nextClusterSequence = last &+ 1
        }
        if scan.stop != .none, scan.stop != .regionEnd {
            scan.continuesAfterStop = try continues(file, layout: layout, after: scan.stopCluster, base: base)
        }
        return scan
    }

    /// The highest journal cluster of the region holding a byte that is not reset (0xFF), or -1
    /// when the whole region is reset. Reads the region in pieces of at most 1 MiB. A writer that
    /// resumes uses it to reset only what needs it (``Journal/recycle()``).
    package static func highestNonResetCluster(_ file: any BlockFile, layout: JournalLayout) throws -> Int {
        let clusterSize = layout.clusterSize
        let perPiece = max(1, (1 << 20) / clusterSize)
        var buffer = [UInt8](repeating: 0, count: perPiece * clusterSize)
        var highest = -1
        var first = 0
        while first < layout.clusterCount {
            let count = min(perPiece, layout.clusterCount - first)
            try buffer.withUnsafeMutableBytes { raw in
                let piece = UnsafeMutableRawBufferPointer(rebasing: raw[0..<count * clusterSize])
                try file.readFully(into: piece, at: layout.offset(ofCluster: first))
                for index in 0..<count
                where !isReset(UnsafeRawBufferPointer(rebasing: piece[index * clusterSize..<(index + 1) * clusterSize]))
                {
                    highest = first + index
                }
            }
            first += count
        }
        return highest
    }

    /// Whether every byte of `bytes` is 0xFF (the reset content).
    private static func isReset(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        var all = UInt64.max
        var i = 0
        while i + 8 <= bytes.count {
            all &= base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < bytes.count {
            all &= UInt64(base.load(fromByteOffset: i, as: UInt8.self)) | ~UInt64(0xFF)
            i += 1
        }
        return all == .max
    }

    /// Whether a cluster after `stopCluster` has the magic and the sequence number the log would
    /// give it.
    private static func continues(
        _ file: any BlockFile, layout: JournalLayout, after stopCluster: Int, base: UInt64
    ) throws -> Bool {
        guard stopCluster + 1 < layout.clusterCount else { return false }
        for index in stopCluster + 1..<layout.clusterCount {
            let header = try file.readBytes(count: JournalFormat.clusterHeaderSize, at: layout.offset(ofCluster: index))
            let (expected, overflow) = base.addingReportingOverflow(UInt64(index))
            if !overflow, Array(header[0..<4]) == JournalFormat.magic, JournalFormat.get64(header, at: 4) == expected {
                return true
            }
        }
        return false
    }
}
