import Foundation
public import QED

/// Opens an image file, retrying while it reports ``QEDError/Code/locked`` (for at most a minute:
/// a bound for a lock that really is held, not a guess at how long the wait below takes).
///
/// Why: every child process a test process spawns (the interop tests run qemu-img in parallel)
/// holds a copy of each open file description from fork until exec. A description an image just
/// closed can therefore keep its OFD locks for a moment — longer when that child waits for a CPU
/// on a loaded machine — and a re-open of the same file in that window sees a conflict. Use this
/// only where the open must succeed; lock tests call ``Image/open(path:options:)`` directly.
public func openImage(_ path: String, _ options: OpenOptions = OpenOptions()) throws -> Image {
    let deadline = Date().addingTimeInterval(60)
    while true {
        do {
            return try Image.open(path: path, options: options)
        } catch let error as QEDError where error.code == .locked && Date() < deadline {
            usleep(5_000)
        }
    }
}

extension Image {
    /// Some lock bytes were still held this long after the close.
    public struct LocksLeft: Error, CustomStringConvertible {
        public var path: String
        public var ranges: [ClosedRange<UInt64>]
        public var description: String { "\(path): locks still held after close: \(ranges)" }
    }

    /// Closes the image, then waits until /proc/locks lists no lock on its file. Use it before
    /// handing the file to a QEMU tool, when nothing else has it open: QEMU does not retry a lock
    /// conflict, and a child this test process is spawning elsewhere holds a copy of the closed
    /// descriptor — and so its locks — until it execs (see ``openImage(_:_:)``).
    public func closeReleasingLocks() throws {
        let path = self.path
        try close()
        guard ProcLocks.waitUntilUnlocked(path) else {
            throw LocksLeft(path: path, ranges: ProcLocks.lockedRanges(path) ?? [])
        }
    }
}
