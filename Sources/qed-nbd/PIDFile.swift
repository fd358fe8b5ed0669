#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `--pid-file`: the server's process id, written once it listens and removed when it stops.
enum PIDFile {
    /// Writes the pid to `path` atomically: into a temporary file beside it, then renamed over it,
    /// so whoever sees the file exist (a supervisor, a test waiting for readiness) sees it complete
    /// and closed — never empty, and never holding one of the server's descriptors.
    /// - Throws: ``Failure`` naming `path` and the reason.
    static func create(_ path: String) throws {
        let text = "\(getpid())\n"
        let temporary = "\(path).\(getpid()).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw Failure("cannot write pid file \(path): \(errnoText())") }
        let written = text.utf8CString.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, text.utf8.count) }
        close(descriptor)
        guard written == text.utf8.count, rename(temporary, path) == 0 else {
            let reason = errnoText()
            _ = unlink(temporary)
            throw Failure("cannot write pid file \(path): \(reason)")
        }
    }

    /// Removes the file at `path` (the server is stopping); a file already gone is no error.
    static func remove(_ path: String) {
        _ = unlink(path)
    }
}
