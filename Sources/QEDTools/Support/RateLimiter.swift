#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Holds a copy to at most a given number of bytes per second (qemu-img's `-r`): after each step
/// the caller reports the bytes it moved, and `wait` sleeps until the time that many bytes are due
/// at the rate, in slices of at most 50 ms so that a cancellation is seen promptly.
///
/// Not thread-safe: one copying loop owns it.
struct RateLimiter {
    let bytesPerSecond: UInt64
    private let clock = ContinuousClock()
    private let start: ContinuousClock.Instant
    private var total: UInt64 = 0

    /// A limiter whose clock starts now; a rate of 0 is taken as 1 byte per second.
    init(bytesPerSecond: UInt64) {
        self.bytesPerSecond = max(1, bytesPerSecond)
        start = clock.now
    }

    /// Counts `bytes` more and sleeps until they are due; stops early (throwing) when cancelled.
    mutating func wait(after bytes: UInt64, cancellation: Cancellation?) throws {
        total = total.addingReportingOverflow(bytes).partialValue
        let due = start + .seconds(Double(total) / Double(bytesPerSecond))
        while clock.now < due {
            try cancellation?.check()
            let left = clock.now.duration(to: due)
            let slice = min(left, .milliseconds(50))
            let (seconds, attoseconds) = slice.components
            let micros = max(1, seconds * 1_000_000 + attoseconds / 1_000_000_000_000)
            usleep(useconds_t(clamping: micros))
        }
    }
}
