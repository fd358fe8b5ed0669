import Synchronization

/// An add-cow image's COW bitmap: one bit per guest cluster (1 = the cluster is in the image
/// file, 0 = read the backing file), held in memory and written to the metadata file.
///
/// An allocating write *publishes* its bits (``publish(_:)``): they take effect in memory at once
/// and stay *pending* until the next ``writePending(syncingData:)``, which syncs the image file
/// first and only then writes the sectors holding them. So a bit never reaches the file before
/// its cluster's data is durable, and allocating writes pay no sync of their own: one flush makes
/// every allocation since the last one durable (group commit). A sector is always written as the
/// words are minus the bits still pending.
///
/// Lookups take no lock: the bits live in 64-bit atomic words, read with acquiring loads. (A
/// mutex taken by every request of 16 server threads on 2 cores cost more than the I/O, as it did
/// for QED's tables; docs/performance.md.)
///
/// Locking (docs/design.md, "Locks"):
/// - `sectorLocks` (striped Mutexes, by 512-byte bitmap sector) serialise the read-modify-write of
///   one sector: a setter builds the sector from the words, adds its bits, writes the sector and
///   only then publishes the bits in the words (releasing atomic OR / AND), all under its stripe.
///   So two allocations whose bits share a sector never lose each other's bits, a bit is never
///   visible before it is written, and allocations in other sectors do not wait. A thread holds
///   one stripe at a time.
/// - `pending` (a `Mutex`) guards the pending bits (word index → mask). It is taken inside a
///   stripe (to mask a sector being built) or alone (``publish(_:)``, which records the bits and
///   then ORs them into the words under it, so no bit is visible in the words without being
///   pending until a writer has taken it). Never held across I/O.
/// - `writing` (a `Mutex`) serialises ``writePending(syncingData:)``: take the pending bits, sync
///   the data, write their sectors. Without it a second writer could write, after its own sync,
///   bits a first writer took after that sync. Outermost: then a stripe, then `pending`.
/// - `storage` (the words' buffer and the cluster count) is replaced only by ``grow(to:)``, which
///   the image calls from an exclusive operation (``OperationGate``): no lookup or setter runs
///   then, and the gate's own atomics order the replacement before every later request.
///
/// Units: clusters, and bytes of the metadata file for ``base``.
final class COWBitmap: @unchecked Sendable {
    /// One stripe of the sector locks (a class, because `Mutex` cannot live in an array).
    private final class SectorLock: Sendable {
        /// Guards nothing but the order of writes to the sectors hashed to this stripe.
        let mutex = Mutex(())
    }

    /// The words and how many clusters they describe. Replaced only under exclusion (see above).
    private final class Storage {
        let words: UnsafeMutablePointer<Atomic<UInt64>>
        let wordCount: Int
        let clusters: UInt64

        init(clusters: UInt64, copying old: Storage? = nil) {
            self.clusters = clusters
            wordCount = Int((clusters + 63) / 64)
            words = .allocate(capacity: max(1, wordCount))
            for i in 0..<wordCount {
                let value = old.map { i < $0.wordCount ? $0.words[i].load(ordering: .relaxed) : 0 } ?? 0
                (words + i).initialize(to: Atomic(value))
            }
        }

        deinit {
            words.deinitialize(count: wordCount)
            words.deallocate()
        }

        /// The word holding cluster `c`'s bit (0 past the end).
        func word(_ index: Int) -> UInt64 {
            index < wordCount ? words[index].load(ordering: .acquiring) : 0
        }
    }

    private static let sectorSize: UInt64 = 512
    private static let stripeCount = 64

    /// The metadata file the bitmap lives in.
    let file: any BlockFile
    /// Byte offset of the bitmap in `file` (HEADER_SIZE).
    let base: UInt64
    /// Replaced only by ``grow(to:)`` under the image's exclusion (see the type's comment).
    nonisolated(unsafe) private var storage: Storage
    private let sectorLocks: [SectorLock]
    /// Bits published in the words but not written to the file yet: word index → mask.
    private let pending = Mutex<[Int: UInt64]>([:])
    /// Serialises ``writePending(syncingData:)`` (see the type's comment); guards no data.
    private let writing = Mutex(())

