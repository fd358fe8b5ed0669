import ArgumentParser
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

/// An error the CLI reports as `qed-img: [file: ]message` with its own exit status.
struct CLIError: Error {
    var message: String
    var path: String?
    var exitCode: Int32 = 1

    init(_ message: String, path: String? = nil, exitCode: Int32 = 1) {
        self.message = message
        self.path = path
        self.exitCode = exitCode
    }
}

/// Writes to standard output / standard error, unbuffered enough for progress lines.
enum Console {
    /// The name the program was run as (the last component of argv[0]), which starts its messages
    /// as QEMU's tools start theirs: `qed-img`, or `qemu-img` when installed under that name.
    static let programName: String = {
        let name = CommandLine.arguments.first?.split(separator: "/").last.map(String.init) ?? ""
        return name.isEmpty ? "qed-img" : name
    }()

    static func out(_ text: String) {
        writeAll(STDOUT_FILENO, text)
    }

    static func err(_ text: String) {
        writeAll(STDERR_FILENO, text)
    }

    /// Prints `PROGRAM: file: message` on stderr (the file is left out when unknown).
    static func error(_ message: String, path: String? = nil) {
        if let path, !path.isEmpty {
            err("\(programName): \(path): \(message)\n")
        } else {
            err("\(programName): \(message)\n")
        }
    }
}

/// Sizes as qemu-img reads and prints them.
enum Sizes {
    /// Parses a size like qemu's `qemu_strtosz`: a decimal number (fractions allowed with a
    /// suffix) or `0x` hex, then an optional suffix b/k/M/G/T/P/E (any case; powers of 1024).
    static func parse(_ text: String) -> UInt64? {
        var s = Substring(text)
        guard !s.isEmpty else { return nil }
        var multiplier: Double = 1
        if let last = s.last, last.isLetter {
            let shifts: [Character: Int] = ["b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60]
            guard let shift = shifts[Character(last.lowercased())] else { return nil }
            multiplier = Double(UInt64(1) << UInt64(shift))
            s = s.dropLast()
        }
        if s.hasPrefix("0x") || s.hasPrefix("0X") {
            guard multiplier == 1, let v = UInt64(s.dropFirst(2), radix: 16) else { return nil }
            return v
        }
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
            s.filter({ $0 == "." }).count <= 1
        else { return nil }
        if !s.contains("."), let whole = UInt64(s) {
            let (v, o) = whole.multipliedReportingOverflow(by: UInt64(multiplier))
            return o ? nil : v
        }
        guard let value = Double(s) else { return nil }
        let bytes = value * multiplier
        guard bytes < 18446744073709551616.0 else { return nil }
        return UInt64(bytes)
    }

    /// QEMU's `size_to_str`: 1024-based, three significant digits, unit switched at ≥ 1000.
    static func human(_ value: UInt64) -> String {
        let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
        var exponent: Int32 = 0
        _ = frexp(Double(value) / (1000.0 / 1024.0), &exponent)
        let i = Int((exponent - 1) / 10)
        let index = max(0, min(i, suffixes.count - 1))
        let div = Double(UInt64(1) << UInt64(index * 10))
        return cFormat("%0.3g", Double(value) / div) + " " + suffixes[index] + "B"
    }

    /// qemu-io's `cvtstr`: `%.3f` with a binary unit (`%f bytes` below 1 KiB), ".000" trimmed.
    static func ioString(_ value: Double) -> String {
        let units: [(Double, String)] = [
            (1152921504606846976, " EiB"), (1125899906842624, " PiB"), (1099511627776, " TiB"),
            (1073741824, " GiB"), (1048576, " MiB"), (1024, " KiB"),
        ]
        var text: String
        var suffix = " bytes"
        if let (scale, unit) = units.first(where: { value >= $0.0 }) {
            text = cFormat("%.3f", value / scale)
            suffix = unit
        } else {
            text = cFormat("%f", value)
        }
        if let r = text.firstRange(of: ".000") { text = String(text[..<r.lowerBound]) }
        return text + suffix
    }
}

/// A `-o name=value,name=value` list (commas doubled to escape them, as QEMU does).
struct OptionList {
    var values: [(String, String)] = []

