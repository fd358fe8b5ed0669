import NIOPosix

/// Where a connection runs its blocking engine calls, off the event loop.
///
/// The server uses its `NIOThreadPool`; the unit tests use an executor they drain by hand, so the
/// connection handler can run on an `EmbeddedChannel` with no threads. This is the only reason for the
/// protocol.
protocol NBDBlockingExecutor: Sendable {
    /// Runs `work` later on another thread (never inline on the caller's event loop).
    /// - Parameter work: The work; its argument is true when the executor is shutting down and the work
    ///   should only be answered (with `ESHUTDOWN`), not done.
    func execute(_ work: @escaping @Sendable (_ cancelled: Bool) -> Void)
}

extension NIOThreadPool: NBDBlockingExecutor {
    func execute(_ work: @escaping @Sendable (_ cancelled: Bool) -> Void) {
        submit { state in work(state == .cancelled) }
    }
}
