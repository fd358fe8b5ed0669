import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `qemu-img bench`: a fixed number of reads or writes of one size at stepping offsets, many in
/// flight, optionally with periodic flushes, timed.
public enum Bench {
    /// What to run. Units: bytes unless named.
    public struct Options: Sendable {
        /// Requests to send (`-c`). Default 75000.
        public var count = 75000
        /// Requests in flight (`-d`). Default 64.
        public var depth = 64
        /// Bytes per request (`-s`). Default 4096.
        public var bufferSize = 4096
        /// Bytes between the offsets of consecutive requests (`-S`); nil: the buffer size.
        public var step: UInt64?
        /// First offset (`-o`), bytes.
        public var offset: UInt64 = 0
        /// Write instead of read (`-w`).
        public var write = false
        /// Byte the write buffer is filled with (`--pattern`). Default 0.
        public var pattern: UInt8 = 0
        /// Flush after every this many requests (`--flush-interval`), 0 never.
        public var flushInterval = 0
        /// Wait for requests in flight before each flush (default); `--no-drain` turns it off.
        public var drainOnFlush = true
        /// Stops between requests.
        public var cancellation: Cancellation?

        /// Default options.
        public init() {}

        /// The step actually used, bytes.
        public var effectiveStep: UInt64 { step ?? UInt64(bufferSize) }
    }

    /// The offset of request `index` (0-based), bytes: qemu-img's sequence, wrapping modulo the
    /// disk size.
    public static func offset(ofRequest index: Int, options: Options, diskSize: UInt64) -> UInt64 {
        guard diskSize > 0 else { return 0 }
        let start = options.offset % diskSize
        let (span, overflow) = options.effectiveStep.multipliedReportingOverflow(by: UInt64(index))
        if !overflow { return (start + span % diskSize) % diskSize }
        var pos = start
        for _ in 0..<index { pos = (pos + options.effectiveStep) % diskSize }
        return pos
    }

    /// Runs the benchmark on `disk`; returns the elapsed seconds.
    public static func run(disk: any Disk, options: Options) throws -> Double {
        guard options.bufferSize > 0, options.count >= 0, options.depth > 0 else {
            throw QEDError(.invalidArgument, "Invalid request size, count or depth", path: disk.path)
        }
        let size = disk.virtualSize
        let depth = min(options.depth, max(1, options.count))
        let startTime = now()
        // Batches between flushes: with draining, a flush waits for the whole batch.
        let batch = options.flushInterval > 0 ? options.flushInterval : max(1, options.count)
        var issued = 0
        while issued < options.count {
            let first = issued
            let last = min(options.count, issued + batch)
            let shared = Counter(next: first)
            try runWorkers(count: min(depth, last - first)) { _ in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: options.bufferSize, alignment: 4096)
                defer { buffer.deallocate() }
                buffer.initializeMemory(as: UInt8.self, repeating: options.pattern)
                while let i = shared.take(below: last) {
                    try options.cancellation?.check()
                    let at = offset(ofRequest: i, options: options, diskSize: size)
                    if options.write {
                        try disk.write(UnsafeRawBufferPointer(buffer), at: at)
                    } else {
                        try disk.read(into: buffer, at: at)
                    }
                    if !options.drainOnFlush && options.flushInterval > 0 && (i + 1) % options.flushInterval == 0 {
                        try disk.flush()
                    }
                }
            }
            issued = last
            if options.drainOnFlush && options.flushInterval > 0 && issued % options.flushInterval == 0 {
                try disk.flush()
            }
        }
        return now() - startTime
    }

    /// The next request to send, shared by a batch's workers.
    private final class Counter: Sendable {
        private let next: Atomic<Int>
        init(next: Int) { self.next = Atomic(next) }
        /// A request index to send, or nil when all below `limit` are taken.
        func take(below limit: Int) -> Int? {
            let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
            return i < limit ? i : nil
        }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
