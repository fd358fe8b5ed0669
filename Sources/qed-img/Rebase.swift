import ArgumentParser
import QED

/// `rebase`: give a QED image another backing file, keeping (safe mode) its visible content.
struct Rebase: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change the backing file of an image.",
        discussion: """
            Safe mode (default) copies into the image every cluster where the old and the new backing \
            files differ, so the content the image shows stays the same; -u only rewrites the name. \
            -b "" removes the backing file. Ctrl-C stops safely: the image keeps its old backing file.
            """)

    @Option(name: .customShort("f"), help: "Image format (must be qed).")
    var format: String?

    @Option(name: .customShort("b"), help: "New backing file (\"\" to remove it).")
    var backingFile: String

    @Option(name: .customShort("F"), help: "Format of the new backing file (probed when absent).")
    var backingFormat: String?

    @Flag(name: .customShort("u"), help: "Unsafe: change only the name; do not compare or copy data.")
    var unsafe = false

    @Flag(name: .customShort("p"), help: "Show progress.")
    var progress = false

    @Flag(name: .customShort("q"), help: "Quiet.")
    var quiet = false

    @Flag(name: .customShort("U"), help: "Force share (accepted for compatibility).")
    var forceShare = false

    @Option(name: .customShort("t"), help: "Cache mode (accepted for compatibility, ignored).")
    var cache: String?

    @Option(name: .customShort("T"), help: "Source cache mode (accepted for compatibility, ignored).")
    var sourceCache: String?

    @Argument(help: "The image file.")
    var file: String

    func run() throws {
        if let f = try parseFormat(format), f != .qed {
            throw CLIError("rebase needs a QED image; raw images have no backing file", path: file)
        }
        var o = QED.Rebase.Options()
        o.backing = backingFile
        o.backingFormat = try parseFormat(backingFormat)
        o.unsafe = unsafe
        o.cancellation = Signals.cancellation
        let (printer, handler) = ProgressPrinter.handler(enabled: progress && !quiet)
        o.progress = handler
        defer { printer?.finish() }
        try QED.Rebase.run(path: file, options: o)
    }
}
