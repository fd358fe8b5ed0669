import ArgumentParser
import QED
import QEDTools

/// `compare`: whether two images show the same content (qemu-img's messages and exit codes).
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check whether two images have the same content.",
        discussion: """
            Exit status: 0 identical, 1 different ("Content mismatch at offset N!", the start of the \
            first differing 512-byte sector), 2 an image could not be opened, 3 block status could \
            not be read, 4 a read failed. Images of different sizes are identical if the longer one \
            reads as zeroes past the shorter (-s: strict, sizes and allocation must match too).
            """)

    @Option(name: .customShort("f"), help: "Format of the first image.")
    var format1: Choice<DiskFormat>?

    @Option(name: .customShort("F"), help: "Format of the second image.")
    var format2: Choice<DiskFormat>?

    @Flag(name: .customShort("s"), help: "Strict: fail on different sizes or allocation status.")
    var strict = false

    @OptionGroup var progress: ProgressOptions

    @OptionGroup var share: ForceShareOption

    @OptionGroup var sourceCache: IgnoredSourceCacheOption

    @Argument(help: "First image.")
    var file1: String

    @Argument(help: "Second image.")
    var file2: String

    func run() throws {
        let a: any Disk, b: any Disk
        do {
            a = try openDisk(file1, format: try format1?.value(), readOnly: true, forceShare: share.forceShare)
        } catch let e as QEDError { throw CLIError(e.message, path: e.path, exitCode: 2) }
        defer { try? a.close() }
        do {
            b = try openDisk(file2, format: try format2?.value(), readOnly: true, forceShare: share.forceShare)
        } catch let e as QEDError { throw CLIError(e.message, path: e.path, exitCode: 2) }
        defer { try? b.close() }
        let (printer, handler) = progress.printer()
        var options = QEDTools.Compare.Options()
        options.strict = strict
        options.progress = handler
        options.cancellation = Signals.cancellation
        let result: QEDTools.Compare.Result
        do {
            result = try QEDTools.Compare.run(a, b, options: options)
        } catch let e as QEDError {
            printer?.finish()
            throw CLIError(e.message, path: e.path, exitCode: e.code == .io ? 4 : 3)
        }
        printer?.finish()
        var out = result.sizeMismatchWarning ? "Warning: Image size mismatch!\n" : ""
        let code: Int32
        switch result.outcome {
        case .identical:
            out += "Images are identical.\n"
            code = 0
        case .contentMismatch(let offset):
            out += "Content mismatch at offset \(offset)!\n"
            code = 1
        case .strictSizeMismatch:
            out += "Strict mode: Image size mismatch!\n"
            code = 1
        case .strictStatusMismatch(let offset):
            out += "Strict mode: Offset \(offset) block status mismatch!\n"
            code = 1
        }
        if !progress.quiet { Console.out(out) }
        if code != 0 { throw ExitCode(code) }
    }
}
