import ArgumentParser
import QED
import QEDTools

/// `convert`: copy one or more images (end to end) into a new sparse QED or raw image.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert (copy) images into a new QED or raw image.",
        discussion: """
            Blocks of -S bytes (default 4k) that read as zeroes are not written, so the output stays \
            sparse. With -B the output gets that backing file and only what differs from it is \
            written. Several sources are laid end to end. -m workers read and write in parallel; \
            writes stay in guest order unless -W. "-o help" lists the output options. Ctrl-C stops \
            cleanly (the output is flushed and closed).
            """)

    @OptionGroup var opening: OpeningOptions

    @OptionGroup var targetFormat: TargetFormatOption

    @OptionGroup var formatOptions: FormatOptionsOption

    @Option(name: .customShort("B"), help: "Backing file of the output.")
    var backingFile: String?

    @Option(name: .customShort("F"), help: "Format of the backing file (probed when absent).")
    var backingFormat: Choice<DiskFormat>?

    @Option(
        name: .customShort("S"), help: "Zero-detection block size in bytes (multiple of 512; 0 = write everything).")
    var sparseSize: String = "4k"

    @OptionGroup var progress: ProgressOptions

    @Flag(name: .customShort("n"), help: "Do not create the output; write into the existing image.")
    var skipCreate = false

    @Flag(
        name: .customLong("salvage"),
        help: "Keep going past read errors: unreadable 512-byte sectors become zeroes, each with a warning.")
    var salvage = false

    @Flag(name: .customShort("W"), help: "Allow out-of-order writes.")
    var outOfOrder = false

    @Option(name: .customShort("m"), help: "Parallel workers (1...16, default 8).")
    var workers: Int = 8

    @Option(
        name: .customShort("t"),
        help:
            "Output cache mode: unsafe (default: never flushed, like qemu-img convert), writeback, writethrough, none, directsync (flushed when done)."
    )
    var cache = Choice(CacheMode.unsafe)

    @OptionGroup var sourceCache: IgnoredSourceCacheOption

    @Argument(help: "Source image(s), then the output image.")
    var files: [String]

    func validate() throws {
        guard files.count >= 2 else { throw ValidationError("Expecting at least one source and an output file") }
        guard (1...16).contains(workers) else {
            throw ValidationError("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16")
        }
    }

    func run() throws {
        let sourcePaths = Array(files.dropLast())
        let target = files.last!
        let outFormat = try targetFormat.value()
        let opts = try formatOptions.list()
        if opts.wantsHelp {
            Console.out(
                outFormat == .qed
                    ? OptionList.qedHelp : outFormat == .addCOW ? OptionList.addCOWHelp : OptionList.rawHelp)
            return
        }
        let known: [String]
        switch outFormat {
        case .qed: known = ["backing_file", "backing_fmt", "cluster_size", "table_size"]
        case .addCOW: known = ["backing_file", "backing_fmt", "cluster_size", "image_file"]
        default: known = []
        }
        try opts.check(known: known, format: outFormat.rawValue)
        let layout = try QEDLayout(opts)
        guard let sparse = Sizes.parse(sparseSize) else {
            throw CLIError(
                "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output)."
            )
        }
        var sources: [any Disk] = []
        defer { for s in sources { try? s.close() } }
        for path in sourcePaths {
            sources.append(try opening.open(path))
        }
        var o = QEDTools.Convert.Options()
        o.format = outFormat
        o.clusterSize = layout.clusterSize
        o.tableSize = layout.tableSize
        o.imageFile = opts.value("image_file")
        o.backingFile = backingFile ?? opts.value("backing_file")
        if let f = try (backingFormat ?? opts.value("backing_fmt").map(Choice.init(argument:)))?.value() {
            o.backingFormat = f
        }
        o.sparseSize = sparse
        o.workers = workers
        o.outOfOrder = outOfOrder
        o.skipCreate = skipCreate
        o.durable = try cache.value().flushesWhenDone
        o.cancellation = Signals.cancellation
        o.salvage = salvage
        o.warning = { Console.error("warning: " + $0) }
        let (printer, handler) = progress.printer()
        o.progress = handler
        defer { printer?.finish() }
        do {
            try QEDTools.Convert.run(sources: sources, target: target, options: o)
        } catch var error as QEDError {
            if error.path == nil { error.path = target }
            throw error
        }
    }
}
