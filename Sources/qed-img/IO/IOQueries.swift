import QED
import QEDTools

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// alloc, map, length, info, discard, flush, truncate, open, help, sleep, sigraise.
extension IOSession {
    /// `alloc offset [count]`: how many of the bytes this layer (not its backing file) provides.
    func alloc(_ args: [String]) -> Bool {
        guard let disk, let offset = number(args[0]) else { return false }
        var count: UInt64 = 512
        if args.count == 2 {
            guard let n = number(args[1]) else { return false }
            count = n
        }
        let size = disk.virtualSize
        count = offset >= size ? 0 : min(count, size - offset)
        var allocated: UInt64 = 0
        if count > 0 {
            do {
                for extent in try disk.extents(at: offset, length: count) where extent.depth == 0 && extent.present {
                    allocated += extent.length
                }
            } catch {
                output.out("is_allocated failed: \(IOErrors.reason(error))\n")
                return false
            }
        }
        output.out("\(allocated)/\(count) bytes allocated at offset \(Sizes.ioString(Double(offset)))\n")
        return true
    }

    /// `map`: the runs this layer provides and does not.
    func map() -> Bool {
        guard let disk else { return false }
        do {
            for run in try AllocationMap.run(disk: disk, options: .init()).runs {
                output.out(
                    "\(Sizes.ioString(Double(run.length))) (0x\(String(run.length, radix: 16))) bytes "
                        + "\(run.allocated ? "    allocated" : "not allocated") at offset "
                        + "\(Sizes.ioString(Double(run.offset))) (0x\(String(run.offset, radix: 16)))\n")
            }
        } catch {
            output.error("Failed to get allocation status: \(IOErrors.reason(error))")
            return false
        }
        return true
    }

    /// `length`: the virtual size.
    func length() -> Bool {
        guard let disk else { return false }
        output.out(Sizes.ioString(Double(disk.virtualSize)) + "\n")
        return true
    }

    /// `info`: format, cluster size (0 for raw), vm state offset (QED has no format-specific information).
    func info() -> Bool {
        guard let disk else { return false }
        output.out("format name: \(disk.format.rawValue)\n")
        let cluster = disk.clusterSize ?? 0
        output.out("cluster size: \(Sizes.ioString(Double(cluster)))\nvm state offset: 0 bytes\n")
        return true
    }

    /// `discard [-Cq] off len`.
    func discard(_ name: String, _ args: [String]) -> Bool {
        guard let disk, let parsed = getopt(name, "Cq", args) else { return false }
        let parsable = parsed.options.contains { $0.name == "C" }
        let quiet = parsed.options.contains { $0.name == "q" }
        guard parsed.operands.count == 2 else {
            usage(name)
            return false
        }
        guard let offset = number(parsed.operands[0]), let count = number(parsed.operands[1]) else { return false }
        if count > IOFormat.maxRequest {
            output.out("length cannot exceed \(IOFormat.maxRequest), given \(parsed.operands[1])\n")
            return false
        }
        let start = monotonicSeconds()
        do {
            let (end, overflow) = offset.addingReportingOverflow(count)
            guard !overflow, end <= disk.virtualSize else {
                throw QEDError(.outOfRange, "discard past the end of the disk", value: offset)
            }
            if count > 0 { try disk.discard(at: offset, length: count) }
        } catch {
            output.out("discard failed: \(IOErrors.reason(error))\n")
            return false
        }
        if !quiet {
            output.out(
                IOFormat.report(
                    "discard", seconds: monotonicSeconds() - start, offset: offset, count: count, total: count, ops: 1,
                    parsable: parsable))
        }
        return true
    }

    /// `flush`.
    func flush() -> Bool {
        guard let disk else { return false }
        do { try disk.flush() } catch { return false }
        return true
    }

    /// `truncate [-m prealloc_mode] off`.
    func truncate(_ name: String, _ args: [String]) -> Bool {
        guard let disk, let parsed = getopt(name, "m:", args) else { return false }
        for option in parsed.options where option.value != "off" {
            output.error("Invalid preallocation mode '\(option.value ?? "")'")
            return false
        }
        guard parsed.operands.count == 1 else {
            usage(name)
            return false
        }
        guard let size = number(parsed.operands[0]) else { return false }
        do {
            if disk.format == .qed && size < disk.virtualSize {
                output.error("Shrinking images is currently not supported")
                return false
            }
            try disk.resize(to: size)
        } catch {
            let message = (error as? QEDError)?.message ?? "\(error)"
            output.error(message)
            return false
        }
        return true
    }

