import Foundation

/// An in-memory model of the guest disk with the engine's semantics, to compare an ``Image`` to.
///
/// It tracks each cluster's state the way the L2 tables do:
/// - unallocated: reads the backing content (zeroes past the backing's end, or without one);
/// - zero cluster: reads zeroes, hides the backing;
/// - allocated: its own bytes.
///
/// Operations, as the engine performs them:
/// - `write` allocates every cluster it touches; a newly allocated cluster starts as what the
///   cluster read before (backing data for an unallocated one, zeroes for a zero cluster);
/// - `writeZeroes`: partial clusters at either end are written as zero data (allocating them);
///   whole clusters that are unallocated or zero become zero clusters, allocated ones stay
///   allocated and read zero;
/// - `discard`: whole *allocated* clusters inside the range read zero (they stay allocated);
///   partial, unallocated and zero clusters are unchanged.
///
/// Sparse (clusters are stored only once allocated), so large virtual disks cost nothing.
struct ReferenceDisk: Sendable {
    enum ClusterState: Sendable, Equatable { case unallocated, zero, allocated }

    /// Guest size, bytes.
    let size: UInt64
    let clusterSize: UInt64
    /// The backing disk's content (empty: no backing).
    let backing: [UInt8]

    private var zeroClusters: Set<UInt64> = []
    private var content: [UInt64: [UInt8]] = [:]

    init(size: UInt64, clusterSize: UInt64, backing: [UInt8] = []) {
        self.size = size
        self.clusterSize = clusterSize
        self.backing = backing
    }

    var allocatedClusterCount: Int { content.count }

    func state(ofCluster c: UInt64) -> ClusterState {
        if content[c] != nil { return .allocated }
        if zeroClusters.contains(c) { return .zero }
        return .unallocated
    }

    // MARK: Reading

    func read(at offset: UInt64, count: Int) -> [UInt8] {
        var out = ModelKit.zeroes(count)
        out.withUnsafeMutableBytes { read(into: $0, at: offset) }
        return out
    }

    /// Reads `buffer.count` bytes at guest `offset` (must lie inside the disk).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) {
        precondition(offset + UInt64(buffer.count) <= size, "model read past the end")
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let c = pos / clusterSize
            let inCluster = Int(pos % clusterSize)
            let n = min(buffer.count - done, Int(clusterSize) - inCluster)
            let dst = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n])
            if let data = content[c] {
                data.withUnsafeBytes {
                    dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[inCluster..<inCluster + n]))
                }
            } else if zeroClusters.contains(c) {
                _ = memset(dst.baseAddress!, 0, dst.count)
            } else {
                readBacking(into: dst, at: pos)
            }
            done += n
        }
    }

    private func readBacking(into dst: UnsafeMutableRawBufferPointer, at pos: UInt64) {
        if !dst.isEmpty { memset(dst.baseAddress!, 0, dst.count) }
        guard pos < UInt64(backing.count) else { return }
        let start = Int(pos)
        let n = min(dst.count, backing.count - start)
        backing.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[start..<start + n])) }
    }

    /// The whole disk.
    func snapshot() -> [UInt8] { read(at: 0, count: Int(size)) }

    // MARK: Changing

    mutating func write(_ bytes: [UInt8], at offset: UInt64) {
        bytes.withUnsafeBytes { write($0, at: offset) }
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) {
        precondition(offset + UInt64(bytes.count) <= size, "model write past the end")
        var done = 0
        while done < bytes.count {
            let pos = offset + UInt64(done)
            let c = pos / clusterSize
            let inCluster = Int(pos % clusterSize)
            let n = min(bytes.count - done, Int(clusterSize) - inCluster)
            var data = content.removeValue(forKey: c) ?? materialize(c)
            zeroClusters.remove(c)
            data.withUnsafeMutableBytes { dst in
                UnsafeMutableRawBufferPointer(rebasing: dst[inCluster..<inCluster + n])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[done..<done + n]))
            }
            content[c] = data
            done += n
        }
    }

    /// What cluster `c` (not allocated) reads as, as a full cluster of bytes.
    private func materialize(_ c: UInt64) -> [UInt8] {
        var data = ModelKit.zeroes(Int(clusterSize))
        if !zeroClusters.contains(c) {
            data.withUnsafeMutableBytes { readBacking(into: $0, at: c * clusterSize) }
        }
        return data
    }

    /// Zeroes `[offset, offset+length)`: whole clusters become zero clusters (or are zeroed in
    /// place when allocated), partial ones at either end are written as zero data.
    mutating func writeZeroes(at offset: UInt64, length: UInt64) {
        let end = offset + length
        let alignedStart = Self.roundUp(offset, clusterSize)
        let alignedEnd = end / clusterSize * clusterSize
        guard alignedStart < alignedEnd else {
            writeZeroData(at: offset, length: length)
            return
        }
        writeZeroData(at: offset, length: alignedStart - offset)
        for c in (alignedStart / clusterSize)..<(alignedEnd / clusterSize) {
            if content[c] != nil {
                content[c] = ModelKit.zeroes(Int(clusterSize))
            } else {
                zeroClusters.insert(c)
            }
        }
        writeZeroData(at: alignedEnd, length: end - alignedEnd)
    }

    private mutating func writeZeroData(at offset: UInt64, length: UInt64) {
        guard length > 0 else { return }
        write(ModelKit.zeroes(Int(length)), at: offset)
    }

    /// Discards `[offset, offset+length)`; returns the guest ranges that now read zero because of
    /// it (whole allocated clusters).
    @discardableResult
    mutating func discard(at offset: UInt64, length: UInt64) -> [Range<UInt64>] {
        let end = offset + length
        let alignedStart = Self.roundUp(offset, clusterSize)
        let alignedEnd = end / clusterSize * clusterSize
        guard alignedStart < alignedEnd else { return [] }
        var zeroed: [Range<UInt64>] = []
        for c in (alignedStart / clusterSize)..<(alignedEnd / clusterSize) where content[c] != nil {
            content[c] = ModelKit.zeroes(Int(clusterSize))
            let r = (c * clusterSize)..<min(size, (c + 1) * clusterSize)
            if let last = zeroed.last, last.upperBound == r.lowerBound {
                zeroed[zeroed.count - 1] = last.lowerBound..<r.upperBound
            } else {
                zeroed.append(r)
            }
        }
        return zeroed
    }

    static func roundUp(_ value: UInt64, _ alignment: UInt64) -> UInt64 {
        (value + alignment - 1) / alignment * alignment
    }
}
