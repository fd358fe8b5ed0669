public import QED

/// `qemu-img convert`: copies one or more disks (laid end to end) into a new image of any format
/// the ``DiskOpener`` registry can create.
public enum Convert {
    /// How to convert.
    public struct Options: Sendable {
        /// Output format. Default QED.
        public var format: DiskFormat = .qed
        /// Cluster size in bytes of a target with clusters (QED). Default 64 KiB.
        public var clusterSize: UInt32 = 65536
        /// Table size in clusters of a target with tables (QED). Default 4.
        public var tableSize: UInt32 = 4
        /// The raw image file of an add-cow target (`-o image_file=`); ignored by other formats.
        public var imageFile: String?
        /// Backing file of the target (`-B`; formats with backing files): only what differs from
        /// it is written.
        public var backingFile: String?
        /// Format of that backing file (probed when nil).
        public var backingFormat: DiskFormat?
        /// Zero-detection granularity in bytes (`-S`): blocks of this size that read as zeroes
        /// are not written; 0 writes everything. Default 4 KiB. Must be a multiple of 512.
        public var sparseSize: UInt64 = 4096
        /// Parallel workers (`-m`). Default 8.
        public var workers: Int = 8
        /// Allow writes out of order (`-W`); otherwise chunks are written in guest order.
        public var outOfOrder = false
        /// Write into an existing target (`-n`) instead of creating it.
        public var skipCreate = false
        /// Make the target durable: the engine's ordering syncs and one flush at the end (qemu-img's
        /// `-t writeback` and the other caching modes). False is `-t unsafe`, qemu-img convert's
        /// default: the target is opened ignoring flushes and never `fdatasync`ed, so the copy is
        /// complete in the page cache when `run` returns and reaches the disk when the kernel
        /// writes it back. Default true.
        public var durable = true
        /// Keep going past read errors of the sources (`--salvage`): a chunk that fails to read is
        /// read again 512 bytes at a time, the sectors that still fail become zeroes in the target,
        /// and each is reported to ``warning``. Default false: the first error stops the copy.
        public var salvage = false
        /// Receives the salvage warnings, qemu-img's words: `error while reading offset N: why`.
        public var warning: (@Sendable (String) -> Void)?
        /// Progress reports (fraction of bytes done).
        public var progress: ProgressHandler?
        /// Stops the copy at a chunk boundary; the target is flushed and closed.
        public var cancellation: Cancellation?

        /// Default options.
        public init() {}
    }

    /// What a conversion did. Units: bytes.
    public struct Result: Sendable, Equatable {
        /// Bytes copied as data.
        public var bytesWritten: UInt64
        /// Bytes made zero by zero writes.
        public var bytesZeroed: UInt64
        /// Size of the target disk.
        public var size: UInt64
    }

    /// Largest `-S` value accepted (qemu-img's 16 MiB buffer limit), bytes.
    public static let maxSparseSize: UInt64 = 16 << 20

    /// Converts `sources` into `target`, creating it (unless `skipCreate`).
    @discardableResult
    public static func run(sources: [any Disk], target: String, options: Options) throws -> Result {
        guard options.sparseSize % 512 == 0, options.sparseSize <= maxSparseSize else {
            throw QEDError(
                .invalidArgument,
                "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).",
                value: options.sparseSize)
        }
        let source = try ConcatenatedSource(sources)
        if !options.skipCreate {
            try DiskOpener.refuseOverwriting(target, sources: sources)
            // The format's driver rounds the size as the format needs (QED: whole sectors).
            var newDisk = NewDiskOptions(
                size: source.size, backingFile: options.backingFile,
                backingFormat: options.backingFormat,
                clusterSize: options.clusterSize, tableSize: options.tableSize)
            newDisk.imageFile = options.imageFile
            try DiskOpener.create(path: target, format: options.format, options: newDisk)
        }
        var openOptions = OpenOptions()
        openOptions.ignoreFlushes = !options.durable
        let out = try DiskOpener.open(path: target, format: options.format, options: openOptions)
        var result: Result
        do {
            guard out.virtualSize >= source.size else {
                throw QEDError(
                    .invalidArgument,
                    "Target is smaller than the source (\(out.virtualSize) < \(source.size) bytes)",
                    value: out.virtualSize, path: target)
            }
            let planner = ConvertPlanner(
                source: source, sparseSize: options.sparseSize,
                targetIsZero: !options.skipCreate, backing: out.backing,
                clusterSize: out.clusterSize ?? 65536)
            result = try copy(planner: planner, to: out, options: options)
            result.size = out.virtualSize
            try out.flush()
        } catch {
            try? out.close()
            throw error
        }
        try out.close()
        return result
    }

    /// The workers' shared state, guarded by `cond`'s mutex.
    private final class Shared: @unchecked Sendable {
        let cond = ConditionLock()
        /// Next chunk to hand out.
        var next = 0
        /// In guest order: the next chunk to write; every chunk below it is written.
        var turn = 0
        /// Planned chunks waiting for their turn.
        var ready: [Int: ConvertPlanner.Plan] = [:]
        /// Whether a worker is writing the ready chunks.
        var writing = false
        /// Broadcast when `ready` has drained to half its room, so waiting workers plan again in a
        /// batch rather than one wake-up (and one preempted writer) per chunk.
        let slotFreed = Condition()
        /// Broadcast when `turn` moves (workers whose plan points into their buffer wait for it).
        let turnMoved = Condition()
        var slotWaiters = 0
        var turnWaiters = 0
        var failed = false
        var written: UInt64 = 0
        var zeroed: UInt64 = 0

