import Synchronization

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
