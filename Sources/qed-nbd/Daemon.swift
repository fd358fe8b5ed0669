#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `--fork`: the parent waits until the child is listening (or failed), relays the child's early error
/// output, and exits 0 or 1; the child detaches and serves.
struct Daemon {
    private static let readyMarker: [UInt8] = Array("\u{1}qed-nbd-ready\u{1}".utf8)
    private let pipeWriter: Int32

    /// Forks. Returns only in the child, which keeps only stdio, the pipe to the parent and the
    /// `activatedSocket` (if any) open; the parent exits.
    static func fork(keeping activatedSocket: Int32?) throws -> Daemon {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw Failure("cannot create a pipe for --fork: \(errnoText())") }
        let pid = Glibc.fork()
        guard pid >= 0 else { throw Failure("cannot fork: \(errnoText())") }
        if pid > 0 {
            close(fds[1])
            var output: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                output.append(contentsOf: chunk[0..<n])
            }
            let ready = output.count >= readyMarker.count && Array(output.suffix(readyMarker.count)) == readyMarker
            let message = ready ? Array(output.dropLast(readyMarker.count)) : output
            if !message.isEmpty { _ = message.withUnsafeBytes { write(2, $0.baseAddress, $0.count) } }
            exit(ready ? 0 : 1)
        }
        close(fds[0])
        _ = setsid()
        _ = dup2(fds[1], 2)
        // A daemon must not keep its parent's descriptors open (a supervisor may be waiting for them to
        // close); keep the pipe and, under socket activation, the listening socket.
        closeInheritedDescriptors(keeping: Set([fds[1]] + (activatedSocket.map { [$0] } ?? [])))
        return Daemon(pipeWriter: fds[1])
    }

    /// Closes every descriptor above 2 except `keep`, as listed in /proc/self/fd.
    private static func closeInheritedDescriptors(keeping keep: Set<Int32>) {
        guard let directory = opendir("/proc/self/fd") else { return }
        let own = dirfd(directory)
        var open: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let fd = Int32(name), fd > 2, fd != own, !keep.contains(fd) { open.append(fd) }
        }
        closedir(directory)
        for fd in open { close(fd) }
    }

    /// Tells the parent the server is up, and detaches from the terminal.
    func ready() {
        _ = Self.readyMarker.withUnsafeBytes { write(pipeWriter, $0.baseAddress, $0.count) }
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            _ = dup2(null, 0)
            _ = dup2(null, 1)
            _ = dup2(null, 2)
            if null > 2 { close(null) }
        }
        close(pipeWriter)
    }
}
