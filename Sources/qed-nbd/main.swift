import ArgumentParser
import Logging
import NBD
import NBDServer
import QED

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// `qed-nbd`: serves a QED or raw image over NBD, with qemu-nbd's options where it has them.
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

    @Option(name: [.customShort("b"), .customLong("bind")], help: "Address to listen on (default 127.0.0.1).")
    var bind: String?

    @Option(name: [.customShort("p"), .customLong("port")], help: "TCP port to listen on (default 10809).")
    var port: Int?

    @Option(name: [.customShort("k"), .customLong("socket")], help: "Listen on this Unix socket path instead.")
    var socket: String?

    @Option(name: [.customShort("f"), .customLong("format")], help: "Image format: \(DiskOpener.formatNames(conjunction: "or")) (probed if omitted).")
    var format: String?

    @Option(name: .customLong("cache"), help: "writeback (default), writethrough or none.")
    var cache: String = "writeback"

    @Option(name: .customLong("discard"), help: "ignore (default) or unmap: whether TRIM frees space.")
    var discard: String = "ignore"

    @Option(name: .customLong("detect-zeroes"), help: "off (default), on or unmap: zero-write detection.")
    var detectZeroes: String = "off"

    @Flag(name: [.customShort("A"), .customLong("allocation-depth")], help: "Offer qemu:allocation-depth.")
    var allocationDepth = false

    @Option(name: .customLong("pid-file"), help: "Write the server's process id to this file.")
    var pidFile: String?

    @Flag(name: .customLong("fork"), help: "Go to the background once the server is listening.")
    var fork = false

    @Option(
        name: .customLong("tls-certificates"),
        help: ArgumentHelp(
            "Require TLS, with X.509 certificates from DIR: server-cert.pem, server-key.pem "
                + "(and ca-cert.pem with --tls-verify-peer).",
            valueName: "DIR"
        )
    )
    var tlsCertificates: String?

    @Option(
        name: .customLong("tls-psk"),
        help: ArgumentHelp(
            "Require TLS, with pre-shared keys from FILE (GnuTLS psktool format: identity:hexkey lines).",
            valueName: "FILE"
        )
    )
    var tlsPSK: String?

    @Flag(
        name: .customLong("tls-verify-peer"),
        help: "With --tls-certificates: clients must present a certificate signed by DIR/ca-cert.pem."
    )
    var tlsVerifyPeer = false

    @Flag(
        name: .customLong("no-extended-headers"),
        help: "Refuse NBD extended headers (clients then use compact 28-byte requests, as before QEMU 8.2)."
    )
    var noExtendedHeaders = false

    @Flag(name: [.customShort("v"), .customLong("verbose")], help: "Log connections and requests to stderr.")
    var verbose = false

    @Option(name: .customLong("io-threads"), help: "Threads doing image I/O (default: one per CPU core, at least 2).")
    var ioThreads: Int?

    @Option(name: .customLong("loop-threads"), help: .hidden)
    var loopThreads: Int?

    @Argument(help: "The image file.")
    var file: String

    func validate() throws {
        guard self.shared >= 0 else { throw ValidationError("-e/--shared must be 0 or more") }
        // At most a year: any longer is as good as none, and stays far from overflowing nanoseconds.
        guard (0...366 * 86400).contains(self.handshakeLimit) else {
            throw ValidationError("--handshake-limit must be between 0 and \(366 * 86400) seconds")
        }
        if let port = self.port, !(0...65535).contains(port) {
            throw ValidationError("invalid port \(port)")
        }
        if self.socket != nil && (self.bind != nil || self.port != nil) {
            throw ValidationError("-k/--socket cannot be combined with -b/--bind or -p/--port")
        }
        if let format = self.format, DiskOpener.format(named: format) == nil {
            throw ValidationError("unknown format '\(format)' (\(DiskOpener.formatNames(conjunction: "or")))")
        }
        guard NBDCacheMode(rawValue: self.cache) != nil else {
            throw ValidationError("invalid cache mode '\(self.cache)' (writeback, writethrough or none)")
        }
        guard let discard = NBDDiscardMode(rawValue: self.discard) else {
            throw ValidationError("invalid discard mode '\(self.discard)' (ignore or unmap)")
        }
        guard let detect = NBDDetectZeroesMode(rawValue: self.detectZeroes) else {
            throw ValidationError("invalid detect-zeroes mode '\(self.detectZeroes)' (off, on or unmap)")
        }
        if detect == .unmap && discard != .unmap {
            throw ValidationError("--detect-zeroes=unmap is only allowed with --discard=unmap")
        }
        if self.tlsCertificates != nil && self.tlsPSK != nil {
            throw ValidationError("--tls-certificates and --tls-psk are mutually exclusive")
        }
        if self.tlsVerifyPeer && self.tlsCertificates == nil {
            throw ValidationError("--tls-verify-peer needs --tls-certificates")
        }
        guard (1...1024).contains(self.ioThreads ?? 1), (1...64).contains(self.loopThreads ?? 1) else {
            throw ValidationError("thread counts out of range")
        }
    }

    func run() throws {
        // A socket passed by socket activation is taken first: LISTEN_PID names this process, and
        // --fork is about to change the pid.
        let activated: Int32?
        do {
            activated = try SocketActivation.takeListeningSocket()
        } catch {
            throw Failure(error.description)
        }
        let daemon = self.fork ? try Daemon.fork(keeping: activated) : nil
        // Before any thread exists, so every thread inherits the mask and the signals reach the waiter.
        Signals.block()

        var logger = Logger(label: "qed-nbd")
        logger.logLevel = self.verbose ? .debug : .warning

        // Credentials first: a bad certificate or key file is reported before the image is opened.
        let tls: NBDServerTLS?
        do {
            if let directory = self.tlsCertificates {
                tls = try NBDServerTLS.certificates(directory: directory, verifyPeer: self.tlsVerifyPeer)
            } else if let file = self.tlsPSK {
                tls = try NBDServerTLS.preSharedKeys(file: file)
            } else {
                tls = nil
            }
        } catch let error as NBDTLSConfigurationError {
            throw Failure(error.description)
        }

        var openOptions = OpenOptions(readOnly: self.readOnly)
        openOptions.logger = logger
        let disk = try DiskOpener.open(path: self.file, format: self.format.flatMap(DiskOpener.format(named:)), options: openOptions)

        var options = NBDServerOptions()
        options.exportName = self.exportName
        options.description = self.exportDescription
        options.cache = NBDCacheMode(rawValue: self.cache) ?? .writeback
        options.discard = NBDDiscardMode(rawValue: self.discard) ?? .ignore
        options.detectZeroes = NBDDetectZeroesMode(rawValue: self.detectZeroes) ?? .off
        options.allocationDepth = self.allocationDepth
        options.extendedHeaders = !self.noExtendedHeaders
        options.sharedClients = self.shared
        options.handshakeLimit = Double(self.handshakeLimit)
        options.persistent = self.persistent
        if let ioThreads = self.ioThreads { options.ioThreads = ioThreads }
        if let loopThreads = self.loopThreads { options.eventLoopThreads = loopThreads }

        let address: NBDListenAddress
        if let activated {
            address = .inherited(descriptor: activated)
        } else if let socket = self.socket {
            address = .unix(path: socket)
        } else {
            address = .tcp(host: self.bind ?? "127.0.0.1", port: self.port ?? NBD.defaultPort)
        }

        let server = NBDServer(disk: disk, options: options, tls: tls, logger: logger)
        // SIGTERM/SIGINT were blocked in every thread (see `Signals.block()`); one waiter turns them into a
        // graceful shutdown.
        Signals.startWaiter { server.shutdown() }
        do {
            try server.start(listeningOn: address)
        } catch {
            server.shutdown()
            try? server.run()
            throw Failure("cannot listen on \(address): \(error)")
        }
        if let pidFile = self.pidFile {
            do {
                try Self.writePIDFile(pidFile)
            } catch {
                server.shutdown()
                try? server.run()
                throw error
            }
        }
        daemon?.ready()
        defer { if let pidFile = self.pidFile { _ = unlink(pidFile) } }
        try server.run()
    }

    /// Writes the pid to `path` atomically: into a temporary file beside it, then renamed over it,
    /// so whoever sees the file exist (a supervisor, a test waiting for readiness) sees it complete
    /// and closed — never empty, and never holding one of the server's descriptors.
    static func writePIDFile(_ path: String) throws {
        let text = "\(getpid())\n"
        let temporary = "\(path).\(getpid()).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw Failure("cannot write pid file \(path): \(errnoText())") }
        let written = text.utf8CString.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, text.utf8.count) }
        close(descriptor)
        guard written == text.utf8.count, rename(temporary, path) == 0 else {
            let reason = errnoText()
            _ = unlink(temporary)
            throw Failure("cannot write pid file \(path): \(reason)")
        }
    }
}

