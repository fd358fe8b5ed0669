import ArgumentParser
import QED
import QEDTools

/// `rebase`: give a QED image another backing file, keeping (safe mode) its visible content.
struct Rebase: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change the backing file of an image.",
        discussion: """
            Safe mode (default) copies into the image every cluster where the old and the new backing \
            files differ, so the content the image shows stays the same; -u only rewrites the name. \
            -b "" removes the backing file. The image must be QED or add-cow. Ctrl-C stops safely: the image \
            keeps its old backing file.
            """)

    @OptionGroup var opening: OpeningOptions

    @Option(name: .customShort("b"), help: "New backing file (\"\" to remove it).")
    var backingFile: String

    @Option(name: .customShort("F"), help: "Format of the new backing file (required with a new backing file).")
    var backingFormat: Choice<DiskFormat>?

    @Flag(name: .customShort("u"), help: "Unsafe: change only the name; do not compare or copy data.")
    var unsafe = false

    @OptionGroup var progress: ProgressOptions

    @OptionGroup var cache: IgnoredCacheOption

    @OptionGroup var sourceCache: IgnoredSourceCacheOption

    @Argument(help: "The image file.")
    var file: String

    func run() throws {
        if let f = try opening.format.value(), f != .qed, f != .addCOW {
            throw CLIError("rebase needs a QED or add-cow image; \(f) images have no backing file", path: file)
        }
        // qemu-img 7.2 no longer probes a new backing file's format.
        if !backingFile.isEmpty && backingFormat == nil {
            throw CLIError("Could not change the backing file to '\(backingFile)': backing format must be specified")
        }
        var o = QEDTools.Rebase.Options()
        o.backing = backingFile
        o.backingFormat = try backingFormat?.value()
        o.unsafe = unsafe
        o.cancellation = Signals.cancellation
        let (printer, handler) = progress.printer()
        o.progress = handler
        defer { printer?.finish() }
        try QEDTools.Rebase.run(path: file, options: o)
    }
}