        /// Waits until `ready` has room. Call locked.
        func waitForSlot() {
            slotWaiters += 1
            cond.wait(on: slotFreed)
            slotWaiters -= 1
        }

        /// Waits until `turn` moves. Call locked.
        func waitForTurn() {
            turnWaiters += 1
            cond.wait(on: turnMoved)
            turnWaiters -= 1
        }

        /// After a chunk was written: wakes those waiting for their turn. Call locked.
        func chunkWritten() {
            if turnWaiters > 0 { turnMoved.broadcast() }
        }

        /// Wakes everyone (failure). Call locked or not.
        func wakeAll() {
            slotFreed.broadcast()
            turnMoved.broadcast()
        }
    }

    /// Performs one chunk's writes; returns the bytes written as data and as zeroes.
    private static func write(_ plan: ConvertPlanner.Plan, to out: any Disk) throws -> (written: UInt64, zeroed: UInt64)
    {
        var w: UInt64 = 0, z: UInt64 = 0
        try withExtendedLifetime(plan) {
            for a in plan.actions {
                if a.zero {
                    try out.writeZeroes(at: a.offset, length: a.length, unmap: false)
                    z += a.length
                } else {
                    try out.write(UnsafeRawBufferPointer(start: a.bytes, count: Int(a.length)), at: a.offset)
                    w += a.length
                }
            }
        }
        return (w, z)
    }

    /// Runs the copy on `options.workers` threads. Each plans chunks (reads or maps the source,
    /// detects zeroes) in parallel. Writes go in guest order unless `-W`: a planned chunk is put
    /// in `ready`, and whichever worker finds no one writing becomes the writer and writes every
    /// ready chunk in order, so consecutive writes follow each other without a thread handoff
    /// (buffered writes to one file serialise on its inode lock anyway) while the others plan.
    static func copy(planner: ConvertPlanner, to out: any Disk, options: Options) throws -> Result {
        let shared = Shared()
        let total = planner.chunkCount
        let counter = ProgressCounter(total: planner.source.size, handler: options.progress)
        let workers = max(1, min(options.workers, max(1, total)))
        let inOrder = !options.outOfOrder
        let maxReady = 2 * workers
        let lowWater = workers

        try runWorkers(count: workers) { _ in
            let size = Int(planner.chunkSize)
            // Touched only where data has to be read rather than mapped.
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
            let backingBuffer = UnsafeMutableRawBufferPointer.allocate(
                byteCount: planner.backing == nil ? 1 : size,
                alignment: 4096)
            defer {
                buffer.deallocate()
                backingBuffer.deallocate()
            }
            func fail() {
                shared.cond.withLock { shared.failed = true }
                shared.wakeAll()
            }
            while true {
                let index: Int? = shared.cond.withLock {
                    while !shared.failed && shared.ready.count >= maxReady { shared.waitForSlot() }
                    guard !shared.failed, shared.next < total else { return nil }
                    shared.next += 1
                    return shared.next - 1
                }
                guard let index else { return }
                let plan: ConvertPlanner.Plan
                do {
                    try options.cancellation?.check()
                    do {
                        plan = try planner.plan(chunk: index, buffer: buffer, backingBuffer: backingBuffer)
                    } catch is QEDError where options.salvage {
                        plan = planner.salvage(chunk: index, buffer: buffer, warning: options.warning)
                    }
                } catch {
                    fail()
                    throw error
                }
                if !inOrder {
                    do {
                        let (w, z) = try write(plan, to: out)
                        shared.cond.withLock {
                            shared.written += w
                            shared.zeroed += z
                        }
                        counter.add(planner.range(ofChunk: index).length)
                    } catch {
                        fail()
                        throw error
                    }
                    continue
                }
                shared.cond.lock()
                shared.ready[index] = plan
                if !shared.writing {
                    shared.writing = true
                    while !shared.failed, let next = shared.ready.removeValue(forKey: shared.turn) {
                        let chunk = shared.turn
                        let wakePlanners = shared.slotWaiters > 0 && shared.ready.count <= lowWater
                        shared.cond.unlock()
                        if wakePlanners { shared.slotFreed.broadcast() }
                        let outcome = Swift.Result { try write(next, to: out) }
                        if case .success = outcome { counter.add(planner.range(ofChunk: chunk).length) }
                        shared.cond.lock()
                        switch outcome {
                        case .success(let (w, z)):
                            shared.written += w
                            shared.zeroed += z
                            shared.turn += 1
                            shared.chunkWritten()
                        case .failure(let error):
                            shared.failed = true
                            shared.writing = false
                            shared.cond.unlock()
                            shared.wakeAll()
                            throw error
                        }
                    }
                    shared.writing = false
                }
                // The buffer may be reused only once the plan that points into it is written.
                while plan.usesBuffer && shared.turn <= index && !shared.failed { shared.waitForTurn() }
                let stop = shared.failed
                shared.cond.unlock()
                if stop { return }
            }
        }
        counter.finish()
        return Result(bytesWritten: shared.written, bytesZeroed: shared.zeroed, size: 0)
    }
}
