import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A cancellation request shared between whoever wants an operation stopped (a signal handler)
/// and the long operations, which poll it between chunks and stop at a consistent point.
public final class Cancellation: Sendable {
    private let flag = Atomic<Bool>(false)

    /// A request not yet raised.
    public init() {}

    /// Asks every operation polling this to stop.
    public func cancel() { flag.store(true, ordering: .releasing) }

    /// Whether a stop was asked for.
    public var isCancelled: Bool { flag.load(ordering: .acquiring) }

    /// Throws ``OperationCancelled`` if a stop was asked for.
    public func check() throws {
        if isCancelled { throw OperationCancelled() }
    }
}

/// Thrown by an operation that stopped because its ``Cancellation`` was raised. Every image it
/// wrote is flushed and consistent when this is thrown.
public struct OperationCancelled: Error, Sendable, CustomStringConvertible {
    public init() {}
    public var description: String { "interrupted" }
}

/// Progress reports: called with the fraction done, 0...1 (from any thread, serialised).
public typealias ProgressHandler = @Sendable (Double) -> Void

/// Counts done bytes and reports the fraction to a ``ProgressHandler``; thread-safe.
final class ProgressCounter: Sendable {
    private let done = Mutex<UInt64>(0)
    let total: UInt64
    let handler: ProgressHandler?

    init(total: UInt64, handler: ProgressHandler?) {
        self.total = total
        self.handler = handler
        handler?(0)
    }

    func add(_ bytes: UInt64) {
        guard let handler else { return }
        done.withLock { d in
            d += bytes
            handler(total == 0 ? 1 : min(1, Double(d) / Double(total)))
        }
    }

    func finish() { handler?(1) }
}

/// Runs `count` worker threads executing `body(workerIndex)` and waits for all of them. Real
/// threads (not a task pool): the workers block on file I/O. The first error thrown is rethrown
/// after every worker has returned.
func runWorkers(count: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
    final class Errors: Sendable {
        let list = Mutex<[any Error]>([])
        func add(_ e: any Error) { list.withLock { $0.append(e) } }
    }
    final class Box: Sendable {
        let body: @Sendable (Int) throws -> Void
        let index: Int
        let errors: Errors
        init(body: @escaping @Sendable (Int) throws -> Void, index: Int, errors: Errors) {
            self.body = body
            self.index = index
            self.errors = errors
        }
        func run() {
            do { try body(index) } catch { errors.add(error) }
        }
    }
    if count <= 1 {
        try body(0)
        return
    }
    let errors = Errors()
    var threads: [pthread_t] = []
    for index in 0..<count {
        let box = Box(body: body, index: index, errors: errors)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(box).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, context)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(context).release()
            box.run()
            continue
        }
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
    let list = errors.list.withLock { $0 }
    // A cancellation is less interesting than a real failure.
    if let real = list.first(where: { !($0 is OperationCancelled) }) { throw real }
    if let first = list.first { throw first }
}

/// Whether every byte of `buffer` is zero. Checks the first 16 bytes alone (data usually fails
/// there), then ORs 128-byte blocks together as vectors and tests once per block. Used by
/// convert's zero detection and by the NBD server (detect-zeroes, sparse READ replies).
@inlinable
public func isAllZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
    guard let base = buffer.baseAddress else { return true }
    let n = buffer.count
    var i = 0
    if n >= 16 {
        if base.loadUnaligned(as: SIMD2<UInt64>.self) != .zero { return false }
        i = 16
    }
    while i + 128 <= n {
        var v = base.loadUnaligned(fromByteOffset: i, as: SIMD8<UInt64>.self)
        v |= base.loadUnaligned(fromByteOffset: i + 64, as: SIMD8<UInt64>.self)
        if v != .zero { return false }
        i += 128
    }
    while i + 8 <= n {
        if base.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
        i += 8
    }
    while i < n {
        if base.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
        i += 1
    }
    return true
}
