import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The first failure that may have cost an image durability or made its metadata in memory and on
/// disk disagree: a failed `fdatasync` (the kernel may have dropped the dirty pages it could not
/// write) or a failed header or table write. Once one is recorded the image is *failed*: every
/// later write, flush and metadata change throws ``failedError`` until the image is reopened.
///
/// The hot path only does ``check()``, one atomic acquire load. `raised` is stored (release) after
/// `first` is set, so a thread that sees it raised also sees the error; `first` is guarded by its
/// mutex and never changes once set.
final class StickyFailure: Sendable {
    private let raised = Atomic<Bool>(false)
    private let first = Mutex<QEDError?>(nil)
    /// The file the failures are about, for messages.
    let path: String

    /// A latch for the image file at `path` (for messages).
    init(path: String) { self.path = path }

    /// Records `error` unless a failure was recorded already (the first one is the one reported).
    func record(_ error: any Error) {
        let qed =
            (error as? QEDError)?.naming(path)
            ?? QEDError(.io, "\(error)", path: path, errno: EIO)
        first.withLock { if $0 == nil { $0 = qed } }
        raised.store(true, ordering: .releasing)
    }

    /// Whether a failure was recorded.
    @inline(__always)
    var isFailed: Bool { raised.load(ordering: .acquiring) }

    /// The first recorded failure as it was thrown, or nil.
    var firstError: QEDError? { isFailed ? first.withLock { $0 } : nil }

    /// The error every call after the first failure throws: code ``QEDError/Code/io``, the first
    /// failure's cause (its system call and `errno`; EIO when it had none) and value, and a message
    /// that quotes it.
    var failedError: QEDError? {
        guard let first = firstError else { return nil }
        return QEDError(
            .io, "the image failed earlier and must be reopened: \(first.message)",
            value: first.value, path: first.path ?? path,
            cause: first.cause ?? QEDError.Cause(syscall: nil, errno: EIO))
    }

    /// Throws ``failedError`` if a failure was recorded (one atomic load otherwise).
    @inline(__always)
    func check() throws {
        if isFailed, let error = failedError { throw error }
    }

    /// Runs `body`; if it throws, records the error first (for writes whose failure leaves the disk
    /// in an unknown state: header and table writes).
    func recording<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            record(error)
            throw error
        }
    }
}