    init(_ specs: [String]) throws {
        for spec in specs {
            let items = OptionList.split(spec)
            for item in items where !item.isEmpty {
                guard let eq = item.firstIndex(of: "=") else {
                    if item == "help" || item == "?" {
                        values.append(("help", ""))
                        continue
                    }
                    throw CLIError("Invalid parameter '\(item)'")
                }
                values.append((String(item[..<eq]), String(item[item.index(after: eq)...])))
            }
        }
    }

    /// The items of a QEMU option string: split at single commas; `,,` is a literal comma.
    static func split(_ spec: String) -> [String] {
        var items: [String] = []
        var current = ""
        let chars = Array(spec)
        var i = 0
        while i < chars.count {
            if chars[i] == "," {
                if i + 1 < chars.count && chars[i + 1] == "," {
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
        return items
    }

    var wantsHelp: Bool { values.contains { $0.0 == "help" } }

    func value(_ name: String) -> String? { values.last { $0.0 == name }?.1 }

    /// Refuses names outside `known`.
    func check(known: [String], format: String) throws {
        for (name, _) in values where name != "help" && !known.contains(name) {
            throw CLIError("Invalid parameter '\(name)'\nInvalid options for file format '\(format)'")
        }
    }

    static let qedHelp = """
        Supported options:
          backing_file=<str>     - File name of a base image
          backing_fmt=<str>      - Image format of the base image
          cluster_size=<size>    - Cluster size (in bytes)
          journal=<bool (on/off)> - Metadata journal in the header area (swift-qed only)
          journal_size=<size>    - Journal size (in bytes, default 2M; implies journal=on)
          size=<size>            - Virtual disk size
          table_size=<num>       - L1/L2 table size (in clusters)

        """
    static let addCOWHelp = """
        Supported options:
          backing_file=<str>     - File name of a base image
          backing_fmt=<str>      - Image format of the base image
          cluster_size=<size>    - Cluster size (in bytes)
          image_file=<str>       - File name of the raw image file holding the data
          image_fmt=<str>        - Image format of the image file (raw)
          size=<size>            - Virtual disk size

        """
    static let rawHelp = """
        Supported options:
          size=<size>            - Virtual disk size

        """
}

/// The QED geometry options shared by create, convert, measure and dd (`-o`).
struct QEDLayout {
    var clusterSize: UInt32 = 65536
    var tableSize: UInt32 = 4
    var clusterGiven = false
    var tableGiven = false

    init(_ options: OptionList) throws {
        if let c = options.value("cluster_size") {
            guard let v = Sizes.parse(c), v <= UInt64(UInt32.max) else {
                throw CLIError(
                    "Parameter 'cluster_size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively."
                )
            }
            clusterSize = UInt32(v)
            clusterGiven = true
        }
        if let t = options.value("table_size") {
            guard let v = UInt32(t) else { throw CLIError("Parameter 'table_size' expects a number") }
            tableSize = v
            tableGiven = true
        }
    }
}

/// QED's journal options (`-o journal=on|off,journal_size=SIZE`) for create and amend.
struct JournalOption {
    /// Whether `journal` was given, and its value.
    var enabled: Bool?
    /// `journal_size` in bytes, if given.
    var size: UInt64?

    init(_ options: OptionList) throws {
        if let text = options.value("journal") {
            switch text {
            case "on", "true", "yes": enabled = true
            case "off", "false", "no": enabled = false
            default: throw CLIError("Parameter 'journal' expects 'on' or 'off'")
            }
        }
        if let text = options.value("journal_size") {
            guard let v = Sizes.parse(text), v > 0 else {
                throw CLIError("Parameter 'journal_size' expects a positive size (suffixes k, M, G)")
            }
            size = v
        }
    }

    /// The journal size to create with: nil without a journal.
    func sizeForCreate() throws -> UInt64? {
        if enabled == false {
            if size != nil { throw CLIError("journal_size needs journal=on") }
            return nil
        }
        if enabled == true || size != nil { return size ?? JournalArea.defaultSize }
        return nil
    }
}

/// Prints progress the way people want it: one redrawn line on a terminal, plain lines (one per
/// whole percent) otherwise. qemu-img's format: `    (12.34/100%)`.
final class ProgressPrinter: Sendable {
    private struct State {
        var lastShown = -1.0
        var lastDrawn = -Double.infinity
        var active = false
    }

    private let isTerminal = isatty(STDOUT_FILENO) == 1
    /// What has been drawn so far; reports come from the library's worker threads.
    private let state = Mutex(State())

    /// A handler for the library's progress reports, or nil when `enabled` is false.
    static func handler(enabled: Bool) -> (ProgressPrinter?, ProgressHandler?) {
        guard enabled else { return (nil, nil) }
        let printer = ProgressPrinter()
        return (printer, { printer.report($0) })
    }

    func report(_ fraction: Double) {
        let percent = min(100, max(0, fraction * 100))
        state.withLock { state in
            state.active = true
            if isTerminal {
                let now = monotonicSeconds()
                guard percent != state.lastShown,
                    percent >= 100 || now - state.lastDrawn > 0.05 || state.lastShown < 0
                else { return }
                state.lastShown = percent
                state.lastDrawn = now
                Console.out(cFormat("\r    (%3.2f/100%%)", percent))
            } else {
                let whole = percent.rounded(.down)
                guard whole > state.lastShown else { return }
                state.lastShown = whole
                Console.out(cFormat("    (%3.2f/100%%)\n", whole))
            }
        }
    }

    /// Ends the progress display (a newline after the redrawn line).
    func finish() {
        state.withLock { state in
            if isTerminal && state.active { Console.out("\n") }
            state.active = false
        }
    }
}

/// SIGINT/SIGTERM: the first one asks the running operation to stop cleanly (it flushes and
/// closes its images); a second one ends the process at once.
enum Signals {
    static let cancellation = Cancellation()

    static func install() {
        // A parent may have started us with these signals blocked (e.g. Foundation's Process).
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        sigprocmask(SIG_UNBLOCK, &set, nil)
        for sig in [SIGINT, SIGTERM] {
            signal(sig) { received in
                Signals.cancellation.cancel()
                signal(received, SIG_DFL)
            }
        }
    }
}

/// Exit status used when an operation was interrupted by a signal (like a shell's 128+SIGINT).
let interruptedExitCode: Int32 = 130

/// Opens the image at `path` for the CLI: format given or probed, read-only or not, `-U`.
/// A command-line file name as QEMU reads it: a `file:` protocol prefix is dropped, and the rest,
/// when it has a colon but no slash, gets `./` in front (so it cannot read as a protocol): the path
/// opened, and the name qemu-img then reports (`image: ./a:b.qed`).
func hostPath(_ name: String) -> String {
    guard name.hasPrefix("file:") else { return name }
    let rest = String(name.dropFirst(5))
    return rest.contains(":") && !rest.contains("/") ? "./" + rest : rest
}

func openDisk(
    _ name: String, format: DiskFormat?, readOnly: Bool, forceShare: Bool = false,
    openBacking: Bool = true, autoCheck: Bool = true
) throws -> any Disk {
    let path = hostPath(name)
    var options = OpenOptions(readOnly: readOnly, forceShare: forceShare && readOnly)
    options.openBacking = openBacking
    options.autoCheck = autoCheck
    do {
        return try DiskOpener.open(path: path, format: format, options: options)
    } catch let error as QEDError {
        throw error.couldNotOpen(name)
    }
}
