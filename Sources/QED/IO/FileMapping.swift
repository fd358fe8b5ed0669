import CQEDSys
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A file whose bytes can be mapped read-only into memory (``FileMapping``): a capability some
/// ``BlockFile``s have (``PosixFile``), asked for with `as? any MappableFile`.
package protocol MappableFile: BlockFile {
    /// The descriptor to map, valid while the file is open.
    var mappingDescriptor: Int32 { get }
}

extension PosixFile: MappableFile {
    package var mappingDescriptor: Int32 { rawDescriptor }
}

/// A read-only shared mapping of part of a ``MappableFile``: the page cache's own pages, so looking at
/// the bytes and writing them elsewhere costs one copy instead of the two of `pread` + `pwrite`.
/// Unmapped on deinit; ``bytes`` is valid while the object lives.
///
/// Only for files nobody can shrink meanwhile (touching a page past the end of the file raises
/// SIGBUS): `convert` maps sources it holds QEMU's read lock on (which keeps writers out), never
/// force-shared or unlocked ones.
///
/// `@unchecked Sendable`: every property is a `let` set in `init`, and the pages are mapped
/// read-only (`PROT_READ`), so any thread may read ``bytes`` while the object lives.
package final class FileMapping: @unchecked Sendable {
    /// The requested bytes.
    let bytes: UnsafeRawBufferPointer
    private let base: UnsafeMutableRawPointer
    private let mappedLength: Int

    private static let pageSize = UInt64(max(4096, sysconf(Int32(_SC_PAGESIZE))))

    /// Maps `length` bytes of `file` at byte `offset` (any alignment); nil if the system refuses.
    /// Page tables are filled as pages are touched or ``populate(_:)``d.
    init?(file: any MappableFile, offset: UInt64, length: Int) {
        guard length > 0 else { return nil }
        let start = offset & ~(FileMapping.pageSize - 1)
        let delta = Int(offset - start)
        guard let p = qedsys_map_read(file.mappingDescriptor, Int64(start), length + delta) else { return nil }
        base = p
        mappedLength = length + delta
        bytes = UnsafeRawBufferPointer(start: p + delta, count: length)
    }

    /// Fills the page tables of `range` (offsets into ``bytes``) in one call, so the bytes are
    /// then read without a fault per page. Best effort.
    func populate(_ range: Range<Int>) {
        guard !range.isEmpty else { return }
        let page = Int(FileMapping.pageSize)
        let from =
            (bytes.baseAddress! + range.lowerBound)
            - (Int(bitPattern: bytes.baseAddress! + range.lowerBound) & (page - 1))
        let to = bytes.baseAddress! + range.upperBound
        _ = qedsys_populate_read(UnsafeMutableRawPointer(mutating: from), to - from)
    }

    deinit { _ = qedsys_unmap(base, mappedLength) }
}

/// A disk whose own data extents (depth 0, with a host offset) may be read through a
/// ``FileMapping`` of ``mappableFile``.
package protocol MappableDisk {
    /// The host file holding depth-0 data, or nil when it must be read with `read` (not a
    /// ``MappableFile``, or opened force-shared or unlocked, so a writer might shrink it).
    var mappableFile: (any MappableFile)? { get }
}

extension Image: MappableDisk {
    package var mappableFile: (any MappableFile)? {
        options.locking && !options.forceShare ? file as? any MappableFile : nil
    }
}

extension RawImage: MappableDisk {
    package var mappableFile: (any MappableFile)? { isProtectedFromWriters ? file as? any MappableFile : nil }
}

/// Read-only mappings of one source file in aligned windows, made on demand and shared by the
/// chunks that use them. Mapping per chunk cost an `mmap` and a `munmap` — a TLB shootdown on
/// every CPU — per 2 MiB; one mapping of the whole file would hold page tables for all of it
/// (2 GB of them for a 1 TB source). Windows are kept in a small cache; one the cache has let go
/// is unmapped when the last plan holding it is dropped.
package final class WindowedMapping: Sendable {
    /// Default bytes per window.
    package static let defaultWindowSize: UInt64 = 64 << 20
    /// Windows kept mapped by the cache (the plans in flight span one or two).
    static let cachedWindows = 4

    let file: any MappableFile
    /// File length in bytes when mapped; nothing at or past it is ever mapped.
    package let length: UInt64
    /// Bytes per window (a multiple of the page size).
    let windowSize: UInt64
    /// The cached windows by index (file offset / ``windowSize``).
    private let windows = Mutex<[UInt64: FileMapping]>([:])

    package init(file: any MappableFile, length: UInt64, windowSize: UInt64 = WindowedMapping.defaultWindowSize) {
        self.file = file
        self.length = length
        self.windowSize = windowSize
    }

    /// The mapped bytes starting at file byte `offset`, up to `maxLength` and the window's end,
    /// populated, and the window holding them (keep it while using the bytes). Nil if the range is
    /// not inside the file or the system refuses to map it.
    package func bytes(at offset: UInt64, maxLength: Int) -> (window: FileMapping, bytes: UnsafeRawBufferPointer)? {
        guard offset < length else { return nil }
        let index = offset / windowSize
        let start = index * windowSize
        let window: FileMapping? = windows.withLock { windows in
            if let w = windows[index] { return w }
            guard
                let w = FileMapping(
                    file: file, offset: start,
                    length: Int(min(windowSize, length - start)))
            else { return nil }
            if windows.count >= WindowedMapping.cachedWindows, let oldest = windows.keys.min() {
                windows[oldest] = nil
            }
            windows[index] = w
            return w
        }
        guard let window else { return nil }
        let from = Int(offset - start)
        let n = min(maxLength, window.bytes.count - from)
        guard n > 0 else { return nil }
        window.populate(from..<from + n)
        return (window, UnsafeRawBufferPointer(rebasing: window.bytes[from..<from + n]))
    }
}
