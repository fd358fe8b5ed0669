public import Logging
import NBD
public import NIOCore
import NIOPosix
public import QED
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An NBD server exporting one ``QED/Disk`` (a QED or raw image) over SwiftNIO.
///
/// Lifecycle: create it with an open disk (the server takes ownership and closes it), ``start(listeningOn:)``,
/// then ``run()`` blocks until the server stops: after ``shutdown()`` (e.g. on SIGTERM), or, unless
/// ``NBDServerOptions/persistent``, once a client that used the export has left and none is connected.
/// Stopping stops accepting, lets connections finish the requests in flight, flushes and closes the image.
///
/// All connections share the one disk through one ``NBDDiskBackend``; engine calls run on an
/// `NIOThreadPool`, never on an event loop.
public final class NBDServer: Sendable {
    /// The backend executing requests (shared by every connection).
    public let backend: NBDDiskBackend
    /// The options the server runs with.
    public let options: NBDServerOptions
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let threadPool: NIOThreadPool
    private let configuration: NBDServerConfiguration
    /// TLS credentials; when present, TLS is required.
    private let tls: NBDServerTLS?
    /// Completed when the server must stop (shutdown requested or the last client left).
    private let stopPromise: EventLoopPromise<Void>
    /// The server's mutable bookkeeping, touched from every event loop and from `shutdown()`'s caller;
    /// the lock makes admission (count + limit), stop decisions and the channel set consistent.
    private let state: Mutex<State>

    private struct State: Sendable {
        var listener: (any Channel)?
        var unixSocketPath: String?
        var connections: [ObjectIdentifier: any Channel] = [:]
        /// The `-e` slots and the cap on connections still negotiating.
        var admission: NBDAdmission<NBDTransmissionGrant>
        /// The listener's `autoRead` as last decided; only the listener's event loop applies it (see
        /// ``NBDServer/updateListener()``).
        var listenerAccepting = true
        var someClientUsedTheExport = false
        var stopping = false
        var started = false
    }

