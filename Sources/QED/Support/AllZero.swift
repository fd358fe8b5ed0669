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
