import QED

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Disks laid end to end: what `convert` reads when given several sources.
///
/// Units: guest bytes of the concatenation. Immutable after `init` (every stored property is a
/// `let` of a `Sendable` type), hence `Sendable`.
final class ConcatenatedSource: Sendable {
    /// The disks, in order.
    let disks: [any Disk]
    /// Where each disk starts in the concatenation.
    let starts: [UInt64]
    /// Sum of the disks' sizes, bytes.
    let size: UInt64

    /// The concatenation of `disks`; throws ``QEDError/Code/outOfRange`` when their sizes add up
    /// to more than 64 bits can count.
    init(_ disks: [any Disk]) throws {
        self.disks = disks
        var starts: [UInt64] = []
        var total: UInt64 = 0
        for d in disks {
            starts.append(total)
            let (sum, overflow) = total.addingReportingOverflow(d.virtualSize)
            guard !overflow else {
                throw QEDError(
                    .outOfRange, "the total size of the sources up to \(d.path) overflows 64 bits",
                    value: d.virtualSize, path: d.path)
            }
            total = sum
        }
        self.starts = starts
        size = total
    }

    /// Calls `body(disk, offsetInDisk, offsetInBuffer, length)` for each disk piece of
    /// `[offset, offset+length)` (which must lie inside ``size``).
    func pieces(
        _ offset: UInt64, _ length: UInt64,
        _ body: (any Disk, UInt64, Int, UInt64) throws -> Void
    ) rethrows {
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
/// The source's extents decide what is looked at: ranges it reports as zero are neither read nor
/// scanned, data stored in a source's own file (``MappableDisk``) is read through one mapping of
/// that file rather than copied out — the zero scan and the target's `pwrite` then work on the page
/// cache's pages, one copy in all — and
/// anything else (backing-file data, -S 0) is read into the worker's buffer.
///
/// Units: bytes; offsets are target (= concatenated source) offsets.
struct ConvertPlanner: Sendable {
    /// One write: `zero` means "make it read as zeroes", else write the `length` bytes at `bytes`.
    struct Action: Equatable {
        var offset: UInt64
        var length: UInt64
        var zero: Bool
        /// The data (nil for zero writes): in the worker's buffer or in a source mapping.
        var bytes: UnsafeRawPointer?
    }

    /// The writes for one chunk and the mapping windows their bytes live in (kept alive with the
    /// plan; where ``usesBuffer``, also valid only until the worker's buffer is reused).
    struct Plan {
        var actions: [Action] = []
        var windows: [FileMapping] = []
        /// Whether some action's bytes are in the worker's buffer (which must then not be reused
        /// before the plan is written).
        var usesBuffer = false
    }

    /// Part of a chunk as read: `[lo, hi)` chunk-relative, its bytes at `bytes` (nil: known zero),
    /// in a mapping or in the buffer.
    private struct Segment {
        var lo: Int
        var hi: Int
        var bytes: UnsafeRawPointer?
        var mapped = false
    }

    let source: ConcatenatedSource
    /// Zero-detection granularity in bytes (qemu-img `-S`); 0 writes everything.
    let sparseSize: UInt64
    /// Whether the target already reads as zeroes everywhere (a fresh target without backing).
    let targetIsZero: Bool
    /// The target's backing disk: blocks equal to it are skipped.
    let backing: (any Disk)?
    /// Bytes per chunk (a multiple of `sparseSize` when it is set).
    let chunkSize: UInt64
    /// Windowed read-only mappings of the mappable source files.
    private let mappedSources: [ObjectIdentifier: WindowedMapping]

    /// `mapSources`: whether source data may be mapped instead of read (``MappableDisk``).
    init(
        source: ConcatenatedSource, sparseSize: UInt64, targetIsZero: Bool, backing: (any Disk)?,
        clusterSize: UInt64, mapSources: Bool = true,
        windowSize: UInt64 = WindowedMapping.defaultWindowSize
    ) {
        self.source = source
        self.sparseSize = sparseSize
        self.targetIsZero = targetIsZero && backing == nil
        self.backing = backing
        // 8 MiB: the in-order writer is convert's critical path, and fewer, larger writes (one
        // fallocate and one pwrite per chunk) made qed -> raw ~9 % faster than 2 MiB chunks
        // (docs/performance.md). Worker buffers are only touched for sources that cannot be mapped.
        var chunk = max(UInt64(8 << 20), clusterSize)
        if sparseSize > 0 { chunk = (chunk + sparseSize - 1) / sparseSize * sparseSize }
        chunkSize = chunk
        var maps: [ObjectIdentifier: WindowedMapping] = [:]
        if mapSources {
            for disk in source.disks {
                guard let file = (disk as? any MappableDisk)?.mappableFile, let length = try? file.length(),
                    length > 0
                else { continue }
                maps[ObjectIdentifier(disk)] = WindowedMapping(file: file, length: length, windowSize: windowSize)
            }
        }
        mappedSources = maps
    }

    /// Number of chunks.
    var chunkCount: Int { Int((source.size + chunkSize - 1) / chunkSize) }

    /// The range of chunk `index`.
    func range(ofChunk index: Int) -> (offset: UInt64, length: UInt64) {
        let start = UInt64(index) * chunkSize
        return (start, min(chunkSize, source.size - start))
    }

    /// Looks at chunk `index` and returns its writes. `buffer` (at least ``chunkSize`` bytes) holds
    /// what had to be read; `backingBuffer` (as large, with a backing file) the backing's bytes.
    func plan(
        chunk index: Int, buffer: UnsafeMutableRawBufferPointer,
        backingBuffer: UnsafeMutableRawBufferPointer
    ) throws -> Plan {
        let (start, length) = range(ofChunk: index)
        let n = Int(length)
        let buf = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
        var plan = Plan()
        if sparseSize == 0 {
            // Everything is written, zeroes included: read it all.
            try source.pieces(start, length) { disk, offset, at, count in
                try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[at..<at + Int(count)]), at: offset)
            }
            plan.actions = [
                Action(offset: start, length: length, zero: false, bytes: UnsafeRawPointer(buf.baseAddress!))
            ]
            plan.usesBuffer = true
            return plan
        }
        let segments = try gather(start: start, length: length, into: buf, windows: &plan.windows)
        plan.usesBuffer = segments.contains { $0.bytes != nil && $0.mapped == false }
        if targetIsZero && segments.allSatisfy({ $0.bytes == nil }) {
            return Plan()  // nothing to write, nothing to scan
        }
        if let backing, segments.allSatisfy({ $0.bytes == nil }), try backingReadsZero(backing, start, length) {
            return Plan()  // zeroes over zeroes: nothing to write, no backing bytes to read
        }
        var backingView: UnsafeRawBufferPointer?
        if let backing {
            // The backing file may be shorter than the target: past its end the target reads zeroes.
            let bb = UnsafeMutableRawBufferPointer(rebasing: backingBuffer[0..<n])
            try backing.readZeroFillingPastEnd(into: bb, at: start)
            backingView = UnsafeRawBufferPointer(bb)
        }
        func emit(_ lo: Int, _ hi: Int, zero: Bool, _ bytes: UnsafeRawPointer?) {
            let off = start + UInt64(lo), len = UInt64(hi - lo)
            if let last = plan.actions.last, last.zero == zero, last.offset + last.length == off,
                zero || last.bytes! + Int(last.length) == bytes!
            {
                plan.actions[plan.actions.count - 1].length += len
            } else {
                plan.actions.append(Action(offset: off, length: len, zero: zero, bytes: zero ? nil : bytes))
            }
        }
        let s = Int(sparseSize)
        var segment = 0
        var lo = 0
        while lo < n {
            let hi = min(n, lo + s)
            while segments[segment].hi <= lo { segment += 1 }
            let seg = segments[segment]
            // The block's bytes: in place when one segment holds it all, else assembled in the buffer.
            var bytes: UnsafeRawPointer?
            let isZero: Bool
            if hi <= seg.hi {
                bytes = seg.bytes.map { $0 + (lo - seg.lo) }
                isZero = bytes.map { isAllZero(UnsafeRawBufferPointer(start: $0, count: hi - lo)) } ?? true
            } else {
                assemble(lo..<hi, from: segments, startingAt: segment, into: buf)
                plan.usesBuffer = true
                bytes = UnsafeRawPointer(buf.baseAddress! + lo)
                isZero = isAllZero(UnsafeRawBufferPointer(start: bytes, count: hi - lo))
            }
            // Written unless it equals what the target reads there already: the backing's bytes,
            // or zeroes on a zeroed target.
            let needed: Bool
            if let backingView {
                let other = UnsafeRawBufferPointer(rebasing: backingView[lo..<hi])
                needed = !(isZero ? isAllZero(other) : memcmp(bytes!, other.baseAddress!, hi - lo) == 0)
            } else {
                needed = !isZero || !targetIsZero
            }
            if needed { emit(lo, hi, zero: isZero, bytes) }
            lo = hi
        }
        return plan
    }

