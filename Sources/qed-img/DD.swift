import ArgumentParser
import QED
import QEDTools

/// `dd`: copy blocks of an image into a new image, with qemu-img dd's operands and semantics.
struct DDCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dd",
        abstract: "Copy blocks of an image into a new image (bs=, count=, skip=, if=, of=).",
        discussion: """
            As in qemu-img: the output size is min(count*bs, input size) - skip*bs (count is counted \
            from the start of the input), and every block is written, zeroes included.
            """)

    @OptionGroup var opening: OpeningOptions

    @OptionGroup var targetFormat: TargetFormatOption

    @Argument(help: "Operands: bs=BYTES count=N skip=N if=FILE of=FILE.")
    var operands: [String] = []

    func run() throws {
        var o = QEDTools.DD.Options()
        var input: String?, output: String?
        var seen = Set<String>()
        for operand in operands {
            guard let eq = operand.firstIndex(of: "=") else { throw CLIError("unrecognized operand \(operand)") }
            let key = String(operand[..<eq]), value = String(operand[operand.index(after: eq)...])
            guard seen.insert(key).inserted else { throw CLIError("Option '\(key)' was specified more than once") }
            switch key {
            case "bs":
                guard let v = Sizes.parse(value), v > 0, v <= UInt64(Int32.max) else {
                    throw CLIError("invalid number: '\(value)'")
                }
                o.blockSize = v
            case "count":
                guard let v = Sizes.parse(value) else { throw CLIError("invalid number: '\(value)'") }
                o.count = v
            case "skip":
                guard let v = Sizes.parse(value) else { throw CLIError("invalid number: '\(value)'") }
                o.skip = v
            case "if": input = value
            case "of": output = value
            default: throw CLIError("unrecognized operand \(operand)")
            }
        }
        guard let input else { throw CLIError("Must specify both input and output files") }
        guard let output else { throw CLIError("Must specify both input and output files") }
        o.format = try targetFormat.value()
        o.cancellation = Signals.cancellation
        let disk = try opening.open(input)
        defer { try? disk.close() }
        try QEDTools.DD.run(input: disk, output: output, options: o)
    }
}
