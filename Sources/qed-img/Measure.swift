import ArgumentParser
import QED
import QEDTools

/// `measure`: the file size a new image would need.
struct Measure: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Calculate the file size required for a new image.",
        discussion: """
            For QED the required size is exactly the size of the file that 'convert -O qed' with the \
            same -o options produces for the same input (same zero detection, default -S 4k). \
            qemu-img 7.2 cannot measure QED.
            """)

    @OptionGroup var output: OutputOption

    @OptionGroup var targetFormat: TargetFormatOption

    @OptionGroup var formatOptions: FormatOptionsOption

    @Option(help: "Measure an empty image of this size instead of a file.")
    var size: String?

    @OptionGroup var opening: OpeningOptions

    @Argument(help: "Source image(s), laid end to end like convert.")
    var files: [String] = []

    func validate() throws {
        if size != nil && !files.isEmpty { throw ValidationError("--size N cannot be used together with a filename.") }
        if size == nil && files.isEmpty { throw ValidationError("Either --size N or one filename must be specified.") }
    }

    func run() throws {
        let target = try targetFormat.value()
        let opts = try formatOptions.list()
        try opts.check(
            known: target == .qed
                ? ["cluster_size", "table_size", "backing_file", "backing_fmt"]
                : target == .addCOW ? ["cluster_size"] : [],
            format: target.rawValue)
        let layout = try QEDLayout(opts)
        var options = QEDTools.Measure.Options()
        options.format = target
        options.clusterSize = layout.clusterSize
        options.tableSize = layout.tableSize
        options.cancellation = Signals.cancellation
        let result: QEDTools.Measure.Result
        if let size {
            guard let bytes = Sizes.parse(size) else {
                throw CLIError(
                    "Invalid image size specified. You may use k, M, G, T, P or E suffixes for\nqed-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."
                )
            }
            result = try QEDTools.Measure.run(.empty(size: bytes), options: options)
        } else {
            var disks: [any Disk] = []
            defer { for d in disks { try? d.close() } }
            for f in files { disks.append(try opening.open(f)) }
            result = try QEDTools.Measure.run(.sources(disks), options: options)
        }
        switch output.format {
        case .json:
            let json = QemuJSON.object([
                ("required", .uint(result.required)),
                ("fully-allocated", .uint(result.fullyAllocated)),
            ])
            Console.out(json.pretty() + "\n")
        case .human:
            Console.out("required size: \(result.required)\nfully allocated size: \(result.fullyAllocated)\n")
        }
    }
}
