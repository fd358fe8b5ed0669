import Foundation
import TestSupport

/// The model and crash suites' generator (the shared ``SplitMix64``).
typealias ModelRNG = SplitMix64

/// Small helpers shared by the model and crash suites.
enum ModelKit {
    /// `count` zero bytes (memset: `Array(repeating:count:)` is a slow loop in debug builds).
    static func zeroes(_ count: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { memset(buffer.baseAddress!, 0, count) }
            initialized = count
        }
    }

    /// Sets `bytes.count` to `count`, truncating or appending zeroes (fast in debug builds).
    static func resize(_ bytes: inout [UInt8], to count: Int) {
        if bytes.count > count {
            bytes.removeSubrange(count...)
        } else if bytes.count < count {
            if count > bytes.capacity { bytes.reserveCapacity(max(count, bytes.capacity * 2)) }
            bytes.append(contentsOf: zeroes(count - bytes.count))
        }
    }

    /// Whether every byte of `bytes[range]` is zero.
    static func isZero(_ bytes: [UInt8], _ range: Range<Int>) -> Bool {
        bytes.withUnsafeBytes { raw in
            zeroPage.withUnsafeBytes { zero in
                var i = range.lowerBound
                while i < range.upperBound {
                    let n = min(4096, range.upperBound - i)
                    if memcmp(raw.baseAddress! + i, zero.baseAddress!, n) != 0 { return false }
                    i += n
                }
                return true
            }
        }
    }

    private static let zeroPage = zeroes(4096)

    /// Writes a raw backing file of `size` random bytes at `dir/name`; returns its absolute path
    /// and content.
    static func makeRawBacking(
        in dir: String, name: String = "base.raw", size: Int,
        rng: inout ModelRNG
    ) throws -> (path: String, bytes: [UInt8]) {
        let bytes = rng.bytes(size)
        let path = dir + "/" + name
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw CocoaError(.fileWriteUnknown)
        }
        return (path, bytes)
    }

    /// Runs `body(0..<count)` on `count` threads at once and returns when all have finished.
    static func runThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let group = DispatchGroup()
        for i in 0..<count {
            group.enter()
            let thread = Thread {
                body(i)
                group.leave()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
    }

    /// Index of the first byte where `a` and `b` differ (compared over `min` of the lengths), or nil.
    static func firstDifference(_ a: [UInt8], _ b: [UInt8], from: Int = 0, to: Int? = nil) -> Int? {
        let end = min(to ?? Int.max, a.count, b.count)
        guard from < end else { return nil }
        return a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in
                // memcmp in chunks, then scan the differing chunk.
                var i = from
                let chunk = 4096
                while i < end {
                    let n = min(chunk, end - i)
                    if memcmp(pa.baseAddress! + i, pb.baseAddress! + i, n) != 0 {
                        for j in i..<i + n where pa[j] != pb[j] { return j }
                    }
                    i += n
                }
                return nil
            }
        }
    }

    /// A short hex dump of `bytes[at..<at+count]` for messages.
    static func hex(_ bytes: [UInt8], at: Int, count: Int = 8) -> String {
        let end = min(bytes.count, at + count)
        guard at < end else { return "<end>" }
        return bytes[at..<end].map { String(format: "%02x", $0) }.joined(separator: " ")
    }
}

/// A thread-safe list of failure messages collected by worker threads (issues are recorded by
/// the test body after the threads joined, where Swift Testing knows the current test).
final class FailureLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    private var total = 0

    func add(_ message: String) {
        lock.lock()
        total += 1
        if items.count < 20 { items.append(message) }
        lock.unlock()
    }

    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return total
    }
    var messages: [String] {
        lock.lock()
        defer { lock.unlock() }
        return items
    }
    var summary: String { messages.joined(separator: "\n") }
}
