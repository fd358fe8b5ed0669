#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension UnsafeMutableRawBufferPointer {
    /// Sets every byte to zero with one `memset`. (`initializeMemory(as:repeating:)` is the same in
    /// release builds but a per-byte generic loop in debug ones, where it dominated read tests.)
    @inline(__always)
    func zeroFill() {
        guard let base = baseAddress, count > 0 else { return }
        memset(base, 0, count)
    }
}
