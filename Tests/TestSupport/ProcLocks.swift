import Foundation

/// The OFD locks (QEMU's image locks) on a file, observed without taking any: ``isLocked(_:)``
/// asks the kernel exactly; ``lockedRanges(_:)`` lists them from /proc/locks for messages.
public enum ProcLocks {
    /// The byte ranges (first...last byte) under OFD locks on the file at `path`, by any process;
    /// nil if the file or /proc/locks cannot be read.
    public static func lockedRanges(_ path: String) -> [ClosedRange<UInt64>]? {
        var st = stat()
        guard stat(path, &st) == 0,
            let text = try? String(contentsOfFile: "/proc/locks", encoding: .utf8)
        else { return nil }
        let dev = UInt64(st.st_dev)
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))
        let minor = (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))
        // "1: OFDLCK ADVISORY  READ -1 fe:00:16222675 100 101" (major and minor in hex; "->" marks a
        // waiter, which holds nothing).
        let file = String(format: "%02llx:%02llx:%llu", major, minor, UInt64(st.st_ino))
        var out: [ClosedRange<UInt64>] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 8, fields[1] == "OFDLCK", let at = fields.firstIndex(where: { $0 == file }),
                at + 2 < fields.count, let first = UInt64(fields[at + 1])
            else { continue }
            let last = fields[at + 2] == "EOF" ? UInt64.max : UInt64(fields[at + 2]) ?? first
            out.append(first...max(first, last))
        }
        return out
    }

    /// Whether any open file description holds a lock on some byte of the file at `path` (nil if
    /// the file cannot be opened). Asks the kernel directly, as QEMU does before it locks: an
    /// `F_OFD_GETLK` probe for a write lock over the whole file from a fresh descriptor, which
    /// conflicts with every lock held through any other description — including copies of a closed
    /// descriptor that a child still holds between fork and exec. Unlike a scan of /proc/locks
    /// (read in pieces while the list changes, so a line can be missed), the answer is exact.
    public static func isLocked(_ path: String) -> Bool? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var probe = flock()
        probe.l_type = Int16(F_WRLCK)
        probe.l_whence = Int16(SEEK_SET)
        probe.l_start = 0
        probe.l_len = 0  // to the end of the file, however far
        let getOFDLock: Int32 = 36  // F_OFD_GETLK (Linux); Glibc's module does not export it
        guard fcntl(fd, getOFDLock, &probe) == 0 else { return nil }
        return probe.l_type != Int16(F_UNLCK)
    }

    /// Waits until no lock on `path` remains (``isLocked(_:)``); false if some remain after
    /// `timeout` seconds.
    ///
    /// Closing a descriptor drops its locks only when no other copy of its open file description
    /// exists, and a child that a test process is spawning holds copies of every descriptor until it
    /// execs. After closing an image in the test process, wait here before a tool that takes the
    /// image's locks (qemu-img, qemu-io) opens it. The timeout only bounds a real leak.
    public static func waitUntilUnlocked(_ path: String, timeout: Double = 300) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while isLocked(path) == true {
            guard Date() < deadline else { return false }
            usleep(2_000)
        }
        return true
    }
}
