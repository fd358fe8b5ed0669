import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// qemu-io's two streams: stdout buffered as C's stdio buffers it (by line on a terminal, in 4 KiB
/// blocks otherwise, so that messages on the unbuffered stderr come first, as with qemu-io when both
/// go to one pipe), stderr written at once. Thread-safe: aio requests report from worker threads.
final class IOOutput: Sendable {
    /// The bytes printed to stdout and not yet written.
    private let pending = Mutex([UInt8]())
    private let lineBuffered = isatty(STDOUT_FILENO) == 1
    /// glibc's buffer size for pipes and files.
    private let capacity = 4096

    /// Prints `text` on stdout (buffered).
    func out(_ text: String) {
        pending.withLock { buffer in
            buffer += Array(text.utf8)
            if buffer.count >= capacity || (lineBuffered && buffer.contains(UInt8(ascii: "\n"))) {
                let whole = lineBuffered ? buffer.count : buffer.count - buffer.count % capacity
                writeAll(STDOUT_FILENO, Array(buffer[0..<whole]))
                buffer.removeFirst(whole)
            }
        }
    }

    /// Prints `text` on stderr at once.
    func err(_ text: String) {
        writeAll(STDERR_FILENO, Array(text.utf8))
    }

    /// qemu-io's `error_report`: `PROGRAM: message` on stderr.
    func error(_ message: String) {
        err("\(Console.programName): \(message)\n")
    }

    /// Writes what stdout holds.
    func flush() {
        pending.withLock { buffer in
            writeAll(STDOUT_FILENO, buffer)
            buffer.removeAll()
        }
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            done += n
        }
    }
}
