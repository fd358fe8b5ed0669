import QED

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors as qemu-io words them: `strerror` of the errno QEMU's block layer would return.
enum IOErrors {
    /// The errno QEMU returns for `error`.
    static func errno(_ error: any Error) -> Int32 {
        guard let e = error as? QEDError else { return EIO }
        if let cause = e.cause { return cause.errno }
        switch e.code {
        case .outOfRange, .io, .truncatedFile, .corrupt: return EIO
        case .invalidTableOffset, .invalidClusterOffset, .invalidArgument: return EINVAL
        case .readOnly: return EPERM
        case .noSpace: return ENOSPC
        case .unsupported: return ENOTSUP
        case .closed: return EBADF
        default: return EIO
        }
    }

    /// `strerror` of ``errno(_:)``.
    static func reason(_ error: any Error) -> String { IOFormat.errorText(errno(error)) }

    /// What follows `can't open device FILE: ` (the library's message, QEMU's wording where known).
    static func openMessage(_ error: any Error, path: String) -> String {
        guard let e = error as? QEDError else { return "\(error)" }
        if e.code == .io, let cause = e.cause {
            return "Could not open '\(path)': \(cause.reason)"
        }
        return e.message
    }
}

/// `-s`: a temporary QED overlay over the image, so writes leave the image untouched.
enum IOSnapshot {
    /// Creates the overlay (in $TMPDIR, backed by `base` by its absolute path), opens it writable
    /// and records it in `session` to be deleted at close. Closes `base`.
    static func overlay(on base: any Disk, session: IOSession) throws -> any Disk {
        let size = base.virtualSize
        let format = base.format
        var backing = base.path
        if !backing.hasPrefix("/") {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            if getcwd(&buffer, buffer.count) != nil {
                backing = String(cString: buffer) + "/" + backing
            }
        }
        try base.close()
        let directory = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array((directory + "/qed-io-snapshot-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { buffer -> Int32 in
            guard let start = buffer.baseAddress else { return -1 }
            return mkstemp(start)
        }
        guard fd >= 0 else {
            throw QEDError(.io, "Could not create temporary overlay", path: directory, errno: errno)
        }
        close(fd)
        let path = String(cString: template)
        session.snapshotOverlay = path
        try DiskOpener.create(
            path: path, format: .qed,
            options: NewDiskOptions(size: size, backingFile: backing, backingFormat: format))
        return try DiskOpener.open(path: path, format: .qed, options: OpenOptions(readOnly: false))
    }
}
