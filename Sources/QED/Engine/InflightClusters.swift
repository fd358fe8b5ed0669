/// Guest cluster ranges that an allocating request is working on.
///
/// An allocating write (or zero-cluster write) holds its guest clusters from its second lookup
/// until its L2 entries are written, so two requests never allocate the same cluster. Requests on
/// other clusters — even in the same L2 table — proceed in parallel. Reads and in-place writes never
/// look here. State is guarded by `cond`'s mutex.
final class InflightClusters: @unchecked Sendable {
    private let cond = ConditionLock()
    private var ranges: [Range<UInt64>] = []
    /// Callers of ``acquire(_:)`` waiting for an overlapping range (for tests).
    private var waiting = 0

    /// Waits until no other request holds a cluster in `range`, then holds it.
    func acquire(_ range: Range<UInt64>) {
        cond.withLock {
            while ranges.contains(where: { $0.overlaps(range) }) {
                waiting += 1
                cond.wait()
                waiting -= 1
            }
            ranges.append(range)
        }
    }

    /// Releases a range taken with ``acquire(_:)``.
    func release(_ range: Range<UInt64>) {
        cond.withLock {
            if let i = ranges.firstIndex(of: range) { ranges.remove(at: i) }
        }
        cond.broadcast()
    }

    /// Number of ranges held (for tests).
    var count: Int { cond.withLock { ranges.count } }

    /// Number of callers waiting in ``acquire(_:)`` (for tests).
    var waiterCount: Int { cond.withLock { waiting } }
}