    /// Creates a server for `disk`.
    /// - Parameters:
    ///   - disk: The open disk to export; the server closes it when it stops.
    ///   - options: Export name, policies and limits.
    ///   - tls: TLS credentials; with them every client must start TLS before anything else (as with
    ///     qemu-nbd's `--tls-creds`). None by default.
    ///   - logger: Where the server logs (connections at debug, malformed input and TLS failures at info).
    public init(disk: any Disk, options: NBDServerOptions, tls: NBDServerTLS? = nil, logger: Logger) {
        backend = NBDDiskBackend(disk: disk, options: options)
        self.options = options
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.eventLoopThreads))
        threadPool = NIOThreadPool(numberOfThreads: max(1, options.ioThreads))
        configuration = NBDServerConfiguration(
            exports: [backend.export],
            tls: tls == nil ? .disabled : .required,
            blockSize: options.blockSize,
            offersExtendedHeaders: options.extendedHeaders
        )
        self.tls = tls
        stopPromise = group.next().makePromise(of: Void.self)
        self.state = Mutex(
            State(
                admission: NBDAdmission(
                    transmissionLimit: options.sharedClients,
                    negotiationLimit: options.maximumNegotiatingConnections
                )
            )
        )
    }

    /// Starts listening. Call once.
    /// - Parameter address: Where to listen.
    /// - Returns: The address actually bound (with the real port when port 0 was asked for), if known.
    /// - Throws: A socket error (address in use, permission, not a socket).
    @discardableResult
    public func start(listeningOn address: NBDListenAddress) throws -> SocketAddress? {
        let alreadyStarted = self.state.withLock { state -> Bool in
            defer { state.started = true }
            return state.started
        }
        precondition(!alreadyStarted, "NBDServer.start(listeningOn:) called twice")
        threadPool.start()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 128)
            .serverChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: false)
            // Replies queued beyond the high mark pause reading requests (NBDConnectionHandler);
            // the high mark lets large sequential reads keep several replies in flight.
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 8 << 20, high: 32 << 20))
            // Admission happens on the listener's event loop, as each connection is accepted, so
            // pausing the listener at the limit takes effect before the next accept.
            .serverChannelInitializer { [self] listener in
                listener.eventLoop.makeCompletedFuture {
                    try listener.pipeline.syncOperations.addHandler(NBDAdmissionHandler(server: self))
                }
            }
            .childChannelInitializer { [self] channel in
                initialize(channel)
            }
        let listener: any Channel
        switch address {
        case .tcp(let host, let port):
            listener = try bootstrap.serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port).wait()
        case .unix(let path):
            listener = try bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).wait()
        case .inherited(let descriptor):
            listener = try bootstrap.withBoundSocket(descriptor).wait()
        }
        self.state.withLock { state in
            state.listener = listener
            if case .unix(let path) = address { state.unixSocketPath = path }
        }
        // Connections may have been admitted before the listener was recorded.
        updateListener()
        self.logger.info(
            "serving",
            metadata: [
                "address": "\(listener.localAddress.map { "\($0)" } ?? address.description)",
                "export": "\(self.options.exportName)",
                "size": "\(backend.disk.virtualSize)",
                "read-only": "\(backend.disk.isReadOnly)",
                "tls": "\(self.tls.map { "\($0.kind)" } ?? "off")",
            ]
        )
        return listener.localAddress
    }

    /// Asks the server to stop: stop accepting, finish requests in flight, flush and close the image.
    /// Thread-safe and idempotent; ``run()`` returns once everything is closed.
    public func shutdown() {
        stopPromise.succeed(())
    }

    /// Stops a server that will not serve (``start(listeningOn:)`` failed, or the caller cannot go on
    /// after starting it): ``shutdown()`` then ``run()``, so the threads are released and the image is
    /// closed. An error closing the image is dropped: the caller is reporting the failure that stopped it.
    public func abandon() {
        shutdown()
        try? run()
    }

    /// Blocks until the server stops (see the type's documentation), then drains connections, flushes and
    /// closes the disk and releases the threads. Call from a thread that is not an event loop (e.g. main).
    /// - Throws: The error of flushing or closing the disk, if any.
    public func run() throws {
        try? stopPromise.futureResult.wait()
        self.logger.debug("stopping")
        let (listener, connections, unixPath) = self.state.withLock { state in
            state.stopping = true
            return (state.listener, Array(state.connections.values), state.unixSocketPath)
        }
        try? listener?.close().wait()
        if let unixPath { _ = unixPath.withCString { unlink($0) } }

        // Let every connection finish what it has in flight; close stragglers after the drain timeout.
        for connection in connections {
            connection.pipeline.fireUserInboundEventTriggered(NBDServerShutdownEvent())
        }
        if !connections.isEmpty {
            let loop = group.next()
            let timeout = loop.scheduleTask(in: .milliseconds(Int64(self.options.drainTimeout * 1000))) {
                for connection in connections { connection.close(promise: nil) }
            }
            try? EventLoopFuture.andAllComplete(connections.map(\.closeFuture), on: loop).wait()
            timeout.cancel()
        }
        // Requests of clients that vanished may still run; let them finish before the image closes.
        try? threadPool.syncShutdownGracefully()
        // close() makes every write durable (and clears QED's dirty flag) before it lets go.
        var closeError: (any Error)?
        do { try backend.disk.close() } catch { closeError = error }
        try? group.syncShutdownGracefully()
        self.logger.debug("stopped")
        if let closeError { throw closeError }
    }

    // MARK: - Connections

    /// Admits a connection the listener just accepted (on the listener's event loop, before the
    /// connection is set up on its own loop): counts it, and stops accepting at the negotiation limit.
    fileprivate func admit(_ channel: any Channel, listener: any Channel) {
        let id = ObjectIdentifier(channel)
        let pause = self.state.withLock { state -> Bool in
            guard !state.stopping else { return false }
            state.connections[id] = channel
            state.admission.admit(id)
            guard state.listenerAccepting, !state.admission.acceptsConnections else { return false }
            state.listenerAccepting = false
            return true
        }
        // On the listener's loop, so applied at once, before the next accept.
        if pause { listener.setOption(.autoRead, value: false).whenFailure { _ in } }
        channel.closeFuture.whenComplete { [self] _ in connectionClosed(id) }
    }

    /// Makes the listener accept exactly when the admission allows it.
    ///
    /// Every change of the listener's `autoRead` runs on the listener's event loop and reads the state
    /// when it runs, so changes decided on different loops cannot be applied out of order. (They once
    /// were: a pause decided on one connection's loop and a resume decided on another's both hopped to
    /// the listener's loop, and when the resume overtook the pause the listener stayed paused with no
    /// connection left to resume it.) Connections only ever make admission possible again from other
    /// loops; only the listener's loop, in ``admit(_:listener:)``, makes it impossible.
    private func updateListener() {
        guard let listener = self.state.withLock({ $0.listener }) else { return }
        listener.eventLoop.execute { [self] in
            let accepting = self.state.withLock { state -> Bool in
                state.listenerAccepting = !state.stopping && state.admission.acceptsConnections
                return state.listenerAccepting
            }
            listener.setOption(.autoRead, value: accepting).whenFailure { _ in }
        }
    }

    /// A connection that finished negotiating asks for a transmission slot (`-e`).
    /// - Returns: Whether it got one now; if not, `grant` is called (from any thread) when it does.
    private func requestTransmission(_ id: ObjectIdentifier, grant: NBDTransmissionGrant) -> Bool {
        self.state.withLock { state in
            let granted = state.admission.requestTransmission(id, grant: grant)
            if granted { state.someClientUsedTheExport = true }
            return granted
        }
    }

    private func initialize(_ channel: any Channel) -> EventLoopFuture<Void> {
        let id = ObjectIdentifier(channel)
        let admitted = self.state.withLock { state in !state.stopping && state.connections[id] != nil }
        guard admitted else {
            self.logger.debug("refusing a connection: the server is stopping")
            return channel.close()
        }
        let events = NBDConnectionEvents(requestTransmission: { [self] grant in
            requestTransmission(id, grant: grant)
        })
        var logger = self.logger
        logger[metadataKey: "connection"] = "\(UInt(bitPattern: id.hashValue) % 100_000)"
        let handler = NBDConnectionHandler(
            configuration: configuration,
            tls: self.tls,
            backend: backend,
            executor: threadPool,
            options: self.options,
            events: events,
            logger: logger
        )
        let maximumPayload = Int(self.options.blockSize.maximum)
        let maximumOption = max(0, self.options.maximumOptionLength)
        let tlsMode = configuration.tls
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(
                ByteToMessageHandler(
                    NBDConnectionDecoder(
                        NBDServerDecoder(maximumOptionLength: maximumOption, maximumPayloadLength: maximumPayload),
                        tls: tlsMode
                    )
                )
            )
            try channel.pipeline.syncOperations.addHandler(NBDServerMessageEncoder())
            try channel.pipeline.syncOperations.addHandler(handler)
        }
    }

    private func connectionClosed(_ id: ObjectIdentifier) {
        let (grants, resume, stop) = self.state.withLock { state -> ([NBDTransmissionGrant], Bool, Bool) in
            guard state.connections.removeValue(forKey: id) != nil else { return ([], false, false) }
            let grants = state.admission.remove(id)
            if !grants.isEmpty { state.someClientUsedTheExport = true }
            let resume = !state.listenerAccepting && state.admission.acceptsConnections && !state.stopping
            let stop =
                !self.options.persistent && state.someClientUsedTheExport && state.connections.isEmpty
                && !state.stopping
            return (grants, resume, stop)
        }
        for grant in grants { grant.deliver() }
        if resume { updateListener() }
        if stop {
            self.logger.debug("last client left; stopping (no --persistent)")
            shutdown()
        }
    }
}

/// Tells a connection waiting for a transmission slot that it has one (hops to its event loop).
struct NBDTransmissionGrant: Sendable {
    /// Called once, from any thread.
    let deliver: @Sendable () -> Void
}

/// The first handler of the listener's pipeline: hands every accepted connection to
/// ``NBDServer/admit(_:listener:)`` on the listener's event loop, then passes it on to NIO's accept
/// handler, which sets it up on its own loop.
private final class NBDAdmissionHandler: ChannelInboundHandler {
    typealias InboundIn = any Channel

    private let server: NBDServer

    init(server: NBDServer) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.server.admit(unwrapInboundIn(data), listener: context.channel)
        // Unchanged: NIO's accept handler unwraps its own channel type.
        context.fireChannelRead(data)
    }
}
