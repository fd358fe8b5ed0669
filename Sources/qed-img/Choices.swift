import ArgumentParser
import QED

/// A value named on the command line from a fixed set (a format, a cache mode...), refused with
/// qemu-img's own sentence.
protocol QemuChoice: ExpressibleByArgument, Sendable {
    /// qemu-img's message for `text` when it names no value, e.g. "Invalid cache option: bogus".
    static func refusal(_ text: String) -> String
}

/// An option value of a ``QemuChoice`` type, parsed once with the command line.
///
/// ArgumentParser keeps any text here and does not refuse it itself: a bad value must read as
/// qemu-img says it (`qed-img: Invalid cache option: bogus`, exit status 1, no usage text), and be
/// reported where qemu-img reports it, when the verb asks for ``value(naming:)``.
struct Choice<Value: QemuChoice>: ExpressibleByArgument, Sendable {
    /// The text as given.
    let text: String
    /// What `text` names; nil when it names nothing.
    private let parsed: Value?

    init(argument: String) {
        text = argument
        parsed = Value(argument: argument)
    }

    /// A default value (shown in help by its name).
    init(_ value: Value) {
        text = value.defaultValueDescription
        parsed = value
    }

    /// The value named, or qemu-img's refusal (naming `path` when given) if the text names none.
    func value(naming path: String? = nil) throws -> Value {
        guard let parsed else { throw CLIError(Value.refusal(text), path: path) }
        return parsed
    }

    var defaultValueDescription: String { text }
}

/// The formats `-f`/`-O`/`-F` accept are those of the engine's registry: an added format shows up
/// here by itself.
extension DiskFormat: QemuChoice {
    init?(argument: String) {
        guard let known = DiskOpener.format(named: argument) else { return nil }
        self = known
    }

    static func refusal(_ text: String) -> String {
        "Unknown file format '\(text)' (qed-img supports \(DiskOpener.formatNames(conjunction: "and")))"
    }
}

/// `-t`/`-T`: QEMU's cache modes. qed-img honours only the difference that matters for a copy:
/// `unsafe` never flushes, every other mode flushes when the work is done.
enum CacheMode: String, CaseIterable, QemuChoice {
    /// `none` (also spelled `off`): O_DIRECT in QEMU.
    case direct = "none"
    case writeback, writethrough, directsync, unsafe

    init?(argument: String) {
        self.init(rawValue: argument == "off" ? "none" : argument)
    }

    /// Whether the output is flushed when the work is done (every mode but `unsafe`).
    var flushesWhenDone: Bool { self != .unsafe }

    static func refusal(_ text: String) -> String { "Invalid cache option: \(text)" }
}

/// `--preallocation`: only `off` (QED allocates on write; raw grows sparse).
enum Preallocation: String, CaseIterable, QemuChoice {
    case off

    static func refusal(_ text: String) -> String { "Unsupported preallocation mode '\(text)'" }
}

/// `--output=human|json` of info, check and measure (qemu-img refuses anything else).
enum OutputFormat: String, ExpressibleByArgument {
    case human, json
}

/// map's `--output`: qemu-img's human and json, and qed-img's own picture.
enum MapOutputFormat: String, ExpressibleByArgument {
    case human, json, picture
}
