import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn` and reaped with `waitpid`.
///
/// Why not Foundation's `Process`: on Linux it learns that a child has ended when a socket the
/// child inherited is closed. A grandchild that inherits that socket too (a daemon the child
/// forked, a shell's background job) keeps the `Process` "running" after the child itself is dead,
/// so `isRunning` stays true and `waitUntilExit` never returns, with the child left a zombie. This
/// type asks the kernel about the child itself, and the child inherits no descriptor but its
/// standard input, output and error.
public final class SpawnedProcess: Sendable {
    /// The child's process id (also its process group: the child leads a group of its own).
    public let pid: Int32
    /// The exit status once reaped (guards nothing else); nil while the child runs.
    private let reaped = Mutex<Int32?>(nil)

    /// Why a child could not be started.
    public struct SpawnFailure: Error, CustomStringConvertible {
        public var path: String
        public var errno: Int32
        public var description: String { "cannot start \(path): \(String(cString: strerror(errno)))" }

        public init(path: String, errno: Int32) {
            self.path = path
            self.errno = errno
        }
    }

    /// Creates (or empties) the file at `path` for a child's output; a descriptor the caller
    /// closes once the child has started (the child keeps its own copy).
    public static func outputFile(_ path: String) throws -> Int32 {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw SpawnFailure(path: path, errno: errno) }
        return descriptor
    }

    /// Starts `path` with `arguments` (not including argv[0]) in `directory`. `stdin`, `stdout` and
    /// `stderr` are descriptors of the parent that become the child's 0, 1 and 2 (nil: /dev/null).
    /// `environment` is merged over the parent's. `argv0` names the program in argv[0].
    public init(
        _ path: String, _ arguments: [String], in directory: String? = nil,
        environment: [String: String] = [:], argv0: String? = nil,
        stdin: Int32? = nil, stdout: Int32? = nil, stderr: Int32? = nil
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard null >= 0 else { throw SpawnFailure(path: "/dev/null", errno: errno) }
        defer { close(null) }
        for (target, source) in [(0, stdin), (1, stdout), (2, stderr)] {
            posix_spawn_file_actions_adddup2(&actions, source ?? null, Int32(target))
        }
        try Self.closeOthers(&actions, path: path)
        if let directory { try Self.changeDirectory(&actions, to: directory, path: path) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A group of its own: a signal meant for it can reach its children too (`kill(group:)`),
        // and a terminal's Ctrl-C does not.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK))
        posix_spawnattr_setpgroup(&attributes, 0)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)

        let merged = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let argv = ([argv0 ?? path] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: Int32 = 0
        let status = posix_spawn(&child, path, &actions, &attributes, argv, envp)
        guard status == 0 else { throw SpawnFailure(path: path, errno: status) }
        pid = child
    }

    /// The exit status: the code it passed to exit, or the signal number when a signal ended it
    /// (as `Process.terminationStatus` reports it). Nil while it runs. Reaps the child.
    public var status: Int32? {
        reaped.withLock { status in
            if status == nil { status = Self.reap(pid, blocking: false) }
            return status
        }
    }

    /// Whether the child is still running (a zombie is not running).
    public var isRunning: Bool { status == nil }

    /// Waits for the child to end; its ``status``.
    @discardableResult
    public func wait() -> Int32 {
        // Blocking waitpid outside the lock, so `status` stays callable meanwhile; only one waiter
        // reaps, the others find the stored status.
        while true {
            if let known = status { return known }
            var raw: Int32 = 0
            let result = waitpid(pid, &raw, 0)
            if result == pid {
                let decoded = Self.decode(raw)
                return reaped.withLock { status in
                    if status == nil { status = decoded }
                    return status ?? decoded
                }
            }
            if result < 0 && errno == EINTR { continue }
            // ECHILD: another caller reaped it in the meantime; the loop finds its status.
            if let known = status { return known }
            usleep(1_000)
        }
    }

    /// Waits up to `timeout` seconds; the status, or nil if the child still runs.
    public func wait(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let known = status { return known }
            usleep(2_000)
        }
        return status
    }

    /// Sends `signal` to the child (if it has not been reaped).
    public func signal(_ signal: Int32) {
        reaped.withLock { status in
            if status == nil { _ = kill(pid, signal) }
        }
    }

    /// Sends `signal` to the child's whole process group: the child and what it started.
    public func signalGroup(_ signal: Int32) {
        _ = kill(-pid, signal)
    }

    /// SIGKILL to the group, then reap: for a child that must not outlive its test.
    public func killAndReap() {
        signalGroup(SIGKILL)
        wait()
    }

    // MARK: Internals

    private static func reap(_ pid: Int32, blocking: Bool) -> Int32? {
        var raw: Int32 = 0
        while true {
            let result = waitpid(pid, &raw, blocking ? 0 : WNOHANG)
            if result == pid { return decode(raw) }
            if result < 0 && errno == EINTR { continue }
            return nil
        }
    }

    private static func decode(_ raw: Int32) -> Int32 {
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : signal
    }

    private typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private typealias ChangeDirectory =
        @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

    /// glibc's (2.34+) action that closes every descriptor from 3 up, looked up at run time
    /// because Swift's Glibc module does not declare it.
    private static func closeOthers(_ actions: inout posix_spawn_file_actions_t, path: String) throws {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np") else {
            throw SpawnFailure(path: path, errno: ENOSYS)
        }
        let status = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
        guard status == 0 else { throw SpawnFailure(path: path, errno: status) }
    }

    /// glibc's action that changes the child's directory (looked up as ``closeOthers``).
    private static func changeDirectory(
        _ actions: inout posix_spawn_file_actions_t, to directory: String, path: String
    ) throws {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addchdir_np") else {
            throw SpawnFailure(path: path, errno: ENOSYS)
        }
        let status = unsafeBitCast(symbol, to: ChangeDirectory.self)(&actions, directory)
        guard status == 0 else { throw SpawnFailure(path: path, errno: status) }
    }
}
