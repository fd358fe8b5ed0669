import Synchronization

/// The in-memory header, shared by the image and its NEED_CHECK timer. The mutex guards the
/// value and serialises every header write, so two header updates never interleave on disk.
final class HeaderStore: Sendable {
    private let value: Mutex<Header>

    init(_ header: Header) { value = Mutex(header) }

    /// Runs `body` with the header, holding the mutex (write the header to disk inside it).
    func withLock<T>(_ body: (inout Header) throws -> T) rethrows -> T {
        try value.withLock { try body(&$0) }
    }
}
