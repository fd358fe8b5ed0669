import Foundation
import QED

/// What a QED image should read as after a sequence of operations: an independent, simple
/// reference for the interop tests (kept sparse: content is stored in 4 KiB pages).
///
/// Semantics (the engine's contract):
/// - write: the bytes; clusters it touches become allocated (untouched parts keep what they read
///   before: backing data for unallocated clusters, zeroes for zero clusters).
/// - writeZeroes: zeroes; whole clusters stay or become zero clusters unless allocated.
/// - discard: whole *allocated* clusters inside the range read zeroes; everything else unchanged.
/// - resize: the size grows; new space reads the backing file (zeroes past its end) or zeroes.
final class ExpectedDisk {
    static let pageSize = 4096

    enum ClusterState: Equatable {
        /// A zero cluster (L2 entry 1).
        case zero
        /// Allocated; pages not in `pages` read zeroes (`zeroBase`) or the backing file.
        case data(zeroBase: Bool)
    }

    let clusterSize: UInt64
    private(set) var size: UInt64
    let backing: ExpectedDisk?
    /// Per guest cluster index; absent = unallocated.
    private(set) var clusters: [UInt64: ClusterState] = [:]
    /// Page overrides of allocated clusters, by page index.
    private var pages: [UInt64: [UInt8]] = [:]

    init(size: UInt64, clusterSize: UInt64, backing: ExpectedDisk? = nil) {
        self.size = size
        self.clusterSize = clusterSize
        self.backing = backing
    }

    private static let zeroPage = [UInt8](repeating: 0, count: pageSize)
    private var pagesPerCluster: UInt64 { clusterSize / UInt64(Self.pageSize) }

    /// The content of page `p` (all 4096 bytes, even past the size; nil if all zero).
    func page(_ p: UInt64) -> [UInt8]? {
        let c = p / pagesPerCluster
        switch clusters[c] {
        case nil: return backingPage(p)
        case .zero: return nil
        case .data(let zeroBase): return pages[p] ?? (zeroBase ? nil : backingPage(p))
        }
    }

    private func backingPage(_ p: UInt64) -> [UInt8]? {
        guard let backing, p * UInt64(Self.pageSize) < backing.size else { return nil }
        return backing.page(p)
    }

    /// Bytes `[offset, offset+count)` as a read would return them.
    func read(at offset: UInt64, count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var pos = offset
        let end = offset + UInt64(count)
        while pos < end {
            let p = pos / UInt64(Self.pageSize)
            let inPage = Int(pos % UInt64(Self.pageSize))
            let n = min(Self.pageSize - inPage, Int(end - pos))
            if let pg = page(p) {
                let dst = Int(pos - offset)
                out.replaceSubrange(dst..<dst + n, with: pg[inPage..<inPage + n])
            }
            pos += UInt64(n)
        }
        return out
    }

    func write(_ bytes: [UInt8], at offset: UInt64) {
        precondition(offset + UInt64(bytes.count) <= size)
        guard !bytes.isEmpty else { return }
        let end = offset + UInt64(bytes.count)
        for c in (offset / clusterSize)...((end - 1) / clusterSize) {
            switch clusters[c] {
            case nil: clusters[c] = .data(zeroBase: false)
            case .zero: clusters[c] = .data(zeroBase: true)
            case .data: break
            }
        }
        var pos = offset
        while pos < end {
            let p = pos / UInt64(Self.pageSize)
            let inPage = Int(pos % UInt64(Self.pageSize))
            let n = min(Self.pageSize - inPage, Int(end - pos))
            var pg = page(p) ?? Self.zeroPage
            let src = Int(pos - offset)
            pg.replaceSubrange(inPage..<inPage + n, with: bytes[src..<src + n])
            pages[p] = pg
            pos += UInt64(n)
        }
    }

    private func dropPages(ofCluster c: UInt64) {
        for p in (c * pagesPerCluster)..<((c + 1) * pagesPerCluster) { pages[p] = nil }
    }

    func writeZeroes(at offset: UInt64, length: UInt64) {
        precondition(offset + length <= size)
        let end = offset + length
        let first = (offset + clusterSize - 1) / clusterSize, last = end / clusterSize  // whole clusters [first, last)
        guard first < last else {
            write([UInt8](repeating: 0, count: Int(length)), at: offset)
            return
        }
        write([UInt8](repeating: 0, count: Int(first * clusterSize - offset)), at: offset)
        for c in first..<last {
            switch clusters[c] {
            case nil, .zero: clusters[c] = .zero
            case .data:
                dropPages(ofCluster: c)
                clusters[c] = .data(zeroBase: true)
            }
        }
        write([UInt8](repeating: 0, count: Int(end - last * clusterSize)), at: last * clusterSize)
    }

    func discard(at offset: UInt64, length: UInt64) {
        let end = offset + length
        let first = (offset + clusterSize - 1) / clusterSize, last = end / clusterSize
        guard first < last else { return }
        for c in first..<last {
            if case .data = clusters[c] {
                dropPages(ofCluster: c)
                clusters[c] = .data(zeroBase: true)
            }
        }
    }

    func resize(to newSize: UInt64) {
        precondition(newSize >= size)
        size = newSize
    }

    /// Indices of pages that may hold non-zero bytes inside the disk, ascending.
    func candidatePages() -> [UInt64] {
        var set = Set(pages.keys)
        if let backing { set.formUnion(backing.candidatePages()) }
        return set.filter { $0 * UInt64(Self.pageSize) < size }.sorted()
    }

    /// Writes the disk's content as a sparse raw file at `path` (exactly `size` bytes).
    func writeRaw(to path: String) throws {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? h.close() }
        for p in candidatePages() {
            guard let pg = page(p), pg.contains(where: { $0 != 0 }) else { continue }
            let start = p * UInt64(Self.pageSize)
            let n = Int(min(UInt64(Self.pageSize), size - start))
            try h.seek(toOffset: start)
            try h.write(contentsOf: Data(pg[0..<n]))
        }
        try h.truncate(atOffset: size)
    }
}
