extension Image {
    /// Writes `bytes` at guest `offset`. Allocated clusters are written in place; others get new
    /// clusters at the end of the file (see ``allocatingWrite(at:data:length:)`` for the ordering).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try gate.request { try writeRequest(bytes, at: offset) }
    }

    private func writeRequest(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try ensureWritable()
        try ensureInside(offset, UInt64(bytes.count))
        var done = 0
        while done < bytes.count {
            let pos = offset + UInt64(done)
            let run = try lookup(pos, maxLength: UInt64(bytes.count - done))
            let n = Int(run.length)
            switch run.kind {
            case .data(let host):
                try file.write(UnsafeRawBufferPointer(rebasing: bytes[done..<done + n]), at: host)
                done += n
            case .zero, .unallocated:
                let slice = UnsafeRawBufferPointer(rebasing: bytes[done..<done + n])
                done += Int(try allocatingWrite(at: pos, data: slice, length: run.length))
            }
        }
    }

    /// Writes `bytes` at guest `offset`.
    public func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    /// One allocating step for guest `[pos, pos+length)` (inside one L2 table, not allocated):
    /// `data` nil means "make these (cluster-aligned) clusters zero clusters".
    ///
    /// Holds the guest clusters in ``InflightClusters`` throughout, so no other request allocates
    /// them; then looks up again (another request may have allocated them meanwhile, in which case
    /// it returns 0 and the caller retries in place). Order of durable effects:
    /// 1. NEED_CHECK set and synced (images without a backing file), before anything else — with a
    ///    journal, after the period's CHECKPOINT record, which the same sync makes durable;
    /// 2. a missing L2 table is allocated (zeroes), named in the journal, synced, then linked into L1;
    ///    an existing table is named (and the record synced) once per period before its first update;
    /// 3. data clusters are allocated at the end of the file (a hole: reads zero) and the data is
    ///    written; head and tail are filled from the backing file only where it shows through;
    /// 4. with a backing file, a sync — the L2 entry must never point at data that could be lost;
    /// 5. the L2 entries, as whole 512-byte sectors.
    /// Returns how many bytes from `pos` it handled.
    func allocatingWrite(at pos: UInt64, data: UnsafeRawBufferPointer?, length: UInt64) throws -> UInt64 {
        let cs = geometry.clusterSize
        let bits = geometry.clusterBits
        let firstCluster = pos >> bits
        let requestEnd = try pos.adding(length, or: .outOfRange, "guest offset \(pos) plus length \(length)")
        guard let requestClusterEnd = requestEnd.roundedUp(toMultipleOf: cs) else {
            throw QEDError(
                .outOfRange, "guest offset \(requestEnd) rounded up to a cluster overflows 64 bits",
                value: requestEnd, path: path)
        }
        let clusters = firstCluster..<(requestClusterEnd >> bits)
        inflight.acquire(clusters)
        defer { inflight.release(clusters) }

        let run = try lookup(pos, maxLength: length)
        switch run.kind {
        case .data: return 0
        case .zero where data == nil: return run.length
        default: break
        }
        let n = run.length
        let end = pos + n  // n ≤ length: inside the range checked above
        let clusterStart = firstCluster << bits
        let clusterEnd = end.roundedUp(toMultipleOf: cs) ?? requestClusterEnd
        let count = (clusterEnd - clusterStart) >> bits
        let index = Int(geometry.l2Index(pos))

        try needCheck.beginAllocation()
        defer { needCheck.endAllocation() }
        let table = try l2TableForWriting(at: pos)
        defer { cache.unpin(table) }
        // The journal names the table before its first entry write of the period, durably (a new
        // table was named before its link; then this returns at once).
        try journal.name(UInt32(geometry.l1Index(pos)), durable: true)

        guard let data else {
            try failure.recording {
                try table.update(
                    at: index, values: repeatElement(TableEntry.zeroCluster, count: Int(count)), file: file)
            }
            return n
        }
        let host = try allocator.allocate(clusters: count, in: file)
        let head = pos - clusterStart
        let tail = clusterEnd - end
        let disk = run.kind == .unallocated ? backing : nil
        if let disk, head + tail > 0, clusterStart < disk.virtualSize {
            try writeWithBackingFill(
                data: UnsafeRawBufferPointer(rebasing: data[0..<Int(n)]), host: host,
                clusterStart: clusterStart, head: head, tail: tail)
        } else {
            // A new cluster lies past the old end of file and reads as zeroes: only the data is written.
            try file.write(UnsafeRawBufferPointer(rebasing: data[0..<Int(n)]), at: host + head)
        }
        if backing != nil { try flusher.sync(file) }
        try failure.recording {
            try table.update(at: index, values: (0..<count).lazy.map { host + ($0 << bits) }, file: file)
        }
        return n
    }

    /// Writes head fill (from the backing chain), data and tail fill as one write.
    private func writeWithBackingFill(
        data: UnsafeRawBufferPointer, host: UInt64, clusterStart: UInt64,
        head: UInt64, tail: UInt64
    ) throws {
        let total = Int(head) + data.count + Int(tail)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 4096)
        defer { buffer.deallocate() }
        if head > 0 {
            try readBacking(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(head)]), at: clusterStart)
        }
        UnsafeMutableRawBufferPointer(rebasing: buffer[Int(head)..<Int(head) + data.count]).copyMemory(from: data)
        if tail > 0 {
            try readBacking(
                into: UnsafeMutableRawBufferPointer(rebasing: buffer[(total - Int(tail))...]),
                at: clusterStart + head + UInt64(data.count))
        }
        try file.write(UnsafeRawBufferPointer(buffer), at: host)
    }

    /// The L2 table for guest `pos`, pinned; creates and links it when L1 has none.
    private func l2TableForWriting(at pos: UInt64) throws -> Table {
        let l1Index = Int(geometry.l1Index(pos))
        let existing = l1.entry(l1Index)
        if existing != TableEntry.unallocated { return try pinValidTable(existing, pos: pos) }
        tableCreationCallers.add(1, ordering: .relaxed)
        defer { tableCreationCallers.subtract(1, ordering: .relaxed) }
        return try tableCreation.withLock { _ in
            let again = l1.entry(l1Index)
            if again != TableEntry.unallocated { return try pinValidTable(again, pos: pos) }
            let offset = try allocator.allocate(clusters: geometry.tableSize, in: file)
            try makeNewTableDurable(at: offset, l1Index: l1Index)
            // Cache the table before L1 points at it: a concurrent lookup that sees the new L1 entry
            // must find this object, not load a second copy whose sector writes would drop our entries.
            let table = try Table(fileOffset: offset, count: Int(geometry.entriesPerTable))
            cache.insert(table)
            do {
                try failure.recording { try l1.update(at: l1Index, values: CollectionOfOne(offset), file: file) }
            } catch {
                cache.unpin(table)
                throw error
            }
            return table
        }
    }

    /// Makes the new L2 table at file byte `offset` durable before L1 points there. The table is
    /// a hole the allocator just added (all entries zero): what must survive a crash is the file
    /// length that holds it. Without a journal, one durable write of its last sector (zeroes) does
    /// that and writes back nothing else (``BlockFile/writeDurably(_:at:)``, a ranged `fdatasync`);
    /// QEMU syncs the whole file here, which with gigabytes of guest data in the page cache stalls
    /// the writer for seconds, for the same guarantee. With a journal, the record naming the L1
    /// index must be durable too: a whole-file sync covers both.
    private func makeNewTableDurable(at offset: UInt64, l1Index: Int) throws {
        if journal.mode == .off {
            try failure.check()
            let sector = [UInt8](repeating: 0, count: 512)
            let last = offset + geometry.tableSize * geometry.clusterSize - 512
            try failure.recording { try sector.withUnsafeBytes { try file.writeDurably($0, at: last) } }
            return
        }
        try journal.name(UInt32(l1Index), durable: false)
        try flusher.sync(file)
        journal.confirm(UInt32(l1Index))
    }

    private func pinValidTable(_ offset: UInt64, pos: UInt64) throws -> Table {
        guard geometry.isValidTableOffset(offset, fileSize: allocator.fileSize) else {
            throw QEDError(
                .invalidTableOffset,
                "L1 entry for guest offset \(pos) points to an invalid L2 table offset \(offset)",
                value: offset, path: path)
        }
        return try pinL2(at: offset)
    }

    /// Makes guest `[offset, offset+length)` read as zeroes. Whole clusters that are unallocated
    /// become zero clusters (no data written, backing hidden); allocated ones are zeroed in place —
    /// by punching a hole when `unmap` allows it, else by writing zeroes. Partial clusters at
    /// either end are written as ordinary zero data.
    public func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool = false) throws {
        try gate.request { try writeZeroesRequest(at: offset, length: length, unmap: unmap) }
    }

    private func writeZeroesRequest(at offset: UInt64, length: UInt64, unmap: Bool) throws {
        try ensureWritable()
        try ensureInside(offset, length)
        let cs = geometry.clusterSize
        let end = offset + length
        let alignedStart = offset.roundedUp(toMultipleOf: cs) ?? end
        let alignedEnd = end.roundedDown(toMultipleOf: cs)
        guard alignedStart < alignedEnd else {
            // No whole cluster inside: plain zero data.
            try writeZeroData(at: offset, length: length)
            return
        }
        try writeZeroData(at: offset, length: alignedStart - offset)
        var pos = alignedStart
        while pos < alignedEnd {
            let run = try lookup(pos, maxLength: alignedEnd - pos)
            switch run.kind {
            case .data(let host):
                try zeroInPlace(host: host, length: run.length, unmap: unmap)
                pos += run.length
            case .zero:
                pos += run.length
            case .unallocated:
                pos += try allocatingWrite(at: pos, data: nil, length: run.length)
            }
        }
        try writeZeroData(at: alignedEnd, length: end - alignedEnd)
    }

    private func writeZeroData(at offset: UInt64, length: UInt64) throws {
        guard length > 0 else { return }
        let zeroes = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(length), alignment: 4096)
        defer { zeroes.deallocate() }
        zeroes.initializeMemory(as: UInt8.self, repeating: 0)
        try writeRequest(UnsafeRawBufferPointer(zeroes), at: offset)
    }

    private func zeroInPlace(host: UInt64, length: UInt64, unmap: Bool) throws {
        if unmap {
            do {
                try file.punchHole(at: host, length: length)
                return
            } catch let error as QEDError where error.code == .unsupported {
                // fall through to writing zeroes
            }
        }
        try file.writeZeroes(at: host, count: length)
    }

    /// Gives back the host space of whole allocated clusters in `[offset, offset+length)` (hole
    /// punching); their mapping stays, so the image stays consistent, and they read as zeroes.
    /// Partial clusters and unallocated or zero clusters are left alone (discard is a hint).
    public func discard(at offset: UInt64, length: UInt64) throws {
        try gate.request { try discardRequest(at: offset, length: length) }
    }

    private func discardRequest(at offset: UInt64, length: UInt64) throws {
        try ensureWritable()
        try ensureInside(offset, length)
        let cs = geometry.clusterSize
        let end = offset + length
        guard let start = offset.roundedUp(toMultipleOf: cs), start < end.roundedDown(toMultipleOf: cs) else {
            return
        }
        let alignedEnd = end.roundedDown(toMultipleOf: cs)
        var pos = start
        while pos < alignedEnd {
            let run = try lookup(pos, maxLength: alignedEnd - pos)
            if case .data(let host) = run.kind {
                do {
                    try file.punchHole(at: host, length: run.length)
                } catch let error as QEDError where error.code == .unsupported {
                    return
                }
            }
            pos += run.length
        }
    }

    /// Makes every write that completed before this call durable (metadata is written through,
    /// so this is one shared `fdatasync`).
    public func flush() throws {
        try gate.request {
            try ensureOpen()
            guard !isReadOnly else { return }
            try flusher.sync(file)
        }
    }
}
