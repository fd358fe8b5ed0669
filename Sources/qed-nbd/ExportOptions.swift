import ArgumentParser
import NBDServer

/// `-r -t -e --handshake-limit -x -D`: what is exported, under which name, and to how many clients.
struct ExportOptions: ParsableArguments {
    @Flag(name: [.customShort("r"), .customLong("read-only")], help: "Export read-only.")
    var readOnly = false

    @Flag(name: [.customShort("t"), .customLong("persistent")], help: "Keep serving after the last client leaves.")
    var persistent = false

    @Option(
        name: [.customShort("e"), .customLong("shared")],
        help: "How many clients may use the export at once (0: no limit); more wait. Not 1: advertise multi-conn."
    )
    var shared: Int = 1

    @Option(
        name: .customLong("handshake-limit"),
        help: ArgumentHelp(
            "Close connections that have not finished negotiating after SECONDS (0: no limit).",
            valueName: "SECONDS"
        )
    )
    var handshakeLimit: Int = 10

    @Option(name: [.customShort("x"), .customLong("export-name")], help: "Export name.")
    var exportName: String = ""

    @Option(name: [.customShort("D"), .customLong("description")], help: "Export description.")
    var exportDescription: String?

    /// The longest `--handshake-limit`, in seconds: a year is as good as none, and stays far from
    /// overflowing a count of nanoseconds.
    static let longestHandshakeLimit = 366 * 86400

    func validate() throws {
        guard shared >= 0 else { throw ValidationError("-e/--shared must be 0 or more") }
        guard (0...Self.longestHandshakeLimit).contains(handshakeLimit) else {
            throw ValidationError("--handshake-limit must be between 0 and \(Self.longestHandshakeLimit) seconds")
        }
    }

    /// Sets the export's name, description, client limit, handshake limit and persistence.
    func apply(to options: inout NBDServerOptions) {
        options.exportName = exportName
        options.description = exportDescription
        options.sharedClients = shared
        options.handshakeLimit = Double(handshakeLimit)
        options.persistent = persistent
    }
}
