import Synchronization

/// Append-only cluster allocation, as QEMU does it: the next free cluster is the end of the file.
///
/// Allocating grows the file at once with `setLength` (a hole that reads as zeroes), so a freshly
/// allocated cluster is known to be zero and concurrent allocations never shrink one another.
/// `fileSize` (bytes, a cluster multiple) is what offsets are validated against; it is guarded by
/// the mutex for writers and mirrored in an atomic for lock-free reads on the I/O path.
final class Allocator: Sendable {
    private struct State {
        /// End of allocated space: where the next allocation starts (bytes, cluster multiple).
        var nextFree: UInt64
        /// The length the file has been grown to (bytes) — never shrunk by allocation.
        var extendedTo: UInt64
    }

    private let state: Mutex<State>
    private let published: Atomic<UInt64>
    private let clusterSize: UInt64

    /// Starts allocating at `fileSize` (bytes, cluster multiple) for a file `fileLength` long.
    init(fileSize: UInt64, fileLength: UInt64, clusterSize: UInt64) {
        state = Mutex(State(nextFree: fileSize, extendedTo: fileLength))
        published = Atomic(fileSize)
        self.clusterSize = clusterSize
    }

    /// Bytes of the file in use (a cluster multiple); valid offsets lie below it.
    var fileSize: UInt64 { published.load(ordering: .acquiring) }

    /// Allocates `count` contiguous clusters and returns the byte offset of the first; the file is
    /// already long enough to hold them when this returns.
    func allocate(clusters count: UInt64, in file: any BlockFile) throws -> UInt64 {
        try state.withLock { s in
            let bytes = try count.multiplied(by: clusterSize, or: .noSpace, "allocation size")
            let end = try s.nextFree.adding(bytes, or: .noSpace, "image file size")
            guard end <= UInt64(Int64.max) else {
                throw QEDError(.noSpace, "the image file cannot grow past \(Int64.max) bytes", value: end)
            }
            if end > s.extendedTo {
                try file.setLength(end)
                s.extendedTo = end
            }
            let start = s.nextFree
            s.nextFree = end
            published.store(end, ordering: .releasing)
            return start
        }
    }

    /// Forgets clusters at the end after a repair truncated the file to `fileSize` bytes.
    func truncated(to fileSize: UInt64) {
        state.withLock { s in
            s.nextFree = fileSize
            s.extendedTo = fileSize
            published.store(fileSize, ordering: .releasing)
        }
    }
}
