import ArgumentParser
import QED
import QEDTools

/// `stream`: copy what an image still reads from its backing chain into the image itself.
struct Stream: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy the backing chain's data into the image, so it no longer needs its backing file.",
        discussion: """
            QEMU's block-stream job, offline. add-cow: every cluster still read from the backing chain is \
            copied into the image file (each step synced before its bits are set), then ALL_ALLOCATED is \
            set: the image file alone is the disk, and any tool may read it as raw. Interrupted (Ctrl-C, \
            or even kill -9), the image stays valid and a second run completes it. QED: the backing \
            data is copied into the image and the backing file removed (what rebase -b "" does); \
            interrupted, the image keeps its backing file. Raw images have no backing file.
            """)

    @OptionGroup var format: FormatOption

    @Option(
        name: .customShort("r"),
        help: "Rate limit: bytes per second to copy at most (suffixes k, M, G; add-cow only).")
    var rateLimit: String?

    @OptionGroup var progress: ProgressOptions

    @OptionGroup var cache: IgnoredCacheOption

    @Argument(help: "The image file.")
    var file: String

    func run() throws {
        if let f = try format.value(), f != .addCOW, f != .qed {
            throw CLIError("stream needs an add-cow or QED image; \(f) images have no backing file", path: file)
        }
        var o = QEDTools.Stream.Options()
        o.format = try format.value()
        if let rateLimit {
            guard let rate = Sizes.parse(rateLimit), rate > 0 else {
                throw CLIError("Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for ")
            }
            o.rateLimit = rate
        }
        o.cancellation = Signals.cancellation
        let (printer, handler) = progress.printer()
        o.progress = handler
        defer { printer?.finish() }
        try QEDTools.Stream.run(path: hostPath(file), options: o)
    }
}