    /// Whether `backing` reads as zeroes over `[start, start+length)` by its block status (past its
    /// end it reads zeroes), so that a chunk of zeroes need not be compared byte by byte.
    private func backingReadsZero(_ backing: any Disk, _ start: UInt64, _ length: UInt64) throws -> Bool {
        let size = backing.virtualSize
        guard start < size else { return true }
        return try backing.extents(at: start, length: min(length, size - start)).allSatisfy { $0.zero || !$0.present }
    }

    /// The chunk's segments in order, covering `[0, length)`: known-zero ranges, mapped data and
    /// data read into `buf` at its own position.
    private func gather(
        start: UInt64, length: UInt64, into buf: UnsafeMutableRawBufferPointer,
        windows: inout [FileMapping]
    ) throws -> [Segment] {
        var segments: [Segment] = []
        try source.pieces(start, length) { disk, offset, at, count in
            let mapped = mappedSources[ObjectIdentifier(disk)]
            for e in try disk.extents(at: offset, length: count) {
                let lo = at + Int(e.offset - offset), hi = lo + Int(e.length)
                if e.zero {
                    if let last = segments.last, last.bytes == nil, last.hi == lo {
                        segments[segments.count - 1].hi = hi
                    } else {
                        segments.append(Segment(lo: lo, hi: hi, bytes: nil))
                    }
                    continue
                }
                // Mapped where possible, one segment per window; the rest is read into the buffer.
                var pos = lo
                if let mapped, e.depth == 0, let host = e.hostOffset, host + UInt64(hi - lo) <= mapped.length {
                    while pos < hi, let (window, bytes) = mapped.bytes(at: host + UInt64(pos - lo), maxLength: hi - pos)
                    {
                        if windows.last !== window { windows.append(window) }
                        segments.append(Segment(lo: pos, hi: pos + bytes.count, bytes: bytes.baseAddress, mapped: true))
                        pos += bytes.count
                    }
                }
                if pos < hi {
                    let slice = UnsafeMutableRawBufferPointer(rebasing: buf[pos..<hi])
                    try disk.read(into: slice, at: e.offset + UInt64(pos - lo))
                    segments.append(Segment(lo: pos, hi: hi, bytes: UnsafeRawPointer(slice.baseAddress)))
                }
            }
        }
        return segments
    }

