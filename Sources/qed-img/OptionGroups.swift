import ArgumentParser
import QED
import QEDTools

// The options several verbs share, declared once and used with `@OptionGroup`.

/// `-f FMT`: the format of the image(s) a verb opens.
struct FormatOption: ParsableArguments {
    @Option(
        name: .customShort("f"),
        help: "Image format: \(DiskOpener.formatNames(conjunction: "or")) (probed when absent).")
    var format: Choice<DiskFormat>?

    /// The format given, or nil to probe it; qemu-img's message for an unknown name.
    func value() throws -> DiskFormat? { try format?.value() }
}

/// `-U`: open an image another process is writing.
struct ForceShareOption: ParsableArguments {
    @Flag(
        name: .customShort("U"),
        help: "Force share: open even while another process writes the image (read-only opens).")
    var forceShare = false
}

/// `-f FMT -U`: how a verb opens the image(s) it reads.
struct OpeningOptions: ParsableArguments {
    @OptionGroup var format: FormatOption
    @OptionGroup var share: ForceShareOption

    /// `-U` was given.
    var forceShare: Bool { share.forceShare }

    /// Opens `path` in the format given (or probed); `-U` applies to read-only opens only.
    func open(
        _ path: String, readOnly: Bool = true, openBacking: Bool = true, autoCheck: Bool = true
    ) throws
        -> any Disk
    {
        try openDisk(
            path, format: try format.value(), readOnly: readOnly, forceShare: forceShare,
            openBacking: openBacking, autoCheck: autoCheck)
    }
}

/// `-q`: print nothing but errors.
struct QuietOption: ParsableArguments {
    @Flag(name: .customShort("q"), help: "Quiet: print nothing but errors.")
    var quiet = false
}

/// `-p -q`: progress for long copies, unless quiet.
struct ProgressOptions: ParsableArguments {
    @Flag(name: .customShort("p"), help: "Show progress.")
    var progress = false

    @OptionGroup var quietOption: QuietOption

    /// `-q` was given.
    var quiet: Bool { quietOption.quiet }

    /// A printer and the handler to pass to the library, or nils when no progress is wanted.
    func printer() -> (ProgressPrinter?, ProgressHandler?) {
        ProgressPrinter.handler(enabled: progress && !quiet)
    }
}

/// `-t CACHE` where the verb accepts it only for compatibility.
struct IgnoredCacheOption: ParsableArguments {
    @Option(name: .customShort("t"), help: "Cache mode (accepted for compatibility, ignored).")
    var cache: Choice<CacheMode>?
}

/// `-T CACHE`: the source cache mode, accepted for compatibility.
struct IgnoredSourceCacheOption: ParsableArguments {
    @Option(name: .customShort("T"), help: "Source cache mode (accepted for compatibility, ignored).")
    var sourceCache: Choice<CacheMode>?
}

/// `--output=human|json`.
struct OutputOption: ParsableArguments {
    @Option(name: .customLong("output"), help: "Output format: human or json.")
    var format: OutputFormat = .human
}

/// `-O FMT`: the format of the image a verb makes.
struct TargetFormatOption: ParsableArguments {
    @Option(name: .customShort("O"), help: "Output format (default qed): \(DiskOpener.formatNames(conjunction: "or")).")
    var outputFormat = Choice(DiskFormat.qed)

    /// The format; qemu-img's message for an unknown name.
    func value() throws -> DiskFormat { try outputFormat.value() }
}

/// `-o NAME=VALUE,...`: the options of the image format a verb makes.
struct FormatOptionsOption: ParsableArguments {
    @Option(
        name: .customShort("o"), help: "Format options: cluster_size=SIZE,table_size=N (and backing_file, backing_fmt)."
    )
    var options: [String] = []

    /// The options given, split (qemu-img's message for a malformed one).
    func list() throws -> OptionList { try OptionList(options) }
}
