#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// systemd-style socket activation (`LISTEN_PID` / `LISTEN_FDS`): how `nbdinfo -- [ qed-nbd … ]`,
/// `nbdcopy -- [ … ]` and systemd hand the server an already listening socket on fd 3.
public enum SocketActivation {
    /// The first descriptor passed (`SD_LISTEN_FDS_START`).
    public static let firstDescriptor: Int32 = 3

    /// Why the environment cannot be used.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        /// What is wrong.
        public var description: String
    }

    /// The listening socket passed to this process, if any: `LISTEN_PID` must be this process and
    /// `LISTEN_FDS` exactly 1. The variables are removed so children do not inherit them, and the
    /// descriptor is marked close-on-exec.
    /// - Returns: The descriptor (3), or `nil` when no socket was passed (`LISTEN_PID` unset or another
    ///   process's).
    /// - Throws: ``Failure`` when the variables are malformed, pass more than one socket, or fd 3 is not a
    ///   socket.
    public static func takeListeningSocket() throws(Failure) -> Int32? {
        guard let pidText = Self.environment("LISTEN_PID") else { return nil }
        guard let pid = Int32(pidText), pid == getpid() else { return nil }
        let countText = Self.environment("LISTEN_FDS") ?? ""
        unsetenv("LISTEN_PID")
        unsetenv("LISTEN_FDS")
        unsetenv("LISTEN_FDNAMES")
        guard let count = Int(countText), count >= 1 else {
            throw Failure(description: "LISTEN_FDS must be a positive number, got '\(countText)'")
        }
        guard count == 1 else {
            throw Failure(description: "socket activation with LISTEN_FDS=\(count) is not supported (1 expected)")
        }
        let descriptor = Self.firstDescriptor
        var info = stat()
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw Failure(description: "LISTEN_FDS=1 but descriptor \(descriptor) is not a socket")
        }
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        return descriptor
    }

    private static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}
