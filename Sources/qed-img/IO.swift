import ArgumentParser
import Dispatch
import QED
import QEDTools
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `io`: a qemu-io subset for scripting, printing qemu-io's summary lines.
struct IOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "io",
        abstract: "Run qemu-io style commands on an image.",
        discussion: """
            Commands (-c, run in order): read [-P pattern] [-v] [-q] OFF LEN, write [-P pattern] [-z] [-u] \
            [-q] OFF LEN (default pattern 0xcd), discard [-q] OFF LEN, flush, map, info, aio_read [-P \
            pattern] [-v] [-q] OFF LEN, aio_write [-P pattern] [-z] [-q] OFF LEN, aio_flush. Offsets and \
            lengths take suffixes. aio_* requests run concurrently; each prints its summary when it \
            completes. The exit status is 1 if any command failed.
            """)

    @Flag(name: .customShort("r"), help: "Open read-only.")
    var readOnly = false

    @OptionGroup var opening: OpeningOptions

    @Option(name: .customShort("c"), help: "A command to run (repeatable).")
    var commands: [String] = []

    @Argument(help: "The image file.")
    var file: String

    func run() throws {
        let disk = try opening.open(file, readOnly: readOnly)
        let session = IOSession(disk: disk)
        var failed = false
        for command in commands {
            if !session.execute(command) { failed = true }
        }
        if !session.drain() { failed = true }
        try disk.close()
        if failed { throw ExitCode(1) }
    }
}

/// Runs qemu-io commands on one open disk.
final class IOSession: Sendable {
    let disk: any Disk
    /// Serialises output lines: aio requests report from Dispatch's worker threads.
    private let outputLock = Mutex(())
    private let group = DispatchGroup()
    /// Whether any aio request has failed (set by the worker threads, read by `drain`).
    private let aioFailure = Mutex(false)

    init(disk: any Disk) { self.disk = disk }

    private func say(_ text: String) {
        outputLock.withLock { _ in Console.out(text) }
    }

    struct Request {
        var offset: UInt64 = 0
        var length: UInt64 = 0
        var pattern: UInt8?
        var verbose = false
        var quiet = false
        var zero = false
        var unmap = false
    }

