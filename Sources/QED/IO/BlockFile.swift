#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The file layer under the engine: positioned reads and writes, durability, length and holes.
///
/// Every engine syscall goes through this protocol, so tests can swap in ``MemoryFile`` or a
/// fault-injecting file that loses unflushed writes. Implementations must be safe to call from
/// many threads at once (like `pread`/`pwrite` on one descriptor) and throw only ``QEDError``.
public protocol BlockFile: AnyObject, Sendable {
    /// A name for messages: the path for real files.
    var path: String { get }
    /// Whether writes are allowed.
    var isWritable: Bool { get }

    /// Reads up to `buffer.count` bytes at byte `offset`; returns how many were read, fewer only
    /// at end of file.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int
    /// Fills all of `buffer` from byte `offset` only if that needs no waiting for the disk (the
    /// bytes are in the page cache); false otherwise, and on any error (the caller then does a
    /// normal ``read(into:at:)``, which reports it). For callers that must not block, such as an
    /// event loop. The buffer's content is unspecified after false.
    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool
    /// Writes all of `bytes` at byte `offset`, extending the file if needed.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Makes every completed write durable (`fdatasync`).
    func sync() throws
    /// Writes all of `bytes` at byte `offset` and returns once they are durable, together with the
    /// file length needed to read them back; the file's other pending writes need not be (a ranged
    /// `fdatasync`, cheap when the file has gigabytes of other writes in the page cache). A failure
    /// may report an earlier write-back failure elsewhere in the file, as `fdatasync` would.
    /// Default: ``write(_:at:)`` then ``sync()``.
    func writeDurably(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// The file length in bytes.
    func length() throws -> UInt64
    /// Sets the file length in bytes; growing adds a hole that reads as zeroes.
    func setLength(_ length: UInt64) throws
    /// Deallocates `length` bytes at `offset` keeping the file length; they then read as zeroes.
    /// Throws ``QEDError/Code/unsupported`` where the file system cannot.
    func punchHole(at offset: UInt64, length: UInt64) throws
    /// The allocation of `[offset, offset+limit)` as seen by the file system: whether the first byte
    /// holds data (false = hole) and how many bytes from `offset` share that state (≥1, ≤ limit).
    /// Files that do not know report one data run.
    func allocation(at offset: UInt64, limit: UInt64) throws -> (isData: Bool, length: UInt64)
    /// Makes `[offset, offset+length)` read as zeroes without writing data (e.g.
    /// `FALLOC_FL_ZERO_RANGE`), keeping the length; false where the file cannot (then the caller
    /// writes zeroes) or is closed. Default: false.
    func zeroRange(at offset: UInt64, length: UInt64) -> Bool
    /// Bytes the file occupies on its storage (`st_blocks`·512 for real files), or nil when
    /// unknown. Default: nil.
    func allocatedBytes() throws -> UInt64?
    /// Releases the file; what later calls do is up to the file (``PosixFile`` refuses them with
    /// ``QEDError/Code/closed``; in-memory files stay usable). Idempotent. Default: nothing.
    func close()
}

extension BlockFile {
    /// Files without a ranged sync make everything durable.
    public func writeDurably(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try write(bytes, at: offset)
        try sync()
    }

    /// Files without a non-blocking read never claim one: the caller reads normally.
    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool { false }

    /// Reads exactly `buffer.count` bytes, zero-filling what lies past end of file.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = try read(
                into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]),
                at: offset + UInt64(done))
            if n == 0 { break }
            done += n
        }
        if done < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[done...]).zeroFill()
        }
    }

    /// Reads like ``readFully(into:at:)`` but asks ``allocation(at:limit:)`` where the file's holes
    /// are and does not read them: they are zero-filled, or left as they are when `zeroed` says the
    /// buffer holds zeroes already. For big, mostly sparse metadata (a 1 GiB table that is a hole).
    public func readSkippingHoles(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, zeroed: Bool) throws {
        let total = UInt64(buffer.count)
        var done: UInt64 = 0
        while done < total {
            let (isData, length) = try allocation(at: offset + done, limit: total - done)
            let step = max(1, min(length, total - done))
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(done)..<Int(done + step)])
            if isData {
                try readFully(into: slice, at: offset + done)
            } else if !zeroed {
                slice.zeroFill()
            }
            done += step
        }
    }

    /// Reads `count` bytes at `offset` into a new array (zeroes past end of file).
    public func readBytes(count: Int, at offset: UInt64) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try readFully(into: $0, at: offset) }
        return out
    }

    /// Writes `bytes` at `offset`.
    public func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    /// Writes `count` zero bytes at `offset` in chunks of at most 1 MiB.
    public func writeZeroes(at offset: UInt64, count: UInt64) throws {
        let chunk = Int(min(count, 1 << 20))
        guard chunk > 0 else { return }
        let zeroes = [UInt8](repeating: 0, count: chunk)
        var done: UInt64 = 0
        try zeroes.withUnsafeBytes { buf in
            while done < count {
                let n = Int(min(UInt64(chunk), count - done))
                try write(UnsafeRawBufferPointer(rebasing: buf[0..<n]), at: offset + done)
                done += UInt64(n)
            }
        }
    }

    /// Default: no cheap way to zero a range; the caller writes zeroes.
    public func zeroRange(at offset: UInt64, length: UInt64) -> Bool { false }

    /// Default: the space the file takes is unknown.
    public func allocatedBytes() throws -> UInt64? { nil }

    /// Default: nothing to release.
    public func close() {}

    /// Default: the file knows nothing of holes; everything is data.
    public func allocation(at offset: UInt64, limit: UInt64) throws -> (isData: Bool, length: UInt64) {
        (true, limit)
    }
}
