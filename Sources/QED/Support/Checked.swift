/// Overflow-checked arithmetic on on-disk numbers: every sum and product of values read from an
/// image goes through these, so a hostile header yields a ``QEDError`` instead of a trap.
extension UInt64 {
    /// `self + other`, or a `code` error naming `what` when the sum does not fit 64 bits.
    @inlinable
    func adding(_ other: UInt64, or code: QEDError.Code, _ what: @autoclosure () -> String) throws(QEDError) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        if overflow { throw QEDError(code, "\(what()) overflows 64 bits", value: self) }
        return sum
    }

    /// `self * other`, or a `code` error naming `what` when the product does not fit 64 bits.
    @inlinable
    func multiplied(
        by other: UInt64, or code: QEDError.Code, _ what: @autoclosure () -> String
    ) throws(QEDError) -> UInt64 {
        let (product, overflow) = multipliedReportingOverflow(by: other)
        if overflow { throw QEDError(code, "\(what()) overflows 64 bits", value: self) }
        return product
    }

    /// Whether this is a non-zero power of two.
    @inlinable
    var isPowerOfTwo: Bool { self != 0 && (self & (self &- 1)) == 0 }

    /// `self` rounded up to a multiple of `alignment` (a power of two); nil on overflow.
    @inlinable
    func roundedUp(toMultipleOf alignment: UInt64) -> UInt64? {
        let (sum, overflow) = addingReportingOverflow(alignment &- 1)
        return overflow ? nil : sum & ~(alignment &- 1)
    }

    /// `self` rounded down to a multiple of `alignment` (a power of two).
    @inlinable
    func roundedDown(toMultipleOf alignment: UInt64) -> UInt64 { self & ~(alignment &- 1) }
}
