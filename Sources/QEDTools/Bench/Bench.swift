public import QED
import Synchronization

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

    /// How long the run took.
    public struct Result: Sendable, Equatable {
        /// From the first request sent to the last one done (with its flush).
        public var elapsed: Duration

        /// ``elapsed`` in seconds.
        public var seconds: Double {
            let (s, atto) = elapsed.components
            return Double(s) + Double(atto) / 1e18
        }
    }

    /// The offset of request `index` (0-based), bytes: qemu-img's sequence, wrapping modulo the
    /// disk size.
    static func offset(ofRequest index: Int, options: Options, diskSize: UInt64) -> UInt64 {
        guard diskSize > 0 else { return 0 }
        let start = options.offset % diskSize
        let (span, overflow) = options.effectiveStep.multipliedReportingOverflow(by: UInt64(index))
        if !overflow { return (start + span % diskSize) % diskSize }
        var pos = start
        for _ in 0..<index { pos = (pos + options.effectiveStep) % diskSize }
        return pos
    }

    /// Runs the benchmark on `disk`.
    public static func run(disk: any Disk, options: Options) throws -> Result {
        guard options.bufferSize > 0, options.count >= 0, options.depth > 0 else {
            throw QEDError(.invalidArgument, "Invalid request size, count or depth", path: disk.path)
        }
        let size = disk.virtualSize
        let clock = ContinuousClock()
        let startTime = clock.now
        guard options.count > 0 else { return Result(elapsed: clock.now - startTime) }
        // Batches between flushes: with draining, a flush waits for the whole batch.
        let batch = options.flushInterval > 0 ? options.flushInterval : options.count
        let batches = (options.count + batch - 1) / batch
        // The workers start once and meet at a barrier at the end of each batch (a batch never has
        // more than `batch` requests, nor the run more than `count`).
        let batchState = Batches(workers: min(options.depth, batch, options.count))
        try runWorkers(count: batchState.workers) { _ in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: options.bufferSize, alignment: 4096)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: options.pattern)
            for b in 0..<batches {
                let first = b * batch
                let last = min(options.count, first + batch)
                var failure: (any Error)?
                do {
                    while let j = batchState.take(below: last - first) {
                        let i = first + j
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
                } catch {
                    failure = error
                }
                let goOn = try batchState.finish(failed: failure != nil) {
                    if options.drainOnFlush && options.flushInterval > 0 && last % options.flushInterval == 0 {
                        try disk.flush()
                    }
                }
                if let failure { throw failure }
                if !goOn { return }
            }
        }
        return Result(elapsed: clock.now - startTime)
    }

    /// The workers' shared state across batches: which request of the current batch is next, and
    /// the barrier at each batch's end, where the last worker to arrive runs the batch-end flush
    /// and starts the next batch while the others wait.
    ///
    /// `@unchecked Sendable`: `arrived`, `generation` and `failed` are only touched with `lock`
    /// held; `next` is atomic, and is reset only while every other worker waits at the barrier.
    private final class Batches: @unchecked Sendable {
        /// Worker threads taking part.
        let workers: Int
        /// Index within the current batch of the next request to send.
        private let next = Atomic<Int>(0)
        private let lock = ConditionLock()
        /// Workers waiting at the barrier.
        private var arrived = 0
        /// Batches finished; waiters wait for it to change.
        private var generation = 0
        /// A worker threw, or the batch-end action did: no further batch starts.
        private var failed = false

        init(workers: Int) { self.workers = workers }

        /// The index within the current batch of a request to send, or nil when all `size` are taken.
        func take(below size: Int) -> Int? {
            let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
            return i < size ? i : nil
        }

        /// Waits until every worker has finished the current batch (`didFail`: this one stopped on
        /// an error); the last to arrive runs `atEnd` unless a worker failed, and releases the
        /// others. Returns whether to go on with the next batch; rethrows what `atEnd` throws.
        func finish(failed didFail: Bool, atEnd: () throws -> Void) throws -> Bool {
            try lock.withLock {
                if didFail { failed = true }
                arrived += 1
                if arrived < workers {
                    let current = generation
                    while generation == current { lock.wait() }
                    return !failed
                }
                arrived = 0
                next.store(0, ordering: .relaxed)
                generation += 1
                defer { lock.broadcast() }
                if failed { return false }
                do {
                    try atEnd()
                } catch {
                    failed = true
                    throw error
                }
                return true
            }
        }
    }
}
