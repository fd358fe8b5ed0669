/// A disk seen as a file: the guest bytes of `disk` as the ``BlockFile`` another format is opened
/// on (QEMU's nested formats, `driver=qed,file.driver=qed,...`: a QED image stored inside the
/// guest data of another image).
///
/// Offsets and lengths are guest bytes of `disk`. Writes past the end grow the disk first (a file
/// grows when written past its end). Sendable because `disk` is: every call goes to it, and it
/// does its own locking.
public final class DiskFile: BlockFile {
    /// The disk whose guest data is this file; owned: ``close()`` closes it.
    public let disk: any Disk

    /// A file over `disk`'s guest bytes; the file owns the disk.
    public init(_ disk: any Disk) {
        self.disk = disk
    }

    public var path: String { disk.path }
    public var isWritable: Bool { !disk.isReadOnly }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        let size = disk.virtualSize
        guard offset < size, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), size - offset))
        try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<count]), at: offset)
        return count
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(bytes.count))
        guard !overflow else { throw QEDError(.invalidArgument, "write past the largest offset", path: path) }
        if end > disk.virtualSize { try disk.resize(to: end) }
        try disk.write(bytes, at: offset)
    }

    public func sync() throws { try disk.flush() }
    public func length() throws -> UInt64 { disk.virtualSize }
    public func setLength(_ length: UInt64) throws { try disk.resize(to: length) }

    public func punchHole(at offset: UInt64, length: UInt64) throws {
        try disk.writeZeroes(at: offset, length: length, unmap: true)
    }

    public func allocation(at offset: UInt64, limit: UInt64) throws -> (isData: Bool, length: UInt64) {
        guard let first = try disk.extents(at: offset, length: limit).first, first.length > 0 else {
            return (true, limit)
        }
        return (!first.zero, min(first.length, limit))
    }

    public func close() { try? disk.close() }
}
