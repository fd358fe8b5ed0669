import Foundation

/// A process the test did not start itself (a daemon that forked away), known by its pid *and* its
/// start time, so that neither a zombie nor a later process given the same pid is mistaken for it.
///
/// Such a process cannot be waited for; `kill(pid, 0)` would call a zombie alive (its parent, not
/// the test, reaps it) and would signal whichever process reuses the pid once it is gone.
public struct ProcessWatch: Sendable {
    /// The process id.
    public let pid: Int32
    /// Its start time (clock ticks after boot, /proc/PID/stat field 22).
    private let startTime: UInt64

    /// Watches `pid`; nil if no such process is running now.
    public init?(pid: Int32) {
        guard let (state, start) = Self.stat(pid), state != "Z", state != "X" else { return nil }
        self.pid = pid
        self.startTime = start
    }

    /// State letter and start time from /proc/PID/stat, or nil if there is no such process.
    private static func stat(_ pid: Int32) -> (Character, UInt64)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm)": state is the first field, start time the 20th.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let state = fields[0].first, let start = UInt64(fields[19]) else { return nil }
        return (state, start)
    }

    /// Whether the process has ended: gone, a zombie, or its pid now names another process. Its
    /// descriptors (and so its locks) are closed in every one of these cases.
    public var hasExited: Bool {
        guard let (state, start) = Self.stat(pid), start == startTime else { return true }
        return state == "Z" || state == "X"
    }

    /// Sends `signal` if the process is still running.
    public func signal(_ signal: Int32) {
        if !hasExited { kill(pid, signal) }
    }

    /// Waits until the process has ended; false if it is still running after `timeout` seconds
    /// (a bound for a hung process, not a guess at how long exiting takes).
    public func waitForExit(timeout: Double = 300) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while !hasExited {
            guard Date() < deadline else { return false }
            usleep(5_000)
        }
        return true
    }
}
