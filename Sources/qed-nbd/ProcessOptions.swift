import ArgumentParser

/// `--pid-file --fork`: how the server process announces itself (see ``PIDFile`` and ``Daemon``).
struct ProcessOptions: ParsableArguments {
    @Option(name: .customLong("pid-file"), help: "Write the server's process id to this file.")
    var pidFile: String?

    @Flag(name: .customLong("fork"), help: "Go to the background once the server is listening.")
    var fork = false
}
