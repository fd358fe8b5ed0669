import Synchronization

/// A flag that can be raised once, from any thread.
final class AtomicFlag: Sendable {
    private let raised = Atomic<Bool>(false)

    /// Raises the flag; true only for the one caller that raised it.
    func setOnce() -> Bool {
        raised.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
    }

    /// Whether the flag is raised.
    var isSet: Bool { raised.load(ordering: .acquiring) }
}
