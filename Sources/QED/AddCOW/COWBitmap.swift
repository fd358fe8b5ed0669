import Synchronization

/// An add-cow image's COW bitmap: one bit per guest cluster (1 = the cluster is in the image
/// file, 0 = read the backing file), held in memory and written through to the metadata file.
///
/// Locking (docs/design.md, "Locks"):
/// - `bits` (Mutex) guards the in-memory bytes; lookups hold it for a scan of a few words only.
/// - `sectorLocks` (striped Mutexes, by 512-byte bitmap sector) serialise the read-modify-write of
///   one sector: a setter copies the sector from memory, adds its bits, writes the sector and only
///   then publishes the bits in memory, all under its stripe. So two allocations whose bits share
///   a sector never lose each other's bits, a bit is never visible before it is written, and
///   allocations in other sectors do not wait. A thread holds one stripe at a time.
///
/// Units: clusters, and bytes of the metadata file for ``base``.
final class COWBitmap: Sendable {
    /// One stripe of the sector locks (a class, because `Mutex` cannot live in an array).
    private final class SectorLock: Sendable {
        /// Guards nothing but the order of writes to the sectors hashed to this stripe.
        let mutex = Mutex(())
    }

    private static let sectorSize: UInt64 = 512
    private static let stripeCount = 64

    /// The metadata file the bitmap lives in.
    let file: any BlockFile
    /// Byte offset of the bitmap in `file` (HEADER_SIZE).
    let base: UInt64
    /// The bitmap bytes of clusters `[0, clusters)`; bits past the last cluster are kept 0.
    private let bits: Mutex<(bytes: [UInt8], clusters: UInt64)>
    private let sectorLocks: [SectorLock]

    /// Loads the bits of `clusters` clusters from `file` at `base` (bytes past the file's end read
    /// as 0); bits past the last cluster are dropped (ignored on read).
    init(file: any BlockFile, base: UInt64, clusters: UInt64) throws {
        self.file = file
        self.base = base
        var bytes = [UInt8](repeating: 0, count: Int((clusters + 7) / 8))
        try bytes.withUnsafeMutableBytes { try file.readSkippingHoles(into: $0, at: base, zeroed: true) }
        Self.clearBits(from: clusters, in: &bytes)
        bits = Mutex((bytes, clusters))
        sectorLocks = (0..<Self.stripeCount).map { _ in SectorLock() }
    }

    private static func clearBits(from cluster: UInt64, in bytes: inout [UInt8]) {
        let byte = Int(cluster / 8)
        guard byte < bytes.count else { return }
        bytes[byte] &= UInt8((1 << (cluster % 8)) - 1)
        for i in (byte + 1)..<bytes.count { bytes[i] = 0 }
    }

    /// Clusters the bitmap covers.
    var clusters: UInt64 { bits.withLock { $0.clusters } }

    /// Whether cluster `c` is in the image file.
    func isSet(_ c: UInt64) -> Bool {
        bits.withLock { $0.bytes[Int(c / 8)] & (1 << (c % 8)) != 0 }
    }

    /// The state of cluster `c` and how many clusters from `c` (at most `limit`, ≥ 1) share it.
    func run(from c: UInt64, limit: UInt64) -> (set: Bool, count: UInt64) {
        bits.withLock { state in
            let bytes = state.bytes
            func bit(_ i: UInt64) -> Bool { bytes[Int(i / 8)] & (1 << (i % 8)) != 0 }
            let first = bit(c)
            var n: UInt64 = 1
            let full: UInt8 = first ? 0xFF : 0x00
            while n < limit {
                let i = c + n
                if i % 8 == 0, n + 8 <= limit, bytes[Int(i / 8)] == full {
                    n += 8
                    continue
                }
                if bit(i) != first { break }
                n += 1
            }
            return (first, n)
        }
    }

    /// Clusters whose bit is set.
    var setCount: UInt64 {
        bits.withLock { $0.bytes.reduce(0) { $0 + UInt64($1.nonzeroBitCount) } }
    }

    /// Sets the bits of `range` (clusters inside the bitmap): writes each bitmap sector holding
    /// them, then publishes them in memory. Not synced: the caller's flush makes them durable.
    func set(_ range: Range<UInt64>) throws {
        try change(range, to: true)
    }

    /// Clears the bits of `range` (check's repair; no request runs).
    func clear(_ range: Range<UInt64>) throws {
        try change(range, to: false)
    }

    private func change(_ range: Range<UInt64>, to value: Bool) throws {
        guard !range.isEmpty else { return }
        let firstSector = range.lowerBound / 8 / Self.sectorSize
        let lastSector = (range.upperBound - 1) / 8 / Self.sectorSize
        for sector in firstSector...lastSector {
            let lock = sectorLocks[Int(sector % UInt64(Self.stripeCount))]
            try lock.mutex.withLock { _ in
                let sectorClusters = (sector * Self.sectorSize * 8)..<((sector + 1) * Self.sectorSize * 8)
                let mine = range.clamped(to: sectorClusters)
                var image = bits.withLock { state -> [UInt8] in
                    let start = Int(sector * Self.sectorSize)
                    let end = min(state.bytes.count, start + Int(Self.sectorSize))
                    return start < end ? Array(state.bytes[start..<end]) : []
                }
                let firstByteCluster = sector * Self.sectorSize * 8
                for c in mine {
                    let i = Int((c - firstByteCluster) / 8)
                    if i >= image.count { image.append(contentsOf: repeatElement(0, count: i + 1 - image.count)) }
                    if value { image[i] |= 1 << (c % 8) } else { image[i] &= ~(1 << (c % 8)) }
                }
                try file.writeBytes(image, at: base + sector * Self.sectorSize)
                bits.withLock { state in
                    for c in mine where c < state.clusters {
                        let i = Int(c / 8)
                        if value { state.bytes[i] |= 1 << (c % 8) } else { state.bytes[i] &= ~(1 << (c % 8)) }
                    }
                }
            }
        }
    }

    /// Makes room for `clusters` clusters (growing only); the new bits start as 0 in memory (the
    /// caller sets them with ``set(_:)``, writing them).
    func grow(to clusters: UInt64) {
        bits.withLock { state in
            guard clusters > state.clusters else { return }
            let needed = Int((clusters + 7) / 8)
            if needed > state.bytes.count {
                state.bytes.append(contentsOf: repeatElement(0, count: needed - state.bytes.count))
            }
            state.clusters = clusters
        }
    }
}
