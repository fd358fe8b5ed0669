import ArgumentParser
import QED

/// `resize`: grow an image (QED cannot shrink; raw can with --shrink).
struct Resize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change the virtual size of an image.",
        discussion: "SIZE is absolute, or relative with + or - (e.g. +1G, -512M). QED images only grow.")

    @OptionGroup var format: FormatOption

    @Flag(help: "Allow shrinking (raw images only; QED cannot shrink).")
    var shrink = false

    @Option(help: "Preallocation mode (only 'off' is supported).")
    var preallocation: Choice<Preallocation>?

    @OptionGroup var verbosity: QuietOption

    @Argument(help: "The image file.")
    var file: String

    @Argument(help: "New size, or +SIZE / -SIZE relative to the current size.")
    var size: String

    func run() throws {
        _ = try preallocation?.value(naming: file)  // refuses any mode but `off`, the only one there is
        var text = Substring(size)
        var sign = 0
        if text.hasPrefix("+") {
            sign = 1
            text = text.dropFirst()
        } else if text.hasPrefix("-") {
            sign = -1
            text = text.dropFirst()
        }
        guard let amount = Sizes.parse(String(text)), amount <= UInt64(Int64.max) else {
            throw CLIError(
                "Invalid image size specified. You may use k, M, G, T, P or E suffixes for\nqed-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."
            )
        }
        let disk = try openDisk(file, format: try format.value(), readOnly: false)
        defer { try? disk.close() }
        let current = disk.virtualSize
        let newSize: UInt64
        switch sign {
        case 1:
            let (v, o) = current.addingReportingOverflow(amount)
            guard !o else { throw CLIError("Invalid image size specified", path: file) }
            newSize = v
        case -1:
            guard amount <= current else { throw CLIError("New image size must be positive", path: file) }
            newSize = current - amount
        default:
            newSize = amount
        }
        if newSize < current && !shrink {
            throw CLIError(
                "Use the --shrink option to perform a shrink operation.\nqed-img: warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.",
                path: file)
        }
        do {
            try disk.resize(to: newSize)
        } catch let e as QEDError where e.code == .invalidImageSize {
            throw CLIError(
                "Invalid image size specified: \(newSize) bytes (QED sizes must be a multiple of 512 and fit the L1 table)",
                path: file)
        }
        try disk.close()
        if !verbosity.quiet { Console.out("Image resized.\n") }
    }
}
