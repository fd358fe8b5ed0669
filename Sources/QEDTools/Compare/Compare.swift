public import QED

/// `qemu-img compare`: whether two disks show the same content.
///
/// Content is compared in 512-byte sectors, so a mismatch is reported at the start of the first
/// differing sector, as QEMU does. Ranges both disks know to be zero are skipped unread. When the
/// sizes differ, the common part is compared first, then the longer disk's tail must read as zeroes.
public enum Compare {
    /// How to compare.
    public struct Options: Sendable {
        /// Also fail on different sizes or block status (`-s`).
        public var strict = false
        /// Progress reports (fraction of the longer disk's bytes compared).
        public var progress: ProgressHandler?
        /// Stops between extents and reads.
        public var cancellation: Cancellation?

        /// Default options: content only.
        public init() {}
    }

    /// How the comparison ended.
    public enum Outcome: Sendable, Equatable {
        /// Same visible content ("Images are identical.").
        case identical
        /// First differing byte's sector starts at this guest offset (bytes).
        case contentMismatch(offset: UInt64)
        /// Strict mode: the sizes differ.
        case strictSizeMismatch
        /// Strict mode: allocation status differs at this guest offset (bytes).
        case strictStatusMismatch(offset: UInt64)
    }

    /// What the comparison found.
    public struct Result: Sendable, Equatable {
        /// How the comparison ended.
        public var outcome: Outcome
        /// Whether the comparison got past the common part of disks of different sizes (QEMU then
        /// prints "Warning: Image size mismatch!" before the outcome).
        public var sizeMismatchWarning: Bool
    }

    /// Bytes compared per read.
    static let bufferSize = 1 << 20

    /// Compares `a` and `b`.
    public static func run(_ a: any Disk, _ b: any Disk, options: Options) throws -> Result {
        let strict = options.strict, cancellation = options.cancellation
        let sizeA = a.virtualSize, sizeB = b.virtualSize
        let common = min(sizeA, sizeB)
        let counter = ProgressCounter(total: max(sizeA, sizeB), handler: options.progress)
        if strict && sizeA != sizeB {
            return Result(outcome: .strictSizeMismatch, sizeMismatchWarning: false)
        }
        var bufA = [UInt8](repeating: 0, count: bufferSize)
        var bufB = [UInt8](repeating: 0, count: bufferSize)
        var cursorA = ExtentCursor(disk: a), cursorB = ExtentCursor(disk: b)
        var pos: UInt64 = 0
        while pos < common {
            try cancellation?.check()
            let ea = try cursorA.extent(at: pos), eb = try cursorB.extent(at: pos)
            let chunk = min(ea.offset + ea.length, eb.offset + eb.length, common) - pos
            if strict && Status(ea, size: sizeA) != Status(eb, size: sizeB) {
                return Result(outcome: .strictStatusMismatch(offset: pos), sizeMismatchWarning: false)
            }
            if !(ea.zero && eb.zero) {
                var done: UInt64 = 0
                while done < chunk {
                    let n = Int(min(chunk - done, UInt64(bufferSize)))
                    try bufA.withUnsafeMutableBytes {
                        try a.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: pos + done)
                    }
                    try bufB.withUnsafeMutableBytes {
                        try b.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: pos + done)
                    }
                    if let sector = firstDifferingSector(bufA, bufB, count: n) {
                        return Result(
                            outcome: .contentMismatch(offset: pos + done + UInt64(sector)),
                            sizeMismatchWarning: false)
                    }
                    done += UInt64(n)
                }
            }
            pos += chunk
            counter.add(chunk)
        }
        guard sizeA != sizeB else {
            counter.finish()
            return Result(outcome: .identical, sizeMismatchWarning: false)
        }
        let longer = sizeA > sizeB ? a : b
        var cursor = ExtentCursor(disk: longer)
        let end = max(sizeA, sizeB)
        while pos < end {
            try cancellation?.check()
            let e = try cursor.extent(at: pos)
            let chunk = min(e.offset + e.length, end) - pos
            if !e.zero {
                var done: UInt64 = 0
                while done < chunk {
                    let n = Int(min(chunk - done, UInt64(bufferSize)))
                    try bufA.withUnsafeMutableBytes {
                        try longer.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: pos + done)
                    }
                    if let sector = firstNonZeroSector(bufA, count: n) {
                        return Result(
                            outcome: .contentMismatch(offset: pos + done + UInt64(sector)),
                            sizeMismatchWarning: true)
                    }
                    done += UInt64(n)
                }
            }
            pos += chunk
            counter.add(chunk)
        }
        counter.finish()
        return Result(outcome: .identical, sizeMismatchWarning: true)
    }

    /// Block status as `bdrv_block_status_above` reports it, for strict mode.
    struct Status: Equatable {
        var allocated, zero, data, offsetValid, eof: Bool
        init(_ e: Extent, size: UInt64) {
            allocated = e.present
            zero = e.zero
            data = e.data
            offsetValid = e.hostOffset != nil
            eof = e.offset + e.length >= size
        }
    }

    static func firstDifferingSector(_ a: [UInt8], _ b: [UInt8], count: Int) -> Int? {
        var i = 0
        while i < count {
            let n = min(512, count - i)
            let same = a.withUnsafeBytes { pa in
                b.withUnsafeBytes { pb in memcmp(pa.baseAddress! + i, pb.baseAddress! + i, n) == 0 }
            }
            if !same { return i }
            i += n
        }
        return nil
    }

    static func firstNonZeroSector(_ a: [UInt8], count: Int) -> Int? {
        var i = 0
        while i < count {
            let n = min(512, count - i)
            if !a.withUnsafeBytes({ isAllZero(UnsafeRawBufferPointer(rebasing: $0[i..<i + n])) }) { return i }
            i += n
        }
        return nil
    }
}

/// Walks a disk's extents forward, fetching them in windows (so huge disks are not mapped at once).
struct ExtentCursor {
    let disk: any Disk
    private var extents: [Extent] = []
    private var index = 0
    static let window: UInt64 = 1 << 30

    init(disk: any Disk) { self.disk = disk }

    /// The extent holding guest byte `pos` (< size), trimmed to start at `pos`.
    mutating func extent(at pos: UInt64) throws -> Extent {
        while index < extents.count, extents[index].offset + extents[index].length <= pos { index += 1 }
        if index >= extents.count || extents[index].offset > pos {
            let length = min(Self.window, disk.virtualSize - pos)
            extents = try disk.extents(at: pos, length: length)
            index = 0
        }
        var e = extents[index]
        let cut = pos - e.offset
        e.offset = pos
        e.length -= cut
        if let h = e.hostOffset { e.hostOffset = h + cut }
        return e
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
