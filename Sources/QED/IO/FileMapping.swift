import CQEDSys
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only shared mapping of part of a ``PosixFile``: the page cache's own pages, so looking at
/// the bytes and writing them elsewhere costs one copy instead of the two of `pread` + `pwrite`.
/// Unmapped on deinit; ``bytes`` is valid while the object lives.
///
/// Only for files nobody can shrink meanwhile (touching a page past the end of the file raises
/// SIGBUS): `convert` maps sources it holds QEMU's read lock on (which keeps writers out), never
/// force-shared or unlocked ones.
final class FileMapping: @unchecked Sendable {
    /// The requested bytes.
    let bytes: UnsafeRawBufferPointer
    private let base: UnsafeMutableRawPointer
    private let mappedLength: Int

    private static let pageSize = UInt64(max(4096, sysconf(Int32(_SC_PAGESIZE))))

    /// Maps `length` bytes of `file` at byte `offset` (any alignment); nil if the system refuses.
    init?(file: PosixFile, offset: UInt64, length: Int) {
        guard length > 0 else { return nil }
        let start = offset & ~(FileMapping.pageSize - 1)
        let delta = Int(offset - start)
        guard let p = qedsys_map_read(file.rawDescriptor, Int64(start), length + delta) else { return nil }
        base = p
        mappedLength = length + delta
        bytes = UnsafeRawBufferPointer(start: p + delta, count: length)
    }

    deinit { _ = qedsys_unmap(base, mappedLength) }
}

/// A disk whose own data extents (depth 0, with a host offset) may be read through a
/// ``FileMapping`` of ``mappableFile``.
protocol MappableDisk {
    /// The host file holding depth-0 data, or nil when it must be read with `read` (not a
    /// ``PosixFile``, or opened force-shared or unlocked, so a writer might shrink it).
    var mappableFile: PosixFile? { get }
}

extension Image: MappableDisk {
    var mappableFile: PosixFile? { options.locking && !options.forceShare ? file as? PosixFile : nil }
}

extension RawImage: MappableDisk {
    var mappableFile: PosixFile? { isProtectedFromWriters ? file : nil }
}
