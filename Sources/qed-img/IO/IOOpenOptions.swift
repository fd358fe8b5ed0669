import QED

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
        var items: [String] = []
        var current = ""
        var chars = Array(text)
        chars.append("\0")
        var i = 0
        while i < chars.count - 1 {
            if chars[i] == "," {
                if chars[i + 1] == "," {
                    current.append(",")
                    i += 2
                    continue
                }
                items.append(current)
                current = ""
            } else {
                current.append(chars[i])
            }
            i += 1
        }
        items.append(current)
        for item in items where !item.isEmpty {
            guard let eq = item.firstIndex(of: "=") else { return "Invalid parameter '\(item)'" }
            keyValues.append((String(item[..<eq]), String(item[item.index(after: eq)...])))
        }
        return nil
    }

    /// The file to open and its format from `keyValues` (driver=, file.filename= or filename=,
    /// file.driver=file, read-only=, force-share=); qemu's message for what this program cannot honour.
    func resolvedTarget(file: String?) -> Result<(path: String, format: DiskFormat?, readOnly: Bool), IOOpenError> {
        var path = file
        var format: DiskFormat?
        var readOnly = self.readOnly
        if let name = self.format {
            guard let f = DiskOpener.format(named: name) else { return .failure(.message("Unknown driver '\(name)'")) }
            format = f
        }
        for (key, value) in keyValues {
            switch key {
            case "driver":
                if value == "file" { continue }
                guard let f = DiskOpener.format(named: value) else {
                    return .failure(.message("Unknown driver '\(value)'"))
                }
                format = f
            case "file.filename", "filename", "file":
                path = value
            case "file.driver":
                guard value == "file" else { return .failure(.message("Unknown protocol '\(value)'")) }
            case "read-only":
                readOnly = value == "on"
            case "force-share", "locking", "file.locking", "discard", "cache.direct", "cache.no-flush":
                continue
            default:
                return .failure(.message("Block format does not support the option '\(key)'"))
            }
        }
        guard let path else { return .failure(.message("A block device must be specified for \"file\"")) }
        return .success((path, format, readOnly))
    }
}

/// Why an `open` cannot be honoured.
enum IOOpenError: Error {
    case message(String)
}
