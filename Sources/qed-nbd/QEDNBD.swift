import ArgumentParser
import Logging
import NBDServer
import QED

/// `qed-nbd`: serves a QED or raw image over NBD, with qemu-nbd's options where it has them.
///
/// The options are declared in groups, one concern each, in the order `--help` lists them; each group
/// checks itself and says what it makes of the server's configuration.
struct QEDNBD: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "qed-nbd",
        abstract: "Export a QED or raw disk image over the NBD protocol.",
        discussion: """
            Options follow qemu-nbd. Listens on 127.0.0.1:10809 by default (TCP), or on a Unix socket with \
            -k, or on a socket passed by systemd socket activation (LISTEN_PID/LISTEN_FDS, fd 3). Serves one \
            client at a time unless -e says otherwise (more clients wait), and exits when that client leaves \
            unless -t is given. A connection that has not finished negotiating after --handshake-limit \
            seconds (10) is closed; connections still negotiating do not take -e slots. \
            SIGTERM or SIGINT: stop accepting, finish requests in flight, flush and close the image, exit 0.
            With --tls-certificates or --tls-psk, clients must start TLS (NBD_OPT_STARTTLS) before anything \
            else, as with qemu-nbd --tls-creds: nbds:// or nbds+unix:// URIs, qemu's tls-creds objects.
            """,
        version: "qed-nbd version \(version)"
    )

    /// `-r -t -e --handshake-limit -x -D`.
    @OptionGroup var export: ExportOptions

    /// `-b -p -k`.
    @OptionGroup var listen: ListenOptions

    @Option(name: [.customShort("f"), .customLong("format")], help: "Image format (probed if omitted).")
    var format: DiskFormat?

    /// `--cache --discard --detect-zeroes -A`.
    @OptionGroup var requests: RequestOptions

    /// `--pid-file --fork`.
    @OptionGroup var process: ProcessOptions

    /// `--tls-certificates --tls-psk --tls-verify-peer`.
    @OptionGroup var tls: TLSOptions

    @Flag(name: [.customShort("v"), .customLong("verbose")], help: "Log connections and requests to stderr.")
    var verbose = false

    /// `--io-threads --loop-threads`.
    @OptionGroup var threads: ThreadOptions

    @Argument(help: "The image file.")
    var file: String

    /// The server's configuration: qemu-nbd's defaults, changed by the options given.
    var serverOptions: NBDServerOptions {
        var options = NBDServerOptions()
        export.apply(to: &options)
        requests.apply(to: &options)
        threads.apply(to: &options)
        return options
    }

    /// Starts the server in the order that matters, then serves until it stops.
    func run() throws {
        // A socket passed by socket activation is taken first: LISTEN_PID names this process, and
        // --fork is about to change the pid.
        let activated: Int32?
        do {
            activated = try SocketActivation.takeListeningSocket()
        } catch {
            throw Failure(error.description)
        }
        let daemon = process.fork ? try Daemon.fork(keeping: activated) : nil
        // Before any thread exists, so every thread inherits the mask and the signals reach the waiter.
        Signals.block()

        var logger = Logger(label: "qed-nbd")
        logger.logLevel = verbose ? .debug : .warning

        // Credentials first: a bad certificate or key file is reported before the image is opened.
        let credentials = try tls.credentials()

        var openOptions = OpenOptions(readOnly: export.readOnly)
        openOptions.logger = logger
        let disk = try DiskOpener.open(path: file, format: format, options: openOptions)

        let address = listen.address(activated: activated)
        let server = NBDServer(disk: disk, options: serverOptions, tls: credentials, logger: logger)
        // SIGTERM/SIGINT were blocked in every thread (see `Signals.block()`); one waiter turns them into a
        // graceful shutdown.
        Signals.startWaiter { server.shutdown() }
        do {
            try server.start(listeningOn: address)
        } catch {
            server.abandon()
            throw Failure("cannot listen on \(address): \(error)")
        }
        if let pidFile = process.pidFile {
            do {
                try PIDFile.create(pidFile)
            } catch {
                server.abandon()
                throw error
            }
        }
        daemon?.ready()
        defer { if let pidFile = process.pidFile { PIDFile.remove(pidFile) } }
        try server.run()
    }
}