/// SIGTERM and SIGINT handling without handlers: the signals are blocked in all threads and taken with
/// `sigwait`, so they can never interrupt a system call or be lost to a thread that ignores them.
enum Signals {
    private static var terminationSet: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        return set
    }

    /// Blocks SIGTERM and SIGINT in the calling thread (and so in every thread it creates later) and
    /// ignores SIGPIPE.
    static func block() {
        var set = terminationSet
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
    }

    /// Starts a thread (a plain pthread: dispatch's workers reset their signal masks) that waits for
    /// SIGTERM or SIGINT and then calls `action` once.
    static func startWaiter(_ action: @escaping @Sendable () -> Void) {
        final class Box: Sendable {
            let action: @Sendable () -> Void
            init(_ action: @escaping @Sendable () -> Void) { self.action = action }
        }
        let context = Unmanaged.passRetained(Box(action)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { argument in
            guard let argument else { return nil }
            let box = Unmanaged<Box>.fromOpaque(argument).takeRetainedValue()
            var set = Signals.terminationSet
            var number: Int32 = 0
            while sigwait(&set, &number) != 0 {}
            box.action()
            return nil
        }, context)
        if status == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<Box>.fromOpaque(context).release()
        }
    }
}

/// A failure reported as `qed-nbd: message` with exit status 1.
struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// Writes `text` to standard error, unbuffered.
func printError(_ text: String) {
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        offset += n
    }
}

