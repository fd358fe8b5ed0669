#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An error value carried in a simple reply or a structured error chunk (`NBD_E*`).
///
/// The numbers are fixed by the protocol (they are Linux errno values) and are independent of the host
/// platform; use ``init(errno:)`` to translate a host `errno`.
public struct NBDError: RawRepresentable, Hashable, Sendable, Error, CustomStringConvertible {
    /// The error value as sent on the wire. Never zero for a real error.
    public var rawValue: UInt32

    /// Wraps a raw error value.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NBD_EPERM` (1): operation not permitted, e.g. a write to a read-only export.
    public static let permissionDenied = NBDError(rawValue: 1)
    /// `NBD_EIO` (5): input/output error.
    public static let io = NBDError(rawValue: 5)
    /// `NBD_ENOMEM` (12): out of memory.
    public static let outOfMemory = NBDError(rawValue: 12)
    /// `NBD_EINVAL` (22): invalid request.
    public static let invalid = NBDError(rawValue: 22)
    /// `NBD_ENOSPC` (28): no space left, e.g. a write past the end of the export.
    public static let noSpace = NBDError(rawValue: 28)
    /// `NBD_EOVERFLOW` (75): value too large, e.g. a DF read that cannot be sent unfragmented.
    public static let overflow = NBDError(rawValue: 75)
    /// `NBD_ENOTSUP` (95): not supported, e.g. a FAST_ZERO request that would not be fast.
    public static let notSupported = NBDError(rawValue: 95)
    /// `NBD_ESHUTDOWN` (108): the server is shutting down.
    public static let shutdown = NBDError(rawValue: 108)

    /// Translates a host `errno` into the closest NBD error value, the way qemu and nbdkit do:
    /// `EROFS`/`EACCES` → EPERM, `EDQUOT`/`EFBIG` → ENOSPC, `EOPNOTSUPP` → ENOTSUP, and anything
    /// the protocol does not name → EINVAL.
    /// - Parameter errno: A host platform error number.
    public init(errno: Int32) {
        switch errno {
        case EPERM, EROFS, EACCES: self = .permissionDenied
        case EIO: self = .io
        case ENOMEM: self = .outOfMemory
        case ENOSPC, EDQUOT, EFBIG: self = .noSpace
        case EOVERFLOW: self = .overflow
        case ENOTSUP, EOPNOTSUPP: self = .notSupported
        case ESHUTDOWN: self = .shutdown
        default: self = .invalid
        }
    }

    /// The conventional name, e.g. `"EINVAL"`.
    public var description: String {
        switch self.rawValue {
        case 1: return "EPERM"
        case 5: return "EIO"
        case 12: return "ENOMEM"
        case 22: return "EINVAL"
        case 28: return "ENOSPC"
        case 75: return "EOVERFLOW"
        case 95: return "ENOTSUP"
        case 108: return "ESHUTDOWN"
        default: return "NBD error \(self.rawValue)"
        }
    }
}

/// A fatal framing error found while decoding client bytes. After one of these the stream cannot be
/// resynchronised, so the server must drop the connection.
public enum NBDDecodingError: Error, Hashable, Sendable {
    /// An option request did not start with `IHAVEOPT`; carries the 8 bytes found instead.
    case invalidOptionMagic(UInt64)
    /// An option request announced more data than the configured limit (in bytes).
    case optionTooLarge(option: NBDOption, length: UInt32, limit: Int)
    /// A transmission request did not start with the request magic; carries the 4 bytes found instead.
    case invalidRequestMagic(UInt32)
    /// An extended request announced a payload of 2³² bytes or more (no server advertises such a maximum;
    /// the protocol asks for a hard disconnect rather than reading it).
    case payloadTooLarge(command: NBDCommand, length: UInt64)
    /// The client closed its side in the middle of a message; carries the number of bytes left unparsed
    /// (for a WRITE payload being discarded, the bytes still expected).
    case truncatedMessage(missingOrBufferedBytes: Int)
}