    /// Loads the bits of `clusters` clusters from `file` at `base` (bytes past the file's end read
    /// as 0); bits past the last cluster are dropped (ignored on read).
    init(file: any BlockFile, base: UInt64, clusters: UInt64) throws {
        self.file = file
        self.base = base
        var bytes = [UInt8](repeating: 0, count: Int((clusters + 7) / 8))
        try bytes.withUnsafeMutableBytes { try file.readSkippingHoles(into: $0, at: base, zeroed: true) }
        let storage = Storage(clusters: clusters)
        for (i, byte) in bytes.enumerated() where byte != 0 {
            var value = UInt64(byte) << (8 * UInt64(i % 8))
            let first = UInt64(i) * 8
            if first + 8 > clusters {  // drop the bits past the last cluster
                value &= (UInt64(1) << (clusters % 64)) &- 1
            }
            storage.words[i / 8].bitwiseOr(value, ordering: .relaxed)
        }
        self.storage = storage
        sectorLocks = (0..<Self.stripeCount).map { _ in SectorLock() }
    }

    /// Clusters the bitmap covers.
    var clusters: UInt64 { storage.clusters }

    /// Whether cluster `c` is in the image file.
    func isSet(_ c: UInt64) -> Bool {
        storage.word(Int(c / 64)) & (1 << (c % 64)) != 0
    }

    /// The state of cluster `c` and how many clusters from `c` (at most `limit`, ≥ 1) share it.
    /// Lock-free: each word is one acquiring load.
    func run(from c: UInt64, limit: UInt64) -> (set: Bool, count: UInt64) {
        let s = storage
        var index = Int(c / 64)
        var word = s.word(index)
        let first = word & (1 << (c % 64)) != 0
        // Bits equal to the first become 0 in `differ`; the run ends at the first 1.
        var differ = (first ? ~word : word) >> (c % 64)
        var n: UInt64 = 0
        var available = 64 - c % 64
        while n < limit {
            if differ != 0 {
                n += UInt64(differ.trailingZeroBitCount)
                return (first, max(1, min(n, limit)))
            }
            n += available
            index += 1
            guard n < limit else { break }
            word = s.word(index)
            differ = first ? ~word : word
            available = 64
        }
        return (first, min(n, limit))
    }

    /// Clusters whose bit is set.
    var setCount: UInt64 {
        let s = storage
        return (0..<s.wordCount).reduce(0) { $0 + UInt64(s.word($1).nonzeroBitCount) }
    }

    /// Sets the bits of `range` (clusters inside the bitmap) in memory at once and marks them
    /// pending: they reach the file with the next ``writePending(syncingData:)``. Call after the
    /// clusters' data is written (not necessarily synced). No I/O.
    func publish(_ range: Range<UInt64>) {
        let s = storage
        let inside = range.clamped(to: 0..<s.clusters)
        guard !inside.isEmpty else { return }
        pending.withLock { p in
            for index in Int(inside.lowerBound / 64)...Int((inside.upperBound - 1) / 64) {
                let mask = Self.mask(of: inside, inWord: index)
                p[index, default: 0] |= mask
                s.words[index].bitwiseOr(mask, ordering: .releasing)
            }
        }
    }

    /// The bits of word `index` (clusters `index * 64 ..< index * 64 + 64`) that `range` covers.
    private static func mask(of range: Range<UInt64>, inWord index: Int) -> UInt64 {
        let start = UInt64(index) * 64
        let low = max(range.lowerBound, start)
        let high = min(range.upperBound, start + 64)
        guard low < high else { return 0 }
        let width = high - low
        return (width == 64 ? UInt64.max : (UInt64(1) << width) &- 1) << (low - start)
    }

    /// Whether bits are pending (published, not written).
    var hasPending: Bool { pending.withLock { !$0.isEmpty } }