/// `--fork`: the parent waits until the child is listening (or failed), relays the child's early error
/// output, and exits 0 or 1; the child detaches and serves.
struct Daemon {
    private static let readyMarker: [UInt8] = Array("\u{1}qed-nbd-ready\u{1}".utf8)
    private let pipeWriter: Int32

    /// Forks. Returns only in the child, which keeps only stdio, the pipe to the parent and the
    /// `activatedSocket` (if any) open; the parent exits.
    static func fork(keeping activatedSocket: Int32?) throws -> Daemon {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw Failure("cannot create a pipe for --fork: \(errnoText())") }
        let pid = Glibc.fork()
        guard pid >= 0 else { throw Failure("cannot fork: \(errnoText())") }
        if pid > 0 {
            close(fds[1])
            var output: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                output.append(contentsOf: chunk[0..<n])
            }
            let ready = output.count >= readyMarker.count && Array(output.suffix(readyMarker.count)) == readyMarker
            let message = ready ? Array(output.dropLast(readyMarker.count)) : output
            if !message.isEmpty { _ = message.withUnsafeBytes { write(2, $0.baseAddress, $0.count) } }
            exit(ready ? 0 : 1)
        }
        close(fds[0])
        _ = setsid()
        _ = dup2(fds[1], 2)
        // A daemon must not keep its parent's descriptors open (a supervisor may be waiting for them to
        // close); keep the pipe and, under socket activation, the listening socket.
        closeInheritedDescriptors(keeping: Set([fds[1]] + (activatedSocket.map { [$0] } ?? [])))
        return Daemon(pipeWriter: fds[1])
    }

    /// Closes every descriptor above 2 except `keep`, as listed in /proc/self/fd.
    private static func closeInheritedDescriptors(keeping keep: Set<Int32>) {
        guard let directory = opendir("/proc/self/fd") else { return }
        let own = dirfd(directory)
        var open: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let fd = Int32(name), fd > 2, fd != own, !keep.contains(fd) { open.append(fd) }
        }
        closedir(directory)
        for fd in open { close(fd) }
    }

    /// Tells the parent the server is up, and detaches from the terminal.
    func ready() {
        _ = Self.readyMarker.withUnsafeBytes { write(self.pipeWriter, $0.baseAddress, $0.count) }
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            _ = dup2(null, 0)
            _ = dup2(null, 1)
            _ = dup2(null, 2)
            if null > 2 { close(null) }
        }
        close(self.pipeWriter)
    }
}

// Entry point: parse, run, and map failures to qemu-nbd-style messages and exit status 1.
do {
    var command = try QEDNBD.parseAsRoot()
    if command is QEDNBD {
        LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
        try command.run()
    } else {
        try command.run()
    }
} catch let error as Failure {
    printError("qed-nbd: \(error.description)\n")
    exit(1)
} catch let error as QEDError {
    printError("qed-nbd: \(error.description)\n")
    exit(1)
} catch {
    QEDNBD.exit(withError: error)
}
