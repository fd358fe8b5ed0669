import Logging
import NBD
import NIOCore
import NIOEmbedded
import QED
import Synchronization
import Testing

@testable import NBDServer

/// An executor that holds work until the test runs it, on the test's own thread (so the handler's
/// hop back to its `EmbeddedEventLoop` happens on the thread that owns the loop).
final class ManualExecutor: NBDBlockingExecutor {
    /// Work not run yet, in submission order; guarded by its lock.
    private let pending = Mutex<[@Sendable (Bool) -> Void]>([])

    func execute(_ work: @escaping @Sendable (_ cancelled: Bool) -> Void) {
        self.pending.withLock { $0.append(work) }
    }

    /// Tasks submitted and not run yet.
    var count: Int { self.pending.withLock { $0.count } }

    /// Runs every pending task (not those they submit), returning how many ran.
    @discardableResult
    func runAll(cancelled: Bool = false) -> Int {
        let work = self.pending.withLock { pending in
            defer { pending.removeAll() }
            return pending
        }
        for item in work { item(cancelled) }
        return work.count
    }
}

/// Counts the `read` calls that get past the connection handler, i.e. the reads the socket would do.
final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    private(set) var reads = 0

    func read(context: ChannelHandlerContext) {
        self.reads += 1
        context.read()
    }
}

/// The server side of `-e`: grants transmission slots at once, or holds the grants for the test.
final class SlotOffice: Sendable {
    /// Whether requests are granted at once, and the grants held back; guarded by the lock.
    private let state: Mutex<(immediate: Bool, held: [NBDTransmissionGrant], requests: Int)>

    init(grantsImmediately: Bool) {
        self.state = Mutex((grantsImmediately, [], 0))
    }

    var events: NBDConnectionEvents {
        NBDConnectionEvents(requestTransmission: { grant in
            self.state.withLock { state in
                state.requests += 1
                if state.immediate { return true }
                state.held.append(grant)
                return false
            }
        })
    }

    /// How many times a slot was asked for.
    var requests: Int { self.state.withLock { $0.requests } }

    /// Delivers the held grants.
    func grantHeld() {
        let held = self.state.withLock { state in
            defer { state.held.removeAll() }
            return state.held
        }
        for grant in held { grant.deliver() }
    }
}

/// One `NBDConnectionHandler` on an `EmbeddedChannel`, with the server's decoder in front of it (no
/// encoder: the test reads the `NBDServerMessage`s the handler writes). Create it, then ``connect()``.
struct ConnectionUnderTest {
    let channel: EmbeddedChannel
    let handler: NBDConnectionHandler
    let executor = ManualExecutor()
    let reads = ReadCounter()
    let slots: SlotOffice
    let disk: MemoryDisk

    /// - Parameters:
    ///   - options: Server options (limits, handshake limit).
    ///   - disk: The disk served; 1 MiB of zeroes by default.
    ///   - tls: TLS credentials (then TLS is required).
    ///   - grantsSlots: Whether transmission slots are granted at once.
    init(
        options: NBDServerOptions = NBDServerOptions(),
        disk: MemoryDisk = MemoryDisk(size: 1 << 20),
        tls: NBDServerTLS? = nil,
        grantsSlots: Bool = true
    ) throws {
        try self.init(options: options, serving: disk, tls: tls, grantsSlots: grantsSlots)
    }

