import CQEDSys
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A ``BlockFile`` on a POSIX file descriptor: `pread`/`pwrite`/`fdatasync`/`ftruncate`, ranged
/// durable writes with `pwritev2(RWF_DSYNC)` and hole punching with `fallocate`. The descriptor is
/// owned by this object and closed by ``close()`` or on deinit. Thread-safe: positioned I/O on one
/// descriptor needs no lock.
///
/// After ``close()`` every method refuses with ``QEDError/Code/closed`` (``readIfCached(into:at:)``
/// returns false) instead of making a system call on the old descriptor number, which the kernel
/// may have given to another file; a call racing with ``close()`` either runs to completion on
/// the still-open descriptor or is refused (see ``DescriptorGuard``). Each call costs two atomic
/// operations for that, no lock.
public final class PosixFile: BlockFile {
    /// The path the file was opened with.
    public let path: String
    /// Whether the descriptor was opened for writing.
    public let isWritable: Bool
    /// The descriptor. Valid until ``close()``; ``ImageLock`` places its byte locks on it. Calls
    /// through it are not guarded: use them only while the file is certainly open.
    var descriptor: FileDescriptor { guarded.descriptor }
    /// The raw descriptor number, valid until ``close()`` (unguarded, like ``descriptor``).
    public var rawDescriptor: Int32 { guarded.descriptor.rawValue }
    /// Whether ``sync()`` is a no-op (QEMU's `cache=unsafe`, `cache.no-flush=on`).
    public let ignoresFlushes: Bool
    /// Owns the descriptor; every method's system calls run inside its ``DescriptorGuard/use(orThrow:_:)``.
    private let guarded: DescriptorGuard
    /// Whether ``close()`` has been called.
    public var isClosed: Bool { guarded.isClosed }

