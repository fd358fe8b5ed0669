/// Disks laid end to end: what `convert` reads when given several sources.
///
/// Units: guest bytes of the concatenation.
public final class ConcatenatedSource: @unchecked Sendable {
    /// The disks, in order.
    public let disks: [any DiskReader]
    /// Where each disk starts in the concatenation.
    let starts: [UInt64]
    /// Sum of the disks' sizes, bytes.
    public let size: UInt64

    /// The concatenation of `disks`.
    public init(_ disks: [any DiskReader]) {
        self.disks = disks
        var starts: [UInt64] = []
        var total: UInt64 = 0
        for d in disks {
            starts.append(total)
            total += d.virtualSize
        }
        self.starts = starts
        self.size = total
    }

    /// Calls `body(disk, offsetInDisk, offsetInBuffer, length)` for each disk piece of
    /// `[offset, offset+length)` (which must lie inside ``size``).
    func pieces(_ offset: UInt64, _ length: UInt64,
                _ body: (any DiskReader, UInt64, Int, UInt64) throws -> Void) rethrows {
        let end = offset + length
        for (i, disk) in disks.enumerated() {
            let s = starts[i], e = s + disk.virtualSize
            let lo = max(s, offset), hi = min(e, end)
            if lo < hi { try body(disk, lo - s, Int(lo - offset), hi - lo) }
        }
    }
}

/// Decides, chunk by chunk, what `convert` writes to its target: the zero detection of qemu-img's
/// `-S` and the comparison against the target's backing file (`-B`). ``Measure`` runs the same
/// planner, so its figure is the size of the file `convert` produces.
///
/// Units: bytes; offsets are target (= concatenated source) offsets.
struct ConvertPlanner: @unchecked Sendable {
    /// One write: `zero` means "make it read as zeroes", else copy the chunk buffer's bytes.
    struct Action: Equatable {
        var offset: UInt64
        var length: UInt64
        var zero: Bool
    }

    let source: ConcatenatedSource
    /// Zero-detection granularity in bytes (qemu-img `-S`); 0 writes everything.
    let sparseSize: UInt64
    /// Whether the target already reads as zeroes everywhere (a fresh target without backing).
    let targetIsZero: Bool
    /// The target's backing disk: blocks equal to it are skipped.
    let backing: (any DiskReader)?
    /// Bytes per chunk (a multiple of `sparseSize` when it is set).
    let chunkSize: UInt64

    init(source: ConcatenatedSource, sparseSize: UInt64, targetIsZero: Bool, backing: (any DiskReader)?,
         clusterSize: UInt64) {
        self.source = source
        self.sparseSize = sparseSize
        self.targetIsZero = targetIsZero && backing == nil
        self.backing = backing
        var chunk = max(UInt64(2 << 20), clusterSize)
        if sparseSize > 0 { chunk = (chunk + sparseSize - 1) / sparseSize * sparseSize }
        self.chunkSize = chunk
    }

    /// Number of chunks.
    var chunkCount: Int { Int((source.size + chunkSize - 1) / chunkSize) }

    /// The range of chunk `index`.
    func range(ofChunk index: Int) -> (offset: UInt64, length: UInt64) {
        let start = UInt64(index) * chunkSize
        return (start, min(chunkSize, source.size - start))
    }

    /// Reads chunk `index` into `buffer` (at least ``chunkSize`` bytes) and returns the writes.
    func plan(chunk index: Int, buffer: UnsafeMutableRawBufferPointer,
              backingBuffer: UnsafeMutableRawBufferPointer) throws -> [Action] {
        let (start, length) = range(ofChunk: index)
        let n = Int(length)
        let buf = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
        let s = Int(sparseSize)
        // Read the source; ranges known to be zero are not read. Their bytes are only looked at
        // where a -S block is not wholly inside them, so only those parts are zero-filled.
        var knownZero: [Range<Int>] = []
        try source.pieces(start, length) { disk, offset, at, count in
            if sparseSize == 0 {
                try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[at..<at + Int(count)]), at: offset)
                return
            }
            for e in try disk.extents(at: offset, length: count) {
                let lo = at + Int(e.offset - offset), hi = lo + Int(e.length)
                if e.zero {
                    let innerLo = min(hi, (lo + s - 1) / s * s), innerHi = max(innerLo, hi / s * s)
                    fillZero(buf, lo..<innerLo)
                    fillZero(buf, innerHi..<hi)
                    if let last = knownZero.last, last.upperBound == lo {
                        knownZero[knownZero.count - 1] = last.lowerBound..<hi
                    } else {
                        knownZero.append(lo..<hi)
                    }
                } else {
                    try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[lo..<hi]), at: e.offset)
                }
            }
        }
        if knownZero.count == 1 && knownZero[0] == 0..<n && targetIsZero {
            return []  // nothing to write, nothing to scan
        }
        if sparseSize == 0 {
            return [Action(offset: start, length: length, zero: false)]
        }
        var backingView: UnsafeRawBufferPointer?
        if let backing {
            let bb = UnsafeMutableRawBufferPointer(rebasing: backingBuffer[0..<n])
            let size = backing.virtualSize
            let inside = start < size ? Int(min(length, size - start)) : 0
            if inside > 0 { try backing.read(into: UnsafeMutableRawBufferPointer(rebasing: bb[0..<inside]), at: start) }
            if inside < n { UnsafeMutableRawBufferPointer(rebasing: bb[inside...]).initializeMemory(as: UInt8.self, repeating: 0) }
            backingView = UnsafeRawBufferPointer(bb)
        }
        var actions: [Action] = []
        func emit(_ lo: Int, _ hi: Int, zero: Bool) {
            let off = start + UInt64(lo), len = UInt64(hi - lo)
            if var last = actions.last, last.zero == zero, last.offset + last.length == off {
                last.length += len
                actions[actions.count - 1] = last
            } else {
                actions.append(Action(offset: off, length: len, zero: zero))
            }
        }
        var zeroIndex = 0
        var lo = 0
        while lo < n {
            let hi = min(n, lo + s)
            // Is the block inside a range the source reported as zero?
            while zeroIndex < knownZero.count && knownZero[zeroIndex].upperBound <= lo { zeroIndex += 1 }
            let reportedZero = zeroIndex < knownZero.count && knownZero[zeroIndex].contains(lo)
                && knownZero[zeroIndex].upperBound >= hi
            let block = UnsafeRawBufferPointer(rebasing: buf[lo..<hi])
            let isZero = reportedZero || isAllZero(block)
            if let backingView {
                let other = UnsafeRawBufferPointer(rebasing: backingView[lo..<hi])
                let same = isZero ? isAllZero(other) : memcmp(block.baseAddress!, other.baseAddress!, hi - lo) == 0
                if !same { emit(lo, hi, zero: isZero) }
            } else if !isZero {
                emit(lo, hi, zero: false)
            } else if !targetIsZero {
                emit(lo, hi, zero: true)
            }
            lo = hi
        }
        return actions
    }

    private func fillZero(_ buffer: UnsafeMutableRawBufferPointer, _ range: Range<Int>) {
        guard !range.isEmpty else { return }
        UnsafeMutableRawBufferPointer(rebasing: buffer[range]).initializeMemory(as: UInt8.self, repeating: 0)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