    /// Serves any disk; ``disk`` is then the disk if it is a `MemoryDisk`, else an empty one.
    init(
        options: NBDServerOptions = NBDServerOptions(),
        serving served: any Disk,
        tls: NBDServerTLS? = nil,
        grantsSlots: Bool = true
    ) throws {
        self.disk = served as? MemoryDisk ?? MemoryDisk(size: 0)
        self.slots = SlotOffice(grantsImmediately: grantsSlots)
        let backend = NBDDiskBackend(disk: served, options: options)
        let mode: NBDTLSMode = tls == nil ? .disabled : .required
        let configuration = NBDServerConfiguration(
            exports: [backend.export], tls: mode, blockSize: options.blockSize,
            offersExtendedHeaders: options.extendedHeaders)
        self.handler = NBDConnectionHandler(
            configuration: configuration,
            tls: tls,
            backend: backend,
            executor: self.executor,
            options: options,
            events: self.slots.events,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        self.channel = EmbeddedChannel()
        let decoder = NBDConnectionDecoder(
            NBDServerDecoder(maximumPayloadLength: Int(options.blockSize.maximum)),
            tls: mode
        )
        try self.channel.pipeline.syncOperations.addHandlers([
            self.reads, ByteToMessageHandler(decoder), self.handler,
        ])
    }

    /// Makes the channel active: the handler greets and starts the handshake limit.
    func connect() throws {
        _ = self.channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 10809))
        #expect(self.channel.isActive)
    }

    /// Sends bytes from the client.
    func send(_ buffers: ByteBuffer...) throws {
        var bytes = ByteBuffer()
        for var buffer in buffers { bytes.writeBuffer(&buffer) }
        try self.channel.writeInbound(bytes)
    }

    /// Everything the handler wrote since the last call.
    func written() throws -> [NBDServerMessage] {
        var messages: [NBDServerMessage] = []
        while let message = try self.channel.readOutbound(as: NBDServerMessage.self) { messages.append(message) }
        return messages
    }

    /// Runs the executor's pending work and the loop tasks it queued (the hops back to the handler).
    func completeRequests() {
        self.executor.runAll()
        self.channel.embeddedEventLoop.run()
    }

    /// Asks for a read, as the channel would after a read completed.
    func askToRead() { self.channel.read() }

    /// Greets, negotiates `NBD_OPT_GO` for the default export and consumes the replies.
    func negotiate() throws {
        try self.connect()
        try self.send(Wire.clientFlags, Wire.go())
        let replies = try self.written()
        #expect(replies.last == .optionReply(NBDOptionReply(option: .go, body: .ack)), "\(replies)")
    }
}

/// Client bytes.
enum Wire {
    /// `FIXED_NEWSTYLE | NO_ZEROES`.
    static var clientFlags: ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(3))
        return buffer
    }

    /// `NBD_OPT_GO` for `name` with no information requests.
    static func go(_ name: String = "") -> ByteBuffer {
        option(.go, { _ = NBDExportInfoRequest(exportName: name).write(to: &$0) })
    }

    /// An option request with the data `fill` writes.
    static func option(_ option: NBDOption, _ fill: (inout ByteBuffer) -> Void = { _ in }) -> ByteBuffer {
        var data = ByteBuffer()
        fill(&data)
        var buffer = ByteBuffer()
        buffer.writeNBDOptionRequest(NBDOptionRequest(option: option, data: data))
        return buffer
    }

    /// An extended (32-byte) transmission request; `PAYLOAD_LEN` is set when there is a payload.
    static func extendedRequest(
        _ command: NBDCommand,
        flags: NBDCommandFlags = [],
        cookie: UInt64,
        offset: UInt64 = 0,
        length: UInt64 = 0,
        payload: ByteBuffer? = nil
    ) -> ByteBuffer {
        let header = NBDRequestHeader(
            command: command, flags: payload == nil ? flags : flags.union(.payloadLength), cookie: cookie,
            offset: offset, length: payload.map { UInt64($0.readableBytes) } ?? length, isExtended: true)
        var buffer = ByteBuffer()
        buffer.writeNBDRequest(NBDRequest(header: header, payload: payload.map { .data($0) } ?? .none))
        return buffer
    }

    /// `NBD_OPT_SET_META_CONTEXT` for `queries` on `name`.
    static func setMetaContext(_ queries: [String], export name: String = "") -> ByteBuffer {
        option(.setMetaContext, { _ = NBDMetaContextRequest(exportName: name, queries: queries).write(to: &$0) })
    }

    /// A transmission request.
    static func request(
        _ command: NBDCommand,
        cookie: UInt64,
        offset: UInt64 = 0,
        length: UInt64 = 0,
        payload: [UInt8]? = nil
    ) -> ByteBuffer {
        let header = NBDRequestHeader(command: command, cookie: cookie, offset: offset, length: length)
        var buffer = ByteBuffer()
        buffer.writeNBDRequest(
            NBDRequest(header: header, payload: payload.map { .data(ByteBuffer(bytes: $0)) } ?? .none))
        return buffer
    }
}
