public import Foundation

/// A pipe that is full but for `room` bytes, to hold a child process at a known point of its output
/// without timing: given the write end as its standard output, the child writes `room` bytes and then
/// blocks in `write` until the test reads.
///
/// How: the pipe is shrunk to as few page-sized buffers as the kernel allows; every buffer but the
/// last is filled, and the last one with `pageSize - room` bytes. Linux appends a small write to the
/// last buffer while it fits and otherwise needs a free buffer, so the child's writes (each of at
/// most `room` bytes, such as progress lines) go through until their total would exceed `room`.
public final class NarrowPipe {
    /// The read end (the test's) and the write end (the child's), both close-on-exec here.
    public let readDescriptor: Int32
    public private(set) var writeDescriptor: Int32
    /// How many filler bytes the pipe holds before anything the child writes.
    public let fillerCount: Int

    /// Linux's F_SETPIPE_SZ and F_GETPIPE_SZ (F_LINUX_SPECIFIC_BASE + 7, + 8), which Glibc's
    /// Swift module does not export.
    static let setPipeSize: Int32 = 1031
    static let getPipeSize: Int32 = 1032

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public init(room: Int) throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard room > 0 && room < page else { throw Failure(description: "room \(room) must be in 1..<\(page)") }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw Failure(description: "pipe: \(String(cString: strerror(errno)))") }
        readDescriptor = fds[0]
        writeDescriptor = fds[1]
        // (Foundation's Process closes a parent's other descriptors in the child anyway.)
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeDescriptor, Self.setPipeSize, Int32(page))
        let capacity = Int(fcntl(writeDescriptor, Self.getPipeSize))
        guard capacity >= page else {
            close(fds[0])
            close(fds[1])
            throw Failure(description: "F_GETPIPE_SZ: \(String(cString: strerror(errno)))")
        }
        // Full pages, each into a buffer of its own, then the partial last one.
        let chunks = [Int](repeating: page, count: capacity / page - 1) + [page - room]
        for count in chunks {
            let filler = [UInt8](repeating: UInt8(ascii: "#"), count: count)
            let written = filler.withUnsafeBytes { write(fds[1], $0.baseAddress, count) }
            guard written == count else {
                close(fds[0])
                close(fds[1])
                throw Failure(description: "filling the pipe: wrote \(written) of \(count) bytes")
            }
        }
        fillerCount = chunks.reduce(0, +)
    }

    /// The write end as a handle to give a `Process` as its standard output or error (the handle
    /// does not own the descriptor; ``closeWriteEnd()`` closes it).
    public var writeHandle: FileHandle { FileHandle(fileDescriptor: writeDescriptor, closeOnDealloc: false) }

    /// Closes the test's copy of the write end, once the child has its own: reads then end when the
    /// child exits.
    public func closeWriteEnd() {
        if writeDescriptor >= 0 { close(writeDescriptor) }
        writeDescriptor = -1
    }

    /// Bytes in the pipe now (filler included): a probe that does not make room for the child.
    public var buffered: Int {
        var count: Int32 = 0
        guard ioctl(readDescriptor, UInt(FIONREAD), &count) == 0 else { return -1 }
        return Int(count)
    }

    /// Reads everything until end of file (letting the child go on) and returns what the child wrote,
    /// without the filler.
    public func readChildOutput() -> [UInt8] {
        var all: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(readDescriptor, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            all += chunk[0..<n]
        }
        return Array(all.dropFirst(fillerCount))
    }

    deinit {
        closeWriteEnd()
        close(readDescriptor)
    }
}
