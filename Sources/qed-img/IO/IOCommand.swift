import ArgumentParser
import QED

/// `io`: qemu-io for QED and raw images: its options, its commands (from -c, or read from stdin
/// with the `qemu-io> ` prompt), its output lines and its exit status.
struct IOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "io",
        abstract: "qemu-io: run I/O commands on an image (run with -c help for the commands).",
        discussion: """
            Usage: io [OPTIONS]... [-c STRING]... [file]. Options as qemu-io's: -c/--cmd, -f/--format, \
            -r/--read-only, -s/--snapshot (writes go to a temporary overlay, dropped at the end), \
            -U/--force-share, -t/--cache MODE and -n/--nocache (writethrough, the default without \
            -t, flushes after every write; the other modes go through the host page cache), \
            -i/--aio MODE, -k, -d/--discard MODE and -m (checked and accepted: they tune QEMU's \
            block layer, which this program does not have), --image-opts (driver= and \
            file.filename= only). -C/--copy-on-read, -T/--trace and --object are refused. Without \
            -c, commands are read from stdin. The exit status is 1 if any command failed.
            """)

    @Argument(parsing: .captureForPassthrough, help: "qemu-io's options and the image file.")
    var arguments: [String] = []

    func run() throws {
        let output = IOOutput()
        let status = IOProgram(output: output).run(arguments)
        output.flush()
        if status != 0 { throw ExitCode(status) }
    }
}

/// qemu-io's `main`: parses the options, opens the file, runs the command loop.
struct IOProgram {
    let output: IOOutput

    static let getopt = GetOpt(
        shortSpec: "hVc:d:f:rsnCmki:t:T:U",
        long: [
            "help": ("h", false), "version": ("V", false), "cmd": ("c", true), "format": ("f", true),
            "read-only": ("r", false), "snapshot": ("s", false), "nocache": ("n", false),
            "copy-on-read": ("C", false), "misalign": ("m", false), "native-aio": ("k", false),
            "aio": ("i", true), "discard": ("d", true), "cache": ("t", true), "trace": ("T", true),
            "object": ("object", true), "image-opts": ("image-opts", false), "force-share": ("U", false),
        ])

    /// Runs qemu-io with `arguments`; the exit status.
    func run(_ arguments: [String]) -> Int32 {
        let parsed: (options: [GetOpt.Option], operands: [String])
        switch IOProgram.getopt.parse(arguments) {
        case .success(let p): parsed = p
        case .failure(let f):
            output.err("\(Console.programName): \(f.message)\n")
            output.out(IOProgram.usage)
            return 1
        }
        var open = IOOpenOptions()
        var commands: [String] = []
        var format: String?
        for option in parsed.options {
            let value = option.value ?? ""
            switch option.name {
            case "h":
                output.out(IOProgram.usage)
                return 0
            case "V":
                output.out("\(Console.programName) version \(QEDImg.version) (qemu-io 7.2 compatible)\n")
                return 0
            case "c": commands.append(value)
            case "f": format = value
            case "r": open.readOnly = true
            case "s": open.snapshot = true
            case "U": open.forceShare = true
            case "m", "k": break
            case "image-opts": open.imageOpts = true
            case "C":
                output.error("copy-on-read (-C) is not supported")
                return 1
            case "T", "object":
                output.error("--\(option.name == "T" ? "trace" : "object") is not supported")
                return 1
            default:
                if let message = open.apply(option.name, value) {
                    output.error(message)
                    return 1
                }
            }
        }
        if parsed.operands.count > 1 {
            output.out(IOProgram.usage)
            return 1
        }
        if format != nil && open.imageOpts {
            output.error("--image-opts and -f are mutually exclusive")
            return 1
        }
        open.format = format
        let session = IOSession(output: output)
        if let file = parsed.operands.first {
            if !session.open(file, open) { return 1 }
        }
        let ok = session.loop(commands: commands)
        session.finish()
        return ok ? 0 : 1
    }

    static let usage = """
        Usage: \(Console.programName) [OPTIONS]... [-c STRING]... [file]
        QEMU Disk exerciser (qed-img io)

          --image-opts         treat file as option string (driver=, file.filename=)
          -c, --cmd STRING     execute command with its arguments
                               from the given string
          -f, --format FMT     specifies the block driver to use (qed or raw)
          -r, --read-only      export read-only
          -s, --snapshot       use snapshot file (a temporary overlay)
          -n, --nocache        disable host cache, short for -t none
          -m, --misalign       accepted (buffer alignment is QEMU's concern)
          -k, --native-aio     accepted (QEMU's AIO engines are not used)
          -i, --aio=MODE       use AIO mode (threads, native or io_uring): accepted
          -t, --cache=MODE     use the given cache mode for the image
          -d, --discard=MODE   use the given discard mode for the image
          -U, --force-share    force shared permissions
          -h, --help           display this help and exit
          -V, --version        output version information and exit

        See '\(Console.programName) -c help' for information on available commands.

        """
}
