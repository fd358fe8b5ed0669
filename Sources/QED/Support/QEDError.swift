import SystemPackage

/// The one error type of the QED engine.
///
/// Every failure carries a machine-readable ``Code``, a human sentence that names the problem,
/// and, where there is one, the offending value (an offset, a size, a feature mask), the file and
/// the ``Cause`` underneath (the system call that failed and its `errno`).
/// Shaped after swift-nio's `FileSystemError`: callers switch on `code`, people read `description`.
public struct QEDError: Error, Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// What kind of failure this is. Stable: tools map codes to exit statuses and NBD errnos.
    ///
    /// A struct with static members rather than an enum, so that adding a code breaks no client's
    /// `switch` (a `switch` over codes needs a `default`). The raw value is the member's name.
    public struct Code: Hashable, Sendable, RawRepresentable, CustomStringConvertible {
        /// The code's name, e.g. `"notQED"`.
        public var rawValue: String

        /// Wraps a code name.
        public init(rawValue: String) { self.rawValue = rawValue }

        /// The code's name, e.g. `"notQED"`.
        public var description: String { rawValue }

        /// The file does not start with the QED magic.
        public static let notQED = Code(rawValue: "notQED")
        /// A header field of a format other than QED (add-cow) breaks one of its rules; the message
        /// names the field and the value.
        public static let invalidHeader = Code(rawValue: "invalidHeader")
        /// `features` has bits this implementation does not know (the value is the unknown mask).
        public static let unsupportedFeatures = Code(rawValue: "unsupportedFeatures")
        /// `cluster_size` is not a power of two in 4 KiB...64 MiB.
        public static let invalidClusterSize = Code(rawValue: "invalidClusterSize")
        /// `table_size` is not a power of two in 1...16.
        public static let invalidTableSize = Code(rawValue: "invalidTableSize")
        /// `image_size` is not a multiple of 512 or exceeds what the tables can address.
        public static let invalidImageSize = Code(rawValue: "invalidImageSize")
        /// An L1 table or L1 entry (L2 table offset) is misaligned, in the header area or past EOF.
        public static let invalidTableOffset = Code(rawValue: "invalidTableOffset")
        /// An L2 entry (data cluster offset) is misaligned, in the header area or past EOF.
        public static let invalidClusterOffset = Code(rawValue: "invalidClusterOffset")
        /// `header_size` times `cluster_size` does not fit 32 bits.
        public static let headerSizeTooLarge = Code(rawValue: "headerSizeTooLarge")
        /// The backing file name does not lie inside the header area.
        public static let invalidBackingName = Code(rawValue: "invalidBackingName")
        /// The backing chain cannot be opened: missing file, a loop, or too deep.
        public static let backingFile = Code(rawValue: "backingFile")
        /// The file is too short to hold what the header says it holds.
        public static let truncatedFile = Code(rawValue: "truncatedFile")
        /// A request lies (partly) outside the virtual disk.
        public static let outOfRange = Code(rawValue: "outOfRange")
        /// A write-type call on an image opened read-only.
        public static let readOnly = Code(rawValue: "readOnly")
        /// Another process holds a conflicting QEMU-style lock on the image.
        public static let locked = Code(rawValue: "locked")
        /// The path is not a regular file (QED keeps allocation state in the file length).
        public static let notRegularFile = Code(rawValue: "notRegularFile")
        /// A create option or argument is out of range or would produce an image QEMU cannot open.
        public static let invalidArgument = Code(rawValue: "invalidArgument")
        /// The operation is valid QED but not supported (shrinking, an unknown preallocation...).
        public static let unsupported = Code(rawValue: "unsupported")
        /// Metadata does not fit its space (a backing name longer than the header area).
        public static let noSpace = Code(rawValue: "noSpace")
        /// The image is marked or found inconsistent and the operation cannot go on.
        public static let corrupt = Code(rawValue: "corrupt")
        /// The image was closed.
        public static let closed = Code(rawValue: "closed")
        /// A system call failed; ``QEDError/cause`` says which and why.
        public static let io = Code(rawValue: "io")
    }

    /// What lies under an error: the `errno` a system call set, and which call it was.
    public struct Cause: Hashable, Sendable, CustomStringConvertible {
        /// The failed call, e.g. `"fdatasync"`; nil where the engine chose the `errno` itself (a lock
        /// conflict found by testing reads as `EAGAIN`, as in QEMU).
        public var syscall: String?
        /// The `errno` value.
        public var errno: Int32

        /// A cause: `errno` as set by `syscall` (nil when no call set it).
        public init(syscall: String?, errno: Int32) {
            self.syscall = syscall
            self.errno = errno
        }

        /// The C library's text for ``errno`` (`strerror`), e.g. `"Input/output error"`: what
        /// qemu-img prints after "Check failed: " or qemu-io after "read failed: ".
        public var reason: String { Errno(rawValue: errno).description }

        /// `fdatasync: Input/output error`, or only the reason when no call is known.
        public var description: String {
            guard let syscall else { return reason }
            return "\(syscall): \(reason)"
        }
    }

    /// What kind of failure this is.
    public var code: Code
    /// A sentence that names the problem, without the file name (``description`` adds it).
    public var message: String
    /// The offending on-disk or requested value (offset in bytes, size in bytes, feature mask...).
    public var value: UInt64?
    /// The file the error is about, when known.
    public var path: String?
    /// The failed system call under the error, for ``Code/io``, ``Code/locked`` and a few others.
    public var cause: Cause?

    /// The `errno` of the ``cause``. Setting it keeps the cause's system call.
    public var errno: Int32? {
        get { cause?.errno }
        set { cause = newValue.map { Cause(syscall: cause?.syscall, errno: $0) } }
    }

    /// Makes an error; `value` is the offending number, `path` the file, `errno` the syscall status
    /// (with `syscall`, the call that set it; `syscall` alone is ignored).
    public init(
        _ code: Code, _ message: String, value: UInt64? = nil, path: String? = nil, errno: Int32? = nil,
        syscall: String? = nil
    ) {
        self.init(code, message, value: value, path: path, cause: errno.map { Cause(syscall: syscall, errno: $0) })
    }

    /// Makes an error with its ``cause``.
    public init(_ code: Code, _ message: String, value: UInt64? = nil, path: String? = nil, cause: Cause?) {
        self.code = code
        self.message = message
        self.value = value
        self.path = path
        self.cause = cause
    }

    /// `file: message`, the form `qed-img` prints after its own name.
    public var description: String {
        if let path { return "\(path): \(message)" }
        return message
    }

    /// The whole chain, for logs and test failures: `file: message [io; fdatasync: Input/output
    /// error (errno 5)]`, and the offending value when there is one (`[invalidImageSize; value N]`).
    public var debugDescription: String {
        var details = code.rawValue
        if let cause { details += "; \(cause) (errno \(cause.errno))" }
        if let value { details += "; value \(value)" }
        return "\(description) [\(details)]"
    }

    /// The same error, naming `path` if it did not name a file yet.
    public func naming(_ path: String) -> QEDError {
        var copy = self
        if copy.path == nil { copy.path = path }
        return copy
    }
}