    /// Makes the pending bits part of the file: takes them, runs `syncingData` (the image file's
    /// sync: their data durable), then writes the bitmap sectors holding them. The caller syncs
    /// the metadata file afterwards. `syncingData` runs even with nothing pending (a flush must
    /// sync the data of in-place writes too). If it throws, the bits stay pending.
    func writePending(syncingData: () throws -> Void) throws {
        try writing.withLock { _ in
            let taken = pending.withLock { p in
                let all = p
                p = [:]
                return all
            }
            do {
                try syncingData()
            } catch {
                pending.withLock { p in
                    for (index, mask) in taken { p[index, default: 0] |= mask }
                }
                throw error
            }
            let wordsPerSector = Int(Self.sectorSize * 8 / 64)
            let sectors = Set(taken.keys.map { UInt64($0 / wordsPerSector) })
            for sector in sectors.sorted() {
                let lock = sectorLocks[Int(sector % UInt64(Self.stripeCount))]
                try lock.mutex.withLock { _ in try writeSector(sector, changing: nil) }
            }
        }
    }

    /// Sets the bits of `range` (clusters inside the bitmap): writes each bitmap sector holding
    /// them, then publishes them in memory. Not synced: the caller's flush makes them durable.
    /// For exclusive maintenance (resize); guest writes use ``publish(_:)``.
    func set(_ range: Range<UInt64>) throws {
        try change(range, to: true)
    }

    /// Clears the bits of `range` (check's repair, emptying after a commit; no request runs).
    func clear(_ range: Range<UInt64>) throws {
        try change(range, to: false)
    }

    private func change(_ range: Range<UInt64>, to value: Bool) throws {
        guard !range.isEmpty else { return }
        let bitsPerSector = Self.sectorSize * 8
        for sector in (range.lowerBound / bitsPerSector)...((range.upperBound - 1) / bitsPerSector) {
            let lock = sectorLocks[Int(sector % UInt64(Self.stripeCount))]
            try lock.mutex.withLock { _ in try writeSector(sector, changing: (range, value)) }
        }
    }

    /// Writes bitmap sector `sector` as the words hold it minus the pending bits, with `changing`
    /// (a range set or cleared) applied; then publishes that change in the words. Call holding the
    /// sector's stripe.
    private func writeSector(_ sector: UInt64, changing: (range: Range<UInt64>, value: Bool)?) throws {
        let s = storage
        let bitsPerSector = Self.sectorSize * 8
        let sectorClusters = (sector * bitsPerSector)..<((sector + 1) * bitsPerSector)
        let wordsPerSector = Int(bitsPerSector / 64)
        let firstWord = Int(sector * bitsPerSector / 64)
        // The sector's 64 words as they are, without the bits still pending (past the end: 0).
        var image = pending.withLock { p in
            (0..<wordsPerSector).map { s.word(firstWord + $0) & ~(p[firstWord + $0] ?? 0) }
        }
        var lastByte = s.clusters == 0 ? 0 : (s.clusters - 1) / 8
        if let (range, value) = changing {
            let mine = range.clamped(to: sectorClusters)
            for i in 0..<wordsPerSector {
                let mask = Self.mask(of: mine, inWord: firstWord + i)
                image[i] = value ? image[i] | mask : image[i] & ~mask
            }
            lastByte = max(lastByte, (range.upperBound - 1) / 8)
        }
        // Only the bytes the file holds bits in: up to the last byte of this change or of the
        // bitmap, whichever is further, within the sector.
        let count = Int(min(Self.sectorSize, lastByte + 1 - sector * Self.sectorSize))
        var bytes = [UInt8](repeating: 0, count: count)
        for i in 0..<count {
            bytes[i] = UInt8(truncatingIfNeeded: image[i / 8] >> (8 * UInt64(i % 8)))
        }
        try file.writeBytes(bytes, at: base + sector * Self.sectorSize)
        guard let (range, value) = changing else { return }
        // Only bits of clusters the bitmap covers are published.
        let inside = range.clamped(to: sectorClusters).clamped(to: 0..<s.clusters)
        guard !inside.isEmpty else { return }
        for index in Int(inside.lowerBound / 64)...Int((inside.upperBound - 1) / 64) {
            let mask = Self.mask(of: inside, inWord: index)
            if value {
                s.words[index].bitwiseOr(mask, ordering: .releasing)
            } else {
                s.words[index].bitwiseAnd(~mask, ordering: .releasing)
            }
        }
    }

    /// Makes room for `clusters` clusters (growing only); the new bits start as 0 in memory (the
    /// caller sets them with ``set(_:)``, writing them). Only from an exclusive operation.
    func grow(to clusters: UInt64) {
        guard clusters > storage.clusters else { return }
        storage = Storage(clusters: clusters, copying: storage)
    }
}