    /// Copies block `range`, which spans several segments, into `buf` at its own position.
    private func assemble(
        _ range: Range<Int>, from segments: [Segment], startingAt first: Int,
        into buf: UnsafeMutableRawBufferPointer
    ) {
        var i = first
        while i < segments.count && segments[i].lo < range.upperBound {
            let seg = segments[i]
            let lo = max(seg.lo, range.lowerBound), hi = min(seg.hi, range.upperBound)
            let target = buf.baseAddress! + lo
            if let bytes = seg.bytes {
                let from = bytes + (lo - seg.lo)
                if from != UnsafeRawPointer(target) { target.copyMemory(from: from, byteCount: hi - lo) }
            } else {
                target.initializeMemory(as: UInt8.self, repeating: 0, count: hi - lo)
            }
            i += 1
        }
    }
}

extension ConvertPlanner {
    /// The sector size salvage reads in, bytes (QEMU's BDRV_SECTOR_SIZE).
    static let salvageSector = 512

    /// `--salvage`'s plan for a chunk whose normal planning failed: reads it 512 bytes at a time
    /// into `buffer`, zeroes (and reports to `warning`) each sector that fails, and writes the whole
    /// chunk as data.
    func salvage(
        chunk index: Int, buffer: UnsafeMutableRawBufferPointer, warning: (@Sendable (String) -> Void)?
    ) -> Plan {
        let (start, length) = range(ofChunk: index)
        let n = Int(length)
        var at = 0
        while at < n {
            let count = min(ConvertPlanner.salvageSector, n - at)
            let sector = UnsafeMutableRawBufferPointer(rebasing: buffer[at..<at + count])
            do {
                try source.pieces(start + UInt64(at), UInt64(count)) { disk, offset, within, bytes in
                    let part = UnsafeMutableRawBufferPointer(rebasing: sector[within..<within + Int(bytes)])
                    try disk.read(into: part, at: offset)
                }
            } catch {
                sector.initializeMemory(as: UInt8.self, repeating: 0)
                warning?("error while reading offset \(start + UInt64(at)): \(ConvertPlanner.reason(error))")
            }
            at += count
        }
        var plan = Plan()
        if let base = buffer.baseAddress, n > 0 {
            plan.actions = [Action(offset: start, length: length, zero: false, bytes: UnsafeRawPointer(base))]
            plan.usesBuffer = true
        }
        return plan
    }

    /// `strerror` of the error's system call, as qemu-img words a failed read.
    static func reason(_ error: any Error) -> String {
        if let e = error as? QEDError, let cause = e.cause { return cause.reason }
        return String(cString: strerror(EIO))
    }
}
