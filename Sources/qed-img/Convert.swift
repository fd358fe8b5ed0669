import ArgumentParser
import QED

/// `convert`: copy one or more images (end to end) into a new sparse QED or raw image.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert (copy) images into a new QED or raw image.",
        discussion: """
            Blocks of -S bytes (default 4k) that read as zeroes are not written, so the output stays \
            sparse. With -B the output gets that backing file and only what differs from it is \
            written. Several sources are laid end to end. -m workers read and write in parallel; \
            writes stay in guest order unless -W. Ctrl-C stops cleanly (the output is flushed and closed).
            """)

    @Option(name: .customShort("f"), help: "Source format (probed when absent).")
    var format: String?

    @Option(name: .customShort("O"), help: "Output format: qed (default) or raw.")
    var outputFormat: String = "qed"

    @Option(name: .customShort("o"), help: "Output options: cluster_size=SIZE,table_size=N.")
    var options: [String] = []

    @Option(name: .customShort("B"), help: "Backing file of the output.")
    var backingFile: String?

    @Option(name: .customShort("F"), help: "Format of the backing file (probed when absent).")
    var backingFormat: String?

    @Option(name: .customShort("S"), help: "Zero-detection block size in bytes (multiple of 512; 0 = write everything).")
    var sparseSize: String = "4k"

    @Flag(name: .customShort("p"), help: "Show progress.")
    var progress = false

    @Flag(name: .customShort("n"), help: "Do not create the output; write into the existing image.")
    var skipCreate = false

    @Flag(name: .customShort("W"), help: "Allow out-of-order writes.")
    var outOfOrder = false

    @Option(name: .customShort("m"), help: "Parallel workers (1...16, default 8).")
    var workers: Int = 8

    @Flag(name: .customShort("q"), help: "Quiet.")
    var quiet = false

    @Flag(name: .customShort("U"), help: "Force share when opening the sources.")
    var forceShare = false

    @Option(name: .customShort("t"), help: "Output cache mode: unsafe (default: never flushed, like qemu-img convert), writeback, writethrough, none, directsync (flushed when done).")
    var cache: String = "unsafe"

    @Option(name: .customShort("T"), help: "Source cache mode (accepted for compatibility, ignored).")
    var sourceCache: String?

    @Argument(help: "Source image(s), then the output image.")
    var files: [String]

    func validate() throws {
        guard files.count >= 2 else { throw ValidationError("Expecting at least one source and an output file") }
        guard (1...16).contains(workers) else { throw ValidationError("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16") }
    }

    func run() throws {
        let sourcePaths = Array(files.dropLast())
        let target = files.last!
        guard let outFormat = try parseFormat(outputFormat) else { return }
        let opts = try OptionList(options)
        if opts.wantsHelp {
            Console.out(outFormat == .qed ? OptionList.qedHelp : OptionList.rawHelp)
            return
        }
        try opts.check(known: outFormat == .qed ? ["backing_file", "backing_fmt", "cluster_size", "table_size"] : [],
                       format: outFormat.rawValue)
        let layout = try QEDLayout(opts)
        guard let sparse = Sizes.parse(sparseSize) else {
            throw CLIError("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).")
        }
        let inFormat = try parseFormat(format)
        var sources: [any Disk] = []
        defer { for s in sources { try? s.close() } }
        for path in sourcePaths {
            sources.append(try openDisk(path, format: inFormat, readOnly: true, forceShare: forceShare))
        }
        var o = QED.Convert.Options()
        o.format = outFormat
        o.clusterSize = layout.clusterSize
        o.tableSize = layout.tableSize
        o.backingFile = backingFile ?? opts.value("backing_file")
        if let name = backingFormat ?? opts.value("backing_fmt"), let f = try parseFormat(name) {
            o.backingFormat = f == .raw ? .raw : .qed
        }
        o.sparseSize = sparse
        o.workers = workers
        o.outOfOrder = outOfOrder
        o.skipCreate = skipCreate
        switch cache {
        case "unsafe": o.durable = false
        case "writeback", "writethrough", "none", "off", "directsync": o.durable = true
        default: throw CLIError("Invalid cache option: \(cache)")
        }
        o.cancellation = Signals.cancellation
        let (printer, handler) = ProgressPrinter.handler(enabled: progress && !quiet)
        o.progress = handler
        defer { printer?.finish() }
        do {
            try QED.Convert.run(sources: sources, target: target, options: o)
        } catch var error as QEDError {
            if error.path == nil { error.path = target }
            throw error
        }
    }
}
