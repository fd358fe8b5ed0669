import Synchronization

/// A ``BlockFile`` held in memory: for tests, examples and scratch images. Thread-safe; the bytes
/// are guarded by one mutex. Holes are not tracked (everything reads as data). ``close()`` does
/// nothing: the bytes stay readable, so a test can reopen an image in the same file.
public final class MemoryFile: BlockFile {
    /// A label for messages.
    public let path: String
    /// Whether writes are allowed.
    public let isWritable: Bool
    /// The file content; guarded by the mutex.
    private let bytes: Mutex<[UInt8]>
    /// How many times ``sync()`` was called.
    public var syncCount: Int { syncs.withLock { $0 } }
    private let syncs = Mutex(0)

    /// A file holding `contents`.
    public init(_ contents: [UInt8] = [], path: String = "memory", writable: Bool = true) {
        self.path = path
        isWritable = writable
        bytes = Mutex(contents)
    }

    /// A copy of the current content.
    public var contents: [UInt8] { bytes.withLock { $0 } }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        bytes.withLock { b in
            guard offset < UInt64(b.count) else { return 0 }
            let start = Int(offset)
            let n = min(buffer.count, b.count - start)
            b.withUnsafeBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[start..<start + n]))
            }
            return n
        }
    }

    /// Memory is always "cached": a full read succeeds, one that reaches past the end does not.
    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool {
        (try? read(into: buffer, at: offset)) == buffer.count
    }

    public func write(_ data: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard isWritable else { throw QEDError(.readOnly, "file is read-only", path: path) }
        let (sum, overflow) = offset.addingReportingOverflow(UInt64(data.count))
        guard !overflow, let end = Int(exactly: sum) else {
            throw QEDError(.noSpace, "write past the end of a memory file", value: offset, path: path)
        }
        bytes.withLock { b in
            if b.count < end { b.append(contentsOf: [UInt8](repeating: 0, count: end - b.count)) }
            b.withUnsafeMutableBytes { dst in
                UnsafeMutableRawBufferPointer(rebasing: dst[Int(offset)..<end]).copyMemory(from: data)
            }
        }
    }

    public func sync() throws { syncs.withLock { $0 += 1 } }

    public func length() throws -> UInt64 { bytes.withLock { UInt64($0.count) } }

    public func setLength(_ length: UInt64) throws {
        guard let n = Int(exactly: length), n <= 1 << 40 else {
            throw QEDError(.noSpace, "memory file cannot hold \(length) bytes", value: length, path: path)
        }
        bytes.withLock { b in
            if b.count > n {
                b.removeSubrange(n...)
            } else if b.count < n {
                b.append(contentsOf: [UInt8](repeating: 0, count: n - b.count))
            }
        }
    }

    /// Zeroes the bytes of the range inside the file (the length is kept); always possible.
    public func zeroRange(at offset: UInt64, length: UInt64) -> Bool {
        (try? punchHole(at: offset, length: length)) != nil
    }

    /// The bytes held in memory: the file length.
    public func allocatedBytes() throws -> UInt64? { try length() }

    public func punchHole(at offset: UInt64, length: UInt64) throws {
        bytes.withLock { b in
            let start = min(Int(clamping: offset), b.count)
            let end = min(Int(clamping: offset &+ length), b.count)
            guard start < end else { return }
            b.withUnsafeMutableBytes {
                _ = UnsafeMutableRawBufferPointer(rebasing: $0[start..<end]).initializeMemory(
                    as: UInt8.self, repeating: 0)
            }
        }
    }
}