    /// Opens an existing regular file. Non-regular files (block devices, directories) are refused
    /// with ``QEDError/Code/notRegularFile``. With `ignoringFlushes`, ``sync()`` does nothing.
    public init(path: String, writable: Bool, ignoringFlushes: Bool = false) throws {
        self.path = path
        isWritable = writable
        ignoresFlushes = ignoringFlushes
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(
                FilePath(path), writable ? .readWrite : .readOnly, options: [.closeOnExec])
        } catch let errno as Errno {
            throw QEDError.system(errno, "Could not open '\(path)'", syscall: "open", path: path)
        }
        do {
            try PosixFile.requireRegular(descriptor, path: path)
        } catch {
            try? descriptor.close()
            throw error
        }
        guarded = DescriptorGuard(descriptor)
    }

    /// Creates (or truncates to zero) a regular file with mode 0644 and opens it read-write.
    /// An existing non-regular file is refused before it is touched. With `lock`, the QEMU lock
    /// bytes are taken *before* truncating, so an image another process uses is left intact.
    public static func create(path: String, lock: LockMode? = nil) throws -> PosixFile {
        var st = stat()
        if stat(path, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG {
            throw QEDError(
                .notRegularFile, "'\(path)' is not a regular file; QED images must be regular files",
                path: path)
        }
        do {
            let fd = try FileDescriptor.open(
                FilePath(path), .readWrite, options: [.create, .closeOnExec],
                permissions: [.ownerReadWrite, .groupRead, .otherRead])
            try? fd.close()
        } catch let errno as Errno {
            throw QEDError.system(errno, "Could not create '\(path)'", syscall: "open", path: path)
        }
        let file = try PosixFile(path: path, writable: true)
        do {
            if let lock { try ImageLock.acquire(fd: file.rawDescriptor, mode: lock, path: path) }
            try file.setLength(0)
        } catch {
            file.close()
            throw error
        }
        return file
    }

    deinit { close() }

    /// Closes the descriptor (once calls already in progress have returned); later calls throw
    /// ``QEDError/Code/closed``. Idempotent.
    public func close() {
        guarded.close()
    }

    /// Runs `body` with the descriptor number, or throws ``QEDError/Code/closed`` after ``close()``.
    @inline(__always)
    private func withDescriptor<T>(_ body: (Int32) throws -> T) throws -> T {
        try guarded.use(orThrow: { QEDError(.closed, "the file is closed (no system call made)", path: path) }, body)
    }

    private static func requireRegular(_ fd: FileDescriptor, path: String) throws {
        var st = stat()
        guard fstat(fd.rawValue, &st) == 0 else {
            throw QEDError.system(Errno(rawValue: errno), "Could not stat '\(path)'", syscall: "fstat", path: path)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            // QEMU's words (its `file` driver refuses the same).
            throw QEDError(.notRegularFile, "'file' driver requires '\(path)' to be a regular file", path: path)
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        try withDescriptor { fd in
            guard let off = Int64(exactly: offset) else { return 0 }
            do {
                return try FileDescriptor(rawValue: fd).read(
                    fromAbsoluteOffset: off, into: buffer, retryOnInterrupt: true)
            } catch let errno as Errno {
                throw QEDError.system(
                    errno, "read of \(buffer.count) bytes at offset \(offset) failed",
                    syscall: "pread", path: path, value: offset)
            }
        }
    }

    /// A read served from the page cache alone (`preadv2` with `RWF_NOWAIT`); a short read (part
    /// of the range not cached, or end of file) counts as not cached, and so does a closed file.
    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        let done = try? withDescriptor { fd -> Bool in
            guard let off = Int64(exactly: offset), let base = buffer.baseAddress else { return buffer.isEmpty }
            return qedsys_pread_cached(fd, base, buffer.count, off) == Int64(buffer.count)
        }
        return done ?? false
    }

    /// Writes of at least this many bytes first allocate their range with one `fallocate`.
    static let preallocationThreshold = 1 << 20

    /// Writes all of `bytes`. A large write (``preallocationThreshold``) first allocates its range
    /// (`fallocate` keeping the size): on ext4 that is one extent allocation instead of a delayed
    /// allocation per 4 KiB page inside the copy, ~10 % less time for new data; ranges already
    /// allocated are left as they are. Failure (no support, no space) is left to the write to report.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try withDescriptor { fd in
            let start = try fileOffset(of: bytes.count, at: offset, syscall: "pwrite")
            if bytes.count >= PosixFile.preallocationThreshold {
                _ = qedsys_preallocate(fd, start, Int64(bytes.count))
            }
            let descriptor = FileDescriptor(rawValue: fd)
            var done = 0
            while done < bytes.count {
                let n: Int
                do {
                    n = try descriptor.write(
                        toAbsoluteOffset: start + Int64(done),
                        UnsafeRawBufferPointer(rebasing: bytes[done...]), retryOnInterrupt: true)
                } catch let errno as Errno {
                    throw writeError(errno, bytes.count, at: offset, syscall: "pwrite")
                }
                // A write that makes no progress means the device is full.
                guard n > 0 else { throw writeError(.noSpace, bytes.count, at: offset, syscall: "pwrite") }
                done += n
            }
        }
    }

    /// A durable write with `pwritev2(RWF_DSYNC)`: the kernel writes back and flushes only this
    /// range and the inode (its size), not the file's other dirty pages. Where the system has no
    /// such write, ``write(_:at:)`` then ``sync()``; with ``ignoresFlushes``, a plain write.
    public func writeDurably(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        if ignoresFlushes { return try write(bytes, at: offset) }
        let ranged = try withDescriptor { fd -> Bool in
            let start = try fileOffset(of: bytes.count, at: offset, syscall: "pwritev2")
            guard let base = bytes.baseAddress else { return false }
            var done = 0
            while done < bytes.count {
                let n = qedsys_pwrite_durable(fd, base + done, bytes.count - done, start + Int64(done))
                if n < 0 {
                    let error = Errno(rawValue: errno)
                    if error == .interrupted { continue }
                    // No RWF_DSYNC here (kernel before 4.7, or not Linux): the whole-file way.
                    if done == 0 && (error == .notSupported || error == .noFunction) { return false }
                    throw writeError(error, bytes.count, at: offset, syscall: "pwritev2")
                }
                // A write that makes no progress means the device is full.
                guard n > 0 else { throw writeError(.noSpace, bytes.count, at: offset, syscall: "pwritev2") }
                done += Int(n)
            }
            return true
        }
        if !ranged {
            try write(bytes, at: offset)
            try sync()
        }
    }

    /// The error for a write of `count` bytes at `offset` by `syscall` that failed with `errno`.
    private func writeError(_ errno: Errno, _ count: Int, at offset: UInt64, syscall: String) -> QEDError {
        QEDError.system(
            errno, "write of \(count) bytes at offset \(offset) failed", syscall: syscall, path: path, value: offset)
    }

    /// `offset` as a file offset, checking that the `count` bytes written there end inside `off_t`;
    /// else throws the write's EFBIG error.
    private func fileOffset(of count: Int, at offset: UInt64, syscall: String) throws -> Int64 {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard !overflow, let start = Int64(exactly: offset), Int64(exactly: end) != nil else {
            throw writeError(.fileTooLarge, count, at: offset, syscall: syscall)
        }
        return start
    }

    public func sync() throws {
        try withDescriptor { fd in
            if ignoresFlushes { return }
            if let errno = PosixFile.retryingOnInterrupt({ fdatasync(fd) }) {
                throw QEDError.system(errno, "fdatasync failed", syscall: "fdatasync", path: path)
            }
        }
    }

    public func length() throws -> UInt64 {
        try UInt64(status().st_size)
    }

    /// Bytes the file occupies on the host (`st_blocks · 512`), as `qemu-img info` reports.
    public func allocatedBytes() throws -> UInt64? {
        try UInt64(status().st_blocks) * 512
    }

    private func status() throws -> stat {
        try withDescriptor { fd in
            var st = stat()
            if let errno = PosixFile.retryingOnInterrupt({ fstat(fd, &st) }) {
                throw QEDError.system(errno, "fstat failed", syscall: "fstat", path: path)
            }
            return st
        }
    }

    /// Zeroes `[offset, offset+length)` in the file system without writing data (`FALLOC_FL_ZERO_RANGE`),
    /// keeping the length; false where that is not possible (then write zeroes instead) or the file
    /// is closed.
    public func zeroRange(at offset: UInt64, length: UInt64) -> Bool {
        guard let off = Int64(exactly: offset), let len = Int64(exactly: length) else { return false }
        let done = try? withDescriptor { fd in qedsys_zero_range(fd, off, len) == 0 }
        return done ?? false
    }

    public func setLength(_ length: UInt64) throws {
        try withDescriptor { fd in
            guard let len = Int64(exactly: length) else {
                throw QEDError(.invalidArgument, "file length \(length) is too large", value: length, path: path)
            }
            do {
                try FileDescriptor(rawValue: fd).resize(to: len, retryOnInterrupt: true)
            } catch let errno as Errno {
                throw QEDError.system(
                    errno, "ftruncate to \(length) bytes failed", syscall: "ftruncate", path: path,
                    value: length)
            }
        }
    }

    public func punchHole(at offset: UInt64, length: UInt64) throws {
        try withDescriptor { fd in
            guard length > 0 else { return }
            guard let off = Int64(exactly: offset), let len = Int64(exactly: length) else {
                throw QEDError(
                    .outOfRange, "hole of \(length) bytes at offset \(offset) is past any file",
                    value: offset, path: path)
            }
            if qedsys_punch_hole(fd, off, len) != 0 {
                let e = errno
                if e == EOPNOTSUPP || e == ENOSYS {
                    throw QEDError(
                        .unsupported, "the file system cannot punch holes", path: path, errno: e,
                        syscall: "fallocate")
                }
                throw QEDError.system(
                    Errno(rawValue: e), "punching a hole at offset \(offset) failed",
                    syscall: "fallocate", path: path, value: offset)
            }
        }
    }

    public func allocation(at offset: UInt64, limit: UInt64) throws -> (isData: Bool, length: UInt64) {
        try withDescriptor { fd in
            // Past any possible file: a hole (as lseek reports past the end of file).
            guard let start = Int64(exactly: offset) else { return (false, limit) }
            let data = qedsys_seek_data(fd, start)
            if data < 0 {
                // ENXIO: no data at or after offset (or offset past EOF): a hole to the end.
                return errno == ENXIO ? (false, limit) : (true, limit)
            }
            if UInt64(data) > offset { return (false, min(limit, UInt64(data) - offset)) }
            let hole = qedsys_seek_hole(fd, start)
            guard hole > start else { return (true, limit) }
            return (true, min(limit, UInt64(hole) - offset))
        }
    }
}

extension PosixFile {
    /// Runs `call` (a system call returning 0 or -1 with `errno`) again while it is interrupted
    /// (EINTR); nil on success, else its `Errno`.
    @inline(__always)
    static func retryingOnInterrupt(_ call: () -> Int32) -> Errno? {
        while call() != 0 {
            let error = Errno(rawValue: errno)
            if error != .interrupted { return error }
        }
        return nil
    }
}

extension QEDError {
    /// An ``QEDError/Code/io`` error for a failed system call: the message is `what` and the
    /// strerror text, the cause `syscall` (its name, e.g. "pread") and its `errno`.
    static func system(
        _ errno: Errno, _ what: String, syscall: String, path: String? = nil,
        value: UInt64? = nil
    ) -> QEDError {
        QEDError(
            .io, "\(what): \(errno.description)", value: value, path: path,
            cause: Cause(syscall: syscall, errno: errno.rawValue))
    }
}
