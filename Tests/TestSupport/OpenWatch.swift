import Foundation

/// Counts the opens of one file (inotify `IN_OPEN`), by this process or any other: a test can tell
/// whether a command opened a file at all. The kernel queues the event inside `open(2)` itself, so
/// once the command has exited its opens are all counted; no waiting is involved.
public final class OpenWatch {
    private let descriptor: Int32

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Starts watching `path` (which must exist). Opens before this call are not counted.
    public init(path: String) throws {
        descriptor = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard descriptor >= 0 else { throw Failure(description: "inotify_init1: \(String(cString: strerror(errno)))") }
        guard inotify_add_watch(descriptor, path, UInt32(IN_OPEN)) >= 0 else {
            let why = String(cString: strerror(errno))
            close(descriptor)
            throw Failure(description: "inotify_add_watch \(path): \(why)")
        }
    }

    /// How many times the file was opened since the watch started or since the last call.
    public func takeOpens() -> Int {
        var opens = 0
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            guard n > 0 else { return opens }  // EAGAIN: the queue is empty
            var offset = 0
            while offset + MemoryLayout<inotify_event>.size <= n {
                let event = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: inotify_event.self) }
                if event.mask & UInt32(IN_OPEN) != 0 { opens += 1 }
                offset += MemoryLayout<inotify_event>.size + Int(event.len)
            }
        }
    }

    deinit { close(descriptor) }
}
