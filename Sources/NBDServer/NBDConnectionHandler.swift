import Logging
import NBD
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// Asks a connection to stop taking requests, finish the ones in flight and close (server shutdown).
struct NBDServerShutdownEvent: Sendable {}

/// What a connection asks of its server.
struct NBDConnectionEvents: Sendable {
    /// The connection finished negotiating and asks for a transmission slot (`-e`). Returns true if it
    /// got one at once; otherwise the grant's `deliver` is called (from any thread) when it does.
    var requestTransmission: @Sendable (NBDTransmissionGrant) -> Bool
}

/// One client connection: drives ``NBD/NBDNegotiation``, then runs transmission requests on the I/O thread
/// pool and writes their replies as they complete (out of order, each reply's messages back to back, so
/// replies never interleave on the wire).
///
/// Pipeline (head to tail): `ByteToMessageHandler(NBDConnectionDecoder)`, `NBDServerMessageEncoder`, this;
/// after `NBD_OPT_STARTTLS`, `NIOSSLServerHandler` in front of them all.
/// All state lives on the channel's event loop; engine calls run on the thread pool (an
/// ``NBDBlockingExecutor``) and hop back with `NIOLoopBound`. Reading from the client pauses while too
/// many requests or payload bytes are in flight (backpressure instead of unbounded queues).
///
/// A connection that has not finished negotiating within the handshake limit is closed. One that
/// finished while every `-e` slot is taken waits, its final negotiation reply held back, until the
/// server grants it a slot (``NBDConnectionEvents/requestTransmission``).
final class NBDConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = NBDClientMessage
    typealias OutboundIn = NBDServerMessage
    typealias OutboundOut = NBDServerMessage

    private enum Phase {
        case negotiating
        /// Negotiation finished; the replies that end it go out once the server grants a slot.
        case awaitingSlot(NBDSession, replies: [NBDServerMessage])
        case transmitting(Transmission)
        case closed
    }

    /// The negotiated state of the connection, shared by reference with every job so a request carries
    /// one pointer instead of a copy of the session (strings, arrays).
    private final class Transmission: Sendable {
        let session: NBDSession
        let validator: NBDRequestValidator

        init(session: NBDSession) {
            self.session = session
            self.validator = NBDRequestValidator(session: session)
        }
    }

    private let backend: NBDDiskBackend
    private let tls: NBDServerTLS?
    private let executor: any NBDBlockingExecutor
    private let events: NBDConnectionEvents
    /// How long negotiation may take; nil for no limit.
    private let handshakeLimit: TimeAmount?
    /// Closes the connection when the handshake limit passes; cancelled when negotiation ends or the
    /// connection closes (so no timer outlives its connection).
    private var handshakeTimer: Scheduled<Void>?
    private let maximumRequestsInFlight: Int
    private let maximumBytesInFlight: Int
    private var logger: Logger

    private var negotiation: NBDNegotiation
    private var phase: Phase = .negotiating
    private var context: ChannelHandlerContext?
    private var requestsInFlight = 0
    private var bytesInFlight = 0
    private var readPending = false
    /// No further requests are executed: the client sent DISC or the server is shutting down.
    private var draining = false
    private var closing = false
    /// Replies were written outside a completion (rejections) and wait for the flush at read-complete.
    private var flushPending = false

    init(
        configuration: NBDServerConfiguration,
        tls: NBDServerTLS?,
        backend: NBDDiskBackend,
        executor: any NBDBlockingExecutor,
        options: NBDServerOptions,
        events: NBDConnectionEvents,
        logger: Logger
    ) {
        precondition((tls == nil) == (configuration.tls == .disabled), "TLS policy without credentials or vice versa")
        negotiation = NBDNegotiation(configuration: configuration)
        self.tls = tls
        self.backend = backend
        self.executor = executor
        self.events = events
        // Whole nanoseconds; anything not positive or too large to represent means no limit.
        let nanoseconds = options.handshakeLimit * 1e9
        handshakeLimit =
            nanoseconds >= 1 && nanoseconds < Double(Int64.max) ? .nanoseconds(Int64(nanoseconds)) : nil
        maximumRequestsInFlight = max(1, options.maximumRequestsInFlight)
        maximumBytesInFlight = max(1, options.maximumBytesInFlight)
        self.logger = logger
    }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelHandshakeTimer()
        self.context = nil
    }

    /// The server speaks first: the greeting goes out as soon as the connection is up (accepted
    /// channels are initialised before they become active, so this is the one place), and the handshake
    /// limit starts counting.
    func channelActive(context: ChannelHandlerContext) {
        greet(context: context)
        startHandshakeTimer(context: context)
        context.fireChannelActive()
    }

    private func greet(context: ChannelHandlerContext) {
        if let peer = context.channel.remoteAddress { self.logger[metadataKey: "peer"] = "\(peer)" }
        self.logger.debug("client connected")
        context.writeAndFlush(wrapOutboundOut(negotiation.greeting), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelHandshakeTimer()
        if case .closed = phase {
        } else {
            phase = .closed
            self.logger.debug("client disconnected", metadata: ["in-flight": "\(requestsInFlight)"])
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NBDDecodingError {
            self.logger.info("closing the connection: malformed input", metadata: ["error": "\(error)"])
        } else if error is NBDDataAfterStartTLSError {
            self.logger.info("closing the connection: data before the TLS handshake", metadata: ["error": "\(error)"])
        } else if case .uncleanShutdown? = error as? NIOSSLError {
            // Common and harmless: qemu and others close the socket after DISC without a TLS close_notify.
            self.logger.debug("client closed the TLS connection without close_notify")
        } else if error is NIOSSLError || error is BoringSSLError {
            self.logger.info("closing the connection: TLS failed", metadata: ["error": "\(error)"])
        } else {
            self.logger.debug("closing the connection", metadata: ["error": "\(error)"])
        }
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(_)? = event as? TLSUserEvent {
            tlsHandshakeCompleted(context: context)
            return
        }
        guard event is NBDServerShutdownEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch phase {
        case .negotiating, .awaitingSlot:
            context.close(promise: nil)
        case .transmitting:
            beginDraining(context: context)
        case .closed:
            break
        }
    }

    // MARK: - Handshake limit

    /// Whether the handshake limit is still counting (for tests).
    var handshakeTimerPending: Bool { handshakeTimer != nil }

    private func startHandshakeTimer(context: ChannelHandlerContext) {
        guard let limit = handshakeLimit, handshakeTimer == nil, case .negotiating = phase else {
            return
        }
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limit) {
            self.handshakeTimer = nil
            self.handshakeLimitReached(context: context)
        }
    }

    private func cancelHandshakeTimer() {
        handshakeTimer?.cancel()
        handshakeTimer = nil
    }

    private func handshakeLimitReached(context: ChannelHandlerContext) {
        guard case .negotiating = phase, !closing else { return }
        let seconds = Double(handshakeLimit?.nanoseconds ?? 0) / 1e9
        self.logger.info(
            "closing the connection: negotiation not finished within the handshake limit",
            metadata: ["limit": "\(seconds) s"]
        )
        closing = true
        context.close(promise: nil)
    }

    // MARK: - Backpressure

    func read(context: ChannelHandlerContext) {
        if mustPauseReading {
            readPending = true
        } else {
            context.read()
        }
    }

    /// Reading pauses while draining, while too many requests or WRITE bytes are on the pool, and
    /// while the socket's send buffer is over its high water mark (a client that pipelines READs
    /// without reading the replies must not make them pile up in memory, above all the ones the
    /// event loop answers at once from the cache).
    private var mustPauseReading: Bool {
        if case .awaitingSlot = phase { return true }
        return draining || requestsInFlight >= maximumRequestsInFlight
            || bytesInFlight >= maximumBytesInFlight
            || self.context?.channel.isWritable == false
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeReadingIfPossible(context: context)
        context.fireChannelWritabilityChanged()
    }

    private func resumeReadingIfPossible(context: ChannelHandlerContext) {
        if readPending && !mustPauseReading {
            readPending = false
            context.read()
        }
    }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let message = unwrapInboundIn(data)
        switch phase {
        case .negotiating:
            negotiate(message, context: context)
        case .transmitting(let transmission):
            guard case .request(let request) = message else {
                self.logger.info("closing the connection: option request during transmission")
                context.close(promise: nil)
                return
            }
            handle(request, transmission: transmission, context: context)
        case .awaitingSlot:
            // The client must read the reply that ends negotiation before it sends anything else.
            self.logger.info("closing the connection: input before the end of negotiation was answered")
            context.close(promise: nil)
        case .closed:
            break
        }
    }

    private func negotiate(_ message: NBDClientMessage, context: ChannelHandlerContext) {
        let step = negotiation.receive(message)
        if case .enterTransmission(let session) = step.action {
            negotiationFinished(session, replies: step.replies, context: context)
            return
        }
        for reply in step.replies {
            context.write(wrapOutboundOut(reply), promise: nil)
        }
        switch step.action {
        case .continue:
            context.flush()
        case .startTLS:
            startTLS(context: context)
        case .close(let reason):
            self.logger.debug("negotiation ended", metadata: ["reason": "\(reason)"])
            closeGracefully(context: context)
        case .enterTransmission:
            break  // handled above
        }
    }

    /// The client finished negotiating: the handshake limit stops, and the replies that end negotiation
    /// go out once the server grants a transmission slot, now or when another client leaves.
    private func negotiationFinished(
        _ session: NBDSession,
        replies: [NBDServerMessage],
        context: ChannelHandlerContext
    ) {
        cancelHandshakeTimer()
        phase = .awaitingSlot(session, replies: replies)
        let loop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        let grant = NBDTransmissionGrant(deliver: {
            loop.execute { bound.value.slotGranted() }
        })
        if self.events.requestTransmission(grant) {
            slotGranted()
        } else {
            self.logger.debug("negotiation finished; waiting for a client slot (-e)")
        }
    }

    /// Sends the held replies and enters transmission (on the event loop).
    private func slotGranted() {
        guard case .awaitingSlot(let session, let replies) = phase, let context = self.context,
            !closing
        else { return }
        for reply in replies {
            context.write(wrapOutboundOut(reply), promise: nil)
        }
        context.flush()
        self.logger.debug(
            "transmission started",
            metadata: [
                "export": "\(session.export.name)",
                "structured-replies": "\(session.structuredReplies)",
                "extended-headers": "\(session.extendedHeaders)",
                "contexts": "\(session.metaContexts.map(\.name))",
                "flags": "0x\(String(session.transmissionFlags.rawValue, radix: 16))",
            ]
        )
        phase = .transmitting(Transmission(session: session))
        resumeReadingIfPossible(context: context)
    }

    /// The ACK to `STARTTLS` is written: put TLS in front of the pipeline. The ACK has already passed that
    /// point, so it goes out in clear text; everything read or written from now on goes through TLS.
    /// Bytes the decoder had buffered behind the `STARTTLS` would bypass TLS; ``NBDConnectionDecoder``
    /// refuses those, so its buffer is empty here.
    private func startTLS(context: ChannelHandlerContext) {
        context.flush()
        guard let tls = self.tls else {
            // Unreachable: without credentials the policy is `.disabled` and STARTTLS gets ERR_POLICY.
            self.logger.error("STARTTLS accepted without TLS credentials; closing")
            closeGracefully(context: context)
            return
        }
        do {
            try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context), position: .first)
            self.logger.debug("STARTTLS: TLS handshake started")
        } catch {
            self.logger.error("cannot start TLS; closing", metadata: ["error": "\(error)"])
            closeGracefully(context: context)
        }
    }

    private func tlsHandshakeCompleted(context: ChannelHandlerContext) {
        guard case .negotiating = phase else { return }
        negotiation.tlsHandshakeCompleted()
        self.logger.debug("TLS handshake completed")
    }

    private func handle(_ request: NBDRequest, transmission: Transmission, context: ChannelHandlerContext) {
        let header = request.header
        let session = transmission.session
        if header.command == .disconnect {
            self.logger.debug("client sent DISC")
            beginDraining(context: context)
            return
        }
        guard transmission.validator.matchesHeaderStyle(header) else {
            // The two sides disagree on framing; nothing after this can be parsed reliably.
            self.logger.info(
                "closing the connection: request header form does not match the negotiation",
                metadata: [
                    "extended-request": "\(header.isExtended)", "extended-negotiated": "\(session.extendedHeaders)",
                ]
            )
            closing = true
            context.close(promise: nil)
            return
        }
        if header.command == .blockStatus {
            // One line per BLOCK_STATUS with -v: how tests count a client's round trips.
            self.logger.debug(
                "BLOCK_STATUS request",
                metadata: ["offset": "\(header.offset)", "length": "\(request.effectLength)"]
            )
        }
        if draining {
            send(.one(session.errorReply(to: header, .shutdown, message: "the server is shutting down")))
            flushPending = true
            return
        }
        if let (error, rule) = transmission.validator.rejection(of: request) {
            let message = Self.rejectionMessage(header, rule, transmission.validator)
            self.logger.debug("request rejected", metadata: ["error": "\(error)", "reason": "\(message)"])
            send(.one(session.errorReply(to: header, error, message: message)))
            flushPending = true
            return
        }
        // Small reads of cached data are answered here, without the round trip through the thread
        // pool (a futex wake, a context switch and an event-loop wake-up, which cost more than a
        // cached 4 KiB read): see docs/performance.md.
        if header.command == .read, let reply = self.backend.readIfCached(header, session: session) {
            send(reply)
            flushPending = true
            return
        }
        let cost: Int
        if case .data(let payload) = request.payload { cost = payload.readableBytes } else { cost = 0 }
        requestsInFlight += 1
        bytesInFlight += cost
        let job = Job(request: request, transmission: transmission, cost: cost)
        if Self.runsAlone(header) {
            submit([job], context: context)
        } else {
            batch.append(job)
            if batch.count >= Self.maximumBatchLength { dispatchBatch(context: context) }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        dispatchBatch(context: context)
        if flushPending {
            flushPending = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    // MARK: - Execution

    /// One accepted request waiting for, or running on, the thread pool.
    private struct Job: Sendable {
        var request: NBDRequest
        var transmission: Transmission
        /// WRITE payload bytes held (for backpressure).
        var cost: Int
    }

    /// Small requests decoded from one socket read, run together (see ``dispatchBatch(context:)``).
    private var batch: [Job] = []

    /// Requests at most this long (bytes) may share a thread pool task with others.
    static let batchableLength: UInt64 = 64 * 1024
    /// A batch is dispatched when it reaches this many requests, even in the middle of a read.
    static let maximumBatchLength = 64
    /// A batch is split into thread pool tasks of at most this many requests.
    static let requestsPerTask = 16

    /// Requests that get a thread pool task of their own: FLUSH (slow, and must not delay reads queued
    /// behind it in a task), anything forcing a flush, and anything large.
    private static func runsAlone(_ header: NBDRequestHeader) -> Bool {
        switch header.command {
        case .read, .write, .cache, .blockStatus:
            return header.flags.contains(.fua) || header.length > Self.batchableLength
        default:
            return true
        }
    }

    /// Hands the batched small requests to the thread pool as tasks of up to ``requestsPerTask`` requests
    /// that run back to back and return all their replies in one hop to the event loop.
    ///
    /// For cached 4 KiB requests a thread handoff (futex wake, context switch, eventfd wake back) costs
    /// several times the I/O itself: measured on 2 cores with fio (4 KiB random reads, iodepth 16, two
    /// connections), one task per request gave ~50k IOPS, one task per socket read ~70–90k. Requests of
    /// different reads and connections still run in parallel on the pool.
    private func dispatchBatch(context: ChannelHandlerContext) {
        guard !batch.isEmpty else { return }
        let jobs = batch
        batch.removeAll(keepingCapacity: true)
        let tasks = (jobs.count + Self.requestsPerTask - 1) / Self.requestsPerTask
        let perTask = (jobs.count + tasks - 1) / tasks
        var start = 0
        while start < jobs.count {
            let end = min(start + perTask, jobs.count)
            submit(Array(jobs[start..<end]), context: context)
            start = end
        }
    }

    /// Runs `jobs` in order on one thread pool thread and completes them together on the event loop.
    private func submit(_ jobs: [Job], context: ChannelHandlerContext) {
        let backend = self.backend
        let eventLoop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        self.executor.execute { cancelled in
            var replies: [NBDReply] = []
            replies.reserveCapacity(jobs.count)
            var cost = 0
            for job in jobs {
                cost += job.cost
                if cancelled {
                    let header = job.request.header
                    let session = job.transmission.session
                    replies.append(
                        .one(session.errorReply(to: header, .shutdown, message: "the server is shutting down")))
                } else {
                    replies.append(backend.execute(job.request, session: job.transmission.session))
                }
            }
            let done = replies
            let held = cost
            eventLoop.execute {
                bound.value.complete(done, cost: held)
            }
        }
    }

    /// Runs on the event loop when a task finished on the thread pool.
    private func complete(_ replies: [NBDReply], cost: Int) {
        requestsInFlight -= replies.count
        bytesInFlight -= cost
        guard let context = self.context else { return }
        for reply in replies { send(reply) }
        // One flush per completed task: a task already holds every reply of a socket read's batch.
        context.flush()
        resumeReadingIfPossible(context: context)
        closeIfDrained(context: context)
    }

    // MARK: - Outbound

    /// Writes one complete reply (its messages back to back, so replies never interleave); the caller
    /// flushes.
    private func send(_ reply: NBDReply) {
        guard let context = self.context, !closing else { return }
        switch reply {
        case .none:
            return
        case .one(let message):
            context.write(wrapOutboundOut(message), promise: nil)
        case .many(let messages):
            for message in messages { context.write(wrapOutboundOut(message), promise: nil) }
        }
    }

    /// Stops taking requests (DISC or server shutdown): what is batched still runs, and the
    /// connection closes once every reply is out.
    private func beginDraining(context: ChannelHandlerContext) {
        dispatchBatch(context: context)
        draining = true
        closeIfDrained(context: context)
    }

    private func closeIfDrained(context: ChannelHandlerContext) {
        guard draining, requestsInFlight == 0, !closing else { return }
        closeGracefully(context: context)
    }

    /// Sends what is pending, then closes: the output side first (after every pending write went out),
    /// then the whole channel.
    private func closeGracefully(context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        context.flush()
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.close(mode: .output, promise: promise)
        promise.futureResult.assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    /// A human-readable reason for a validator rejection, sent in the structured error chunk.
    static func rejectionMessage(
        _ header: NBDRequestHeader, _ rule: NBDRequestRule, _ validator: NBDRequestValidator
    ) -> String {
        let what = "\(header.command) of \(header.length) bytes at offset \(header.offset)"
        switch rule {
        case .unknownCommand: return "unknown command \(header.command)"
        case .inapplicableFlag: return "\(what): flags 0x\(String(header.flags.rawValue, radix: 16)) do not apply to it"
        case .invalidBlockStatusPayload:
            return "BLOCK_STATUS payload must be an effect length and distinct ids of selected contexts"
        case .readOnly: return "\(what): the export is read-only"
        case .notAdvertised:
            return "\(what) with flags 0x\(String(header.flags.rawValue, radix: 16)) uses a feature not negotiated"
        case .flushRange: return "FLUSH must have offset and length 0"
        case .payloadDiscarded, .tooLong:
            return "\(what) is longer than the maximum \(validator.maximumPayloadLength) bytes"
        case .emptyBlockStatus: return "BLOCK_STATUS of length 0"
        case .overflow, .pastEnd: return "\(what) ends past the end of the export (\(validator.exportSize) bytes)"
        case .misaligned: return "\(what) is not aligned to \(validator.minimumBlockSize) bytes"
        }
    }
}
