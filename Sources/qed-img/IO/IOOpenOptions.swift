import QED

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How qemu-io opens its image (the startup options, and `open`'s).
struct IOOpenOptions {
    var readOnly = false
    /// -s: writes go to a temporary overlay that is deleted at close.
    var snapshot = false
    var forceShare = false
    /// --image-opts: the file argument is an option string.
    var imageOpts = false
    /// -f, or `driver=` in the options.
    var format: String?
    /// Flush after every write (qemu-io's default; off with -t writeback/none/unsafe or -n).
    var writethrough = true
    /// -t unsafe: flushes are not passed to the disk.
    var ignoreFlushes = false
    /// `open -o` / --image-opts `key=value` pairs.
    var keyValues: [(String, String)] = []

    /// Applies -t/-n/-i/-d (and `open`'s -k); qemu-io's message for a bad value.
    mutating func apply(_ option: String, _ value: String) -> String? {
        switch option {
        case "n":
            writethrough = false
        case "t":
            switch value {
            case "writethrough": writethrough = true
            case "writeback", "none", "off": writethrough = false
            case "directsync": writethrough = true
            case "unsafe":
                writethrough = false
                ignoreFlushes = true
            default: return "Invalid cache option: \(value)"
            }
        case "i":
            guard ["threads", "native", "io_uring"].contains(value) else { return "Invalid aio option: \(value)" }
        case "d":
            guard ["ignore", "off", "unmap", "on"].contains(value) else { return "Invalid discard option: \(value)" }
        case "k":
            break
        default:
            return "invalid option -- '\(option)'"
        }
        return nil
    }

    /// Parses `key=value,key=value` (`,,` is a literal comma) into `keyValues`; false if malformed.
    mutating func addKeyValues(_ text: String) -> String? {
        let items = OptionList.split(text)
        for item in items where !item.isEmpty {
            guard let eq = item.firstIndex(of: "=") else { return "Invalid parameter '\(item)'" }
            keyValues.append((String(item[..<eq]), String(item[item.index(after: eq)...])))
        }
        return nil
    }

    /// The file to open and its format from `keyValues` (driver=, file.filename= or filename=,
    /// file.driver=file, read-only=, force-share=); qemu's message for what this program cannot honour.
    /// A format as `file.driver` (with `file.file.filename=`) nests: `container` is the format of the
    /// file at `path`, whose guest data holds the image to open.
    func resolvedTarget(file: String?) -> Result<IOOpenTarget, IOOpenError> {
        var path = file.map(hostPath)
        var device: String?
        // `blkdebug::FILE` (QEMU's debugging driver with no rules): its only use here is `align`,
        // which changes how QEMU splits requests, not what they read or write; rules (error
        // injection, break points) are not supported.
        var blkdebug = false
        if let name = file, name.hasPrefix("blkdebug:") {
            let rest = name.dropFirst("blkdebug:".count)
            guard rest.hasPrefix(":") else {
                return .failure(.message("blkdebug rule files (error injection) are not supported"))
            }
            path = String(rest.dropFirst())
            blkdebug = true
        }
        var format: DiskFormat?
        var container: DiskFormat?
        var readOnly = self.readOnly
        if let name = self.format {
            guard let f = DiskOpener.format(named: name) else { return .failure(.message("Unknown driver '\(name)'")) }
            format = f
        }
        for (key, value) in keyValues {
            switch key {
            case "driver":
                // The protocol drivers: the file's bytes, as raw.
                if value == "file" {
                    format = .raw
                    continue
                }
                if value == "host_device" || value == "host_cdrom" {
                    device = value
                    continue
                }
                guard let f = DiskOpener.format(named: value) else {
                    return .failure(.message("Unknown driver '\(value)'"))
                }
                format = f
            case "file.filename", "filename", "file":
                path = value
            case "file.driver":
                if value == "file" { continue }
                guard let f = DiskOpener.format(named: value) else {
                    return .failure(.message("Unknown protocol '\(value)'"))
                }
                container = f
            case "file.file.filename" where container != nil:
                path = value
            case "file.file.driver" where container != nil:
                guard value == "file" else { return .failure(.message("Unknown protocol '\(value)'")) }
            case "file.align" where blkdebug:
                guard case .success(let n) = IOFormat.number(value), n > 0, n & (n - 1) == 0 else {
                    return .failure(.message("Cannot meet constraints with align \(value)"))
                }
            case "read-only":
                readOnly = value == "on"
            case "force-share", "locking", "file.locking", "discard", "cache.direct", "cache.no-flush":
                continue
            default:
                return .failure(.message("Block format does not support the option '\(key)'"))
            }
        }
        guard let path else { return .failure(.message("A block device must be specified for \"file\"")) }
        if let device { return .failure(.message(IOOpenOptions.deviceRefusal(device, path: path, readOnly: readOnly))) }
        return .success(IOOpenTarget(path: path, format: format, readOnly: readOnly, container: container))
    }
}

/// What an `open` names: the file, the format to open it as (probed when nil), and, for nested
/// formats, the format of the image at `path` whose guest data holds it.
struct IOOpenTarget {
    var path: String
    var format: DiskFormat?
    var readOnly: Bool
    var container: DiskFormat?
}

/// Why an `open` cannot be honoured.
enum IOOpenError: Error {
    case message(String)
}

extension IOOpenOptions {
    /// QEMU's host_device and host_cdrom drivers open block and character devices, which this
    /// program does not: their message for what is not a device (or, writable, a directory), else
    /// that devices are not supported.
    static func deviceRefusal(_ driver: String, path: String, readOnly: Bool) -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { return "Could not open '\(path)': \(IOFormat.errorText(errno))" }
        let type = st.st_mode & S_IFMT
        if type == S_IFDIR && !readOnly { return "Could not open '\(path)': \(IOFormat.errorText(EISDIR))" }
        if type != S_IFBLK && type != S_IFCHR {
            return "'\(driver)' driver requires '\(path)' to be either a character or block device"
        }
        return "the '\(driver)' driver (host devices) is not supported"
    }
}