    /// `open [-rsCnkU] [-t cache] [-d discard] [-o options] [path]`.
    func openCommand(_ name: String, _ args: [String]) -> Bool {
        guard let parsed = getopt(name, "snCro:ki:t:d:U", args) else { return false }
        var wanted = IOOpenOptions()
        wanted.imageOpts = options.imageOpts
        for option in parsed.options {
            let value = option.value ?? ""
            switch option.name {
            case "s": wanted.snapshot = true
            case "r": wanted.readOnly = true
            case "U": wanted.forceShare = true
            case "C":
                output.error("copy-on-read (-C) is not supported")
                return false
            case "o":
                if wanted.imageOpts {
                    output.out("--image-opts and 'open -o' are mutually exclusive\n")
                    return false
                }
                if let message = wanted.addKeyValues(value) {
                    output.error(message)
                    return false
                }
            default:
                if let message = wanted.apply(option.name, value) {
                    output.error(message)
                    return false
                }
            }
        }
        if disk != nil {
            output.error("file open already, try 'help close'")
            return false
        }
        guard parsed.operands.count <= 1 else {
            usage(name)
            return false
        }
        return open(parsed.operands.first, wanted)
    }

    /// `help [command]`.
    func help(_ args: [String]) -> Bool {
        guard let name = args.first else {
            for command in IOCommands.all {
                output.out(IOSession.helpLine(command))
            }
            output.out("\nUse 'help commandname' for extended help.\n")
            return true
        }
        guard let command = IOCommands.find(name) else {
            output.out("command \(name) not found\n")
            return false
        }
        output.out(IOSession.helpLine(command))
        if !command.help.isEmpty { output.out(command.help) }
        return true
    }

    /// `NAME [ARGS ]-- ONELINE` as qemu-io's help lists a command.
    static func helpLine(_ command: IOCommandInfo) -> String {
        "\(command.name) \(command.args.map { $0 + " " } ?? "")-- \(command.oneline)\n"
    }

    /// `reopen [(-r|-w)] [-c cache] [-o options]`: closes and opens the image again, read-only or
    /// writable, with another cache mode (block-driver options cannot be changed).
    func reopen(_ name: String, _ args: [String]) -> Bool {
        guard let open = disk, let parsed = getopt(name, "c:o:rw", args) else { return false }
        var wanted = options
        var mode: Bool?
        for option in parsed.options {
            switch option.name {
            case "r", "w":
                if mode != nil {
                    output.error("Only one -r/-w option may be given")
                    return false
                }
                mode = option.name == "r"
            case "c":
                if wanted.apply("t", option.value ?? "") != nil {
                    output.error("Invalid cache option: \(option.value ?? "")")
                    return false
                }
            default:
                output.error("reopen -o (block driver options) is not supported")
                return false
            }
        }
        guard parsed.operands.isEmpty else {
            usage(name)
            return false
        }
        if let mode { wanted.readOnly = mode }
        if wanted.snapshot {
            output.error("reopen of a -s (snapshot) image is not supported")
            return false
        }
        let path = open.path
        let format = open.format.rawValue
        closeDisk()
        wanted.format = format
        wanted.keyValues = []
        wanted.imageOpts = false
        return self.open(path, wanted)
    }

    /// `sleep ms`.
    func sleep(_ text: String) -> Bool {
        guard let ms = IOFormat.strtolExact(text), ms >= 0 else {
            output.out("\(text) is not a valid number\n")
            return false
        }
        var request = timespec(tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
        return true
    }

    /// `sigraise signal`.
    func sigraise(_ text: String) -> Bool {
        guard let number = number(text) else { return false }
        guard number <= UInt64(Int32.max) else {
            output.out("signal argument '\(text)' is too large to be a valid signal\n")
            return false
        }
        output.flush()
        raise(Int32(number))
        return true
    }

    /// break, remove_break, resume, wait_break: QEMU's blkdebug driver's, which this program has
    /// not; they fail as qemu-io's do on an image without blkdebug.
    func blockLayerOnly(_ prefix: String?) -> Bool {
        if let prefix { output.out("\(prefix): \(IOFormat.errorText(ENOTSUP))\n") }
        return false
    }
}