    /// Parses `[-P pattern] [-v] [-q] [-z] [-u] OFF LEN`.
    private func parse(_ args: [String], name: String, flags: Set<Character>) -> Request? {
        var r = Request()
        var rest: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if a.hasPrefix("-") && a.count > 1 && rest.isEmpty {
                for f in a.dropFirst() {
                    guard flags.contains(f) else {
                        say("\(name): invalid option -- '\(f)'\n")
                        return nil
                    }
                    switch f {
                    case "P":
                        i += 1
                        guard i < args.count, let p = IOSession.number(args[i]), p <= 255 else {
                            say("\(i < args.count ? args[i] : "") is not a valid pattern byte\n")
                            return nil
                        }
                        r.pattern = UInt8(p)
                    case "v": r.verbose = true
                    case "q": r.quiet = true
                    case "z": r.zero = true
                    case "u": r.unmap = true
                    default: break
                    }
                }
            } else {
                rest.append(a)
            }
            i += 1
        }
        guard rest.count == 2 else {
            say("\(name): wrong number of arguments\n")
            return nil
        }
        guard let off = Sizes.parse(rest[0]) else {
            say("Invalid argument '\(rest[0])'\n")
            return nil
        }
        guard let len = Sizes.parse(rest[1]), len <= UInt64(Int32.max) else {
            say("Invalid argument '\(rest[1])'\n")
            return nil
        }
        r.offset = off
        r.length = len
        return r
    }

    static func number(_ s: String) -> UInt64? {
        if s.hasPrefix("0x") || s.hasPrefix("0X") { return UInt64(s.dropFirst(2), radix: 16) }
        if s.count > 1 && s.hasPrefix("0") { return UInt64(s.dropFirst(), radix: 8) }
        return UInt64(s)
    }

    /// Runs one command line; false if it failed.
    func execute(_ line: String) -> Bool {
        let args = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard let name = args.first else { return true }
        let rest = Array(args.dropFirst())
        switch name {
        case "read", "r":
            guard let r = parse(rest, name: "read", flags: ["P", "v", "q"]) else { return false }
            return doRead(r)
        case "write", "w":
            guard let r = parse(rest, name: "write", flags: ["P", "z", "u", "q"]) else { return false }
            return doWrite(r)
        case "discard", "d":
            guard let r = parse(rest, name: "discard", flags: ["q"]) else { return false }
            return timed("discard", r) { try disk.discard(at: r.offset, length: r.length) }
        case "aio_read", "aio_write":
            let isWrite = name == "aio_write"
            guard let r = parse(rest, name: name, flags: isWrite ? ["P", "z", "q"] : ["P", "v", "q"]) else {
                return false
            }
            group.enter()
            DispatchQueue.global().async { [self] in
                let ok = isWrite ? doWrite(r) : doRead(r)
                if !ok { aioFailure.withLock { $0 = true } }
                group.leave()
            }
            return true
        case "aio_flush":
            group.wait()
            do { try disk.flush() } catch { return report("aio_flush", error) }
            return true
        case "flush", "f":
            do { try disk.flush() } catch { return report("flush", error) }
            return true
        case "map":
            do {
                for run in try AllocationMap.run(disk: disk, options: .init()).runs {
                    say(
                        "\(Sizes.ioString(Double(run.length))) (0x\(String(run.length, radix: 16))) bytes \(run.allocated ? "    allocated" : "not allocated") at offset \(Sizes.ioString(Double(run.offset))) (0x\(String(run.offset, radix: 16)))\n"
                    )
                }
            } catch {
                say("Failed to get allocation status: \(IOSession.reason(error))\n")
                return false
            }
            return true
        case "info":
            let cluster = disk.clusterSize ?? 0
            say(
                "format name: \(disk.format.rawValue)\ncluster size: \(Sizes.ioString(Double(cluster)))\nvm state offset: 0 bytes\n"
            )
            return true
        default:
            Console.err("command \"\(name)\" not found\n")
            return false
        }
    }

    /// Waits for outstanding aio requests; false if one of them failed.
    func drain() -> Bool {
        group.wait()
        return !aioFailure.withLock { $0 }
    }

    private func doRead(_ r: Request) -> Bool {
        var buffer = [UInt8](repeating: 0, count: Int(r.length))
        let start = monotonicSeconds()
        do {
            try buffer.withUnsafeMutableBytes { try disk.read(into: $0, at: r.offset) }
        } catch {
            return report("read", error)
        }
        let elapsed = monotonicSeconds() - start
        var ok = true
        var text = ""
        if let p = r.pattern, buffer.contains(where: { $0 != p }) {
            text += "Pattern verification failed at offset \(r.offset), \(r.length) bytes\n"
            ok = false
        }
        if r.quiet {
            if !text.isEmpty { say(text) }
            return ok
        }
        if r.verbose { text += IOSession.dump(buffer, offset: r.offset) }
        text += IOSession.summary("read", offset: r.offset, length: r.length, seconds: elapsed)
        say(text)
        return ok
    }

    private func doWrite(_ r: Request) -> Bool {
        if r.zero && r.pattern != nil {
            say("-z and -P cannot be specified at the same time\n")
            return false
        }
        return timed("wrote", r) {
            if r.zero {
                try disk.writeZeroes(at: r.offset, length: r.length, unmap: r.unmap)
            } else {
                let buffer = [UInt8](repeating: r.pattern ?? 0xcd, count: Int(r.length))
                try buffer.withUnsafeBytes { try disk.write($0, at: r.offset) }
            }
        }
    }

    private func timed(_ verb: String, _ r: Request, _ body: () throws -> Void) -> Bool {
        let start = monotonicSeconds()
        do { try body() } catch { return report(verb == "wrote" ? "write" : verb, error) }
        if !r.quiet {
            say(IOSession.summary(verb, offset: r.offset, length: r.length, seconds: monotonicSeconds() - start))
        }
        return true
    }

    private func report(_ what: String, _ error: any Error) -> Bool {
        if let e = error as? QEDError, e.code == .readOnly {
            Console.error("Block node is read-only", path: disk.path)
            return false
        }
        say("\(what) failed: \(IOSession.reason(error))\n")
        return false
    }

    static func reason(_ error: any Error) -> String {
        guard let e = error as? QEDError else { return "\(error)" }
        if let cause = e.cause { return cause.reason }
        switch e.code {
        case .outOfRange: return String(cString: strerror(EIO))
        case .invalidTableOffset, .invalidClusterOffset, .invalidArgument: return String(cString: strerror(EINVAL))
        case .readOnly: return String(cString: strerror(EPERM))
        case .noSpace: return String(cString: strerror(ENOSPC))
        case .unsupported: return String(cString: strerror(ENOTSUP))
        default: return e.message
        }
    }

    /// qemu-io's `print_report` lines (without -C).
    static func summary(_ verb: String, offset: UInt64, length: UInt64, seconds: Double) -> String {
        let t = max(seconds, 1e-9)
        return "\(verb) \(length)/\(length) bytes at offset \(offset)\n"
            + "\(Sizes.ioString(Double(length))), 1 ops; \(timeString(seconds)) (\(Sizes.ioString(Double(length) / t))/sec and \(cFormat("%.4f", 1 / t)) ops/sec)\n"
    }

    /// qemu-io's `timestr`: "SS.ss sec" below a second, else "H:MM:SS.ss".
    static func timeString(_ seconds: Double) -> String {
        let whole = Int(seconds)
        let frac = seconds - Double(whole)
        if whole == 0 { return cFormat("%05.2f sec", frac) }
        return cFormat("%u:%02u:%05.2f", UInt32(whole / 3600), UInt32((whole / 60) % 60), Double(whole % 60) + frac)
    }

    /// qemu-io's `dump_buffer`: 16 bytes per line, hex then alphanumerics ('.' for the rest).
    static func dump(_ bytes: [UInt8], offset: UInt64) -> String {
        var out = ""
        var i = 0
        while i < bytes.count {
            let line = bytes[i..<min(bytes.count, i + 16)]
            let h = String(offset + UInt64(i), radix: 16)
            out += String(repeating: "0", count: max(0, 8 - h.count)) + h + ":  "
            for b in line {
                let x = String(b, radix: 16)
                out += (x.count < 2 ? "0" + x : x) + " "
            }
            out += " "
            for b in line {
                let c = Character(Unicode.Scalar(b))
                out.append(b < 0x80 && (c.isLetter || c.isNumber) ? c : ".")
            }
            out += "\n"
            i += 16
        }
        return out
    }
}
