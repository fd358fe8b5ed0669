/// The one error type of the QED engine.
///
/// Every failure carries a machine-readable ``Code``, a human sentence that names the problem,
/// and, where there is one, the offending value (an offset, a size, a feature mask) and the file.
/// Shaped after swift-nio's `FileSystemError`: callers switch on `code`, people read `description`.
public struct QEDError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of failure this is. Stable: tools map codes to exit statuses and NBD errnos.
    public enum Code: String, Sendable, Equatable, CaseIterable {
        /// The file does not start with the QED magic.
        case notQED
        /// `features` has bits this implementation does not know (the value is the unknown mask).
        case unsupportedFeatures
        /// `cluster_size` is not a power of two in 4 KiB...64 MiB.
        case invalidClusterSize
        /// `table_size` is not a power of two in 1...16.
        case invalidTableSize
        /// `image_size` is not a multiple of 512 or exceeds what the tables can address.
        case invalidImageSize
        /// An L1 table or L1 entry (L2 table offset) is misaligned, in the header area or past EOF.
        case invalidTableOffset
        /// An L2 entry (data cluster offset) is misaligned, in the header area or past EOF.
        case invalidClusterOffset
        /// `header_size` times `cluster_size` does not fit 32 bits.
        case headerSizeTooLarge
        /// The backing file name does not lie inside the header area.
        case invalidBackingName
        /// The backing chain cannot be opened: missing file, a loop, or too deep.
        case backingFile
        /// The file is too short to hold what the header says it holds.
        case truncatedFile
        /// A request lies (partly) outside the virtual disk.
        case outOfRange
        /// A write-type call on an image opened read-only.
        case readOnly
        /// Another process holds a conflicting QEMU-style lock on the image.
        case locked
        /// The path is not a regular file (QED keeps allocation state in the file length).
        case notRegularFile
        /// A create option or argument is out of range or would produce an image QEMU cannot open.
        case invalidArgument
        /// The operation is valid QED but not supported (shrinking, an unknown preallocation...).
        case unsupported
        /// Metadata does not fit its space (a backing name longer than the header area).
        case noSpace
        /// The image is marked or found inconsistent and the operation cannot go on.
        case corrupt
        /// The image was closed.
        case closed
        /// A system call failed; `errno` says which.
        case io
    }

    /// What kind of failure this is.
    public var code: Code
    /// A sentence that names the problem, without the file name (``description`` adds it).
    public var message: String
    /// The offending on-disk or requested value (offset in bytes, size in bytes, feature mask...).
    public var value: UInt64?
    /// The file the error is about, when known.
    public var path: String?
    /// The `errno` of a failed system call, for ``Code/io`` and ``Code/locked``.
    public var errno: Int32?

    /// Makes an error; `value` is the offending number, `path` the file, `errno` the syscall status.
    public init(_ code: Code, _ message: String, value: UInt64? = nil, path: String? = nil, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.value = value
        self.path = path
        self.errno = errno
    }

    /// `file: message`, the form `qed-img` prints after its own name.
    public var description: String {
        if let path { return "\(path): \(message)" }
        return message
    }

    /// The same error, naming `path` if it did not name a file yet.
    public func naming(_ path: String) -> QEDError {
        var copy = self
        if copy.path == nil { copy.path = path }
        return copy
    }
}
