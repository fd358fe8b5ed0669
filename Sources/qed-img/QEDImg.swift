import ArgumentParser
import QED
import QEDTools

/// `qed-img`: qemu-img's verbs for QED and raw images, thin over the `QED` library.
@main
struct QEDImg: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "qed-img",
        abstract: "QED disk image utility (qemu-img's verbs and output for QED and raw images).",
        discussion: """
            Sizes take the suffixes k, M, G, T, P and E (powers of 1024). Formats: qed, add-cow and raw; \
            input formats are probed when -f is not given. Errors are reported as \
            'qed-img: FILE: what is wrong' with a non-zero exit status.
            """,
        version: "qed-img version \(version) (output compatible with qemu-img 7.2)",
        subcommands: [
            Create.self, Info.self, Check.self, Map.self, Convert.self, Compare.self, Resize.self,
            Rebase.self, Commit.self, Amend.self, Stream.self, Measure.self, DDCommand.self, Bench.self,
            IOCommand.self,
        ]
    )

    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        // `resize FILE -1G`: like qemu-img, the last argument is the size even when it starts with '-'.
        if arguments.first == "resize", let last = arguments.last, last.count > 1, last.hasPrefix("-"),
            let second = last.dropFirst().first, second.isNumber, !arguments.contains("--")
        {
            arguments.insert("--", at: arguments.count - 1)
        }
        Signals.install()
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch let error as QEDError {
            Console.error(error.message, path: error.path)
            terminate(1)
        } catch let error as CLIError {
            Console.error(error.message, path: error.path)
            terminate(error.exitCode)
        } catch is OperationCancelled {
            Console.error("interrupted; the images were flushed and closed")
            terminate(interruptedExitCode)
        } catch let error as ExitCode {
            terminate(error.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                exit(withError: error)
            }
            // Usage errors: ArgumentParser's message, qemu-img's status 1.
            Console.err(fullMessage(for: error) + "\n")
            terminate(1)
        }
    }
}
