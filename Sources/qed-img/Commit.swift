import ArgumentParser
import QED
import QEDTools

/// `commit`: write an overlay's data into its backing file, then empty the overlay.
struct Commit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Commit the changes of an image into its backing file.",
        discussion: """
            Copies what the image holds (data and zero clusters) into its backing file (raw, QED or add-cow), \
            or with -b into a deeper base (then every layer above the base is copied, and -d is \
            implied). The image must be QED or add-cow. Afterwards the image is emptied unless -d: QED \
            drops its clusters and truncates the file; add-cow clears its bitmap and punches its image \
            file. Ctrl-C stops between chunks; the image is then left as it was.
            """)

    @OptionGroup var format: FormatOption

    @Option(name: .customShort("b"), help: "Base image to commit into (part of the backing chain).")
    var base: String?

    @Flag(name: .customShort("d"), help: "Do not empty the image after the commit.")
    var drop = false

    @OptionGroup var progress: ProgressOptions

    @OptionGroup var cache: IgnoredCacheOption

    @Argument(help: "The image file.")
    var file: String

    func run() throws {
        if let f = try format.value(), f != .qed, f != .addCOW {
            throw CLIError("Image does not have a backing file", path: file)
        }
        var o = QEDTools.Commit.Options()
        o.base = base
        o.keepOverlay = drop
        o.cancellation = Signals.cancellation
        let (printer, handler) = progress.printer()
        o.progress = handler
        try QEDTools.Commit.run(path: file, options: o)
        printer?.finish()
        if !progress.quiet { Console.out("Image committed.\n") }
    }
}
