import NBD
import NBDServer
import NIOCore
import Testing

/// What a test client learns from the replies to one request.
struct ReplySummary {
    /// Block status extents as (length, status), all chunks in order.
    var extents: [(length: UInt64, flags: UInt64)] = []
    /// The context ids of the status chunks, in order.
    var contexts: [UInt32] = []
    /// READ data, reassembled (holes as zeroes), indexed from the request offset.
    var data: [UInt8] = []
    /// The error of the reply, if any.
    var error: NBDError?
    /// How the reply was framed: "simple", "structured" or "extended" (mixed forms are an issue).
    var forms: Set<String> = []
    /// Whether a chunk with DONE (or a simple reply) ended it.
    var done = false
}

extension ConnectionUnderTest {
    /// Sends one request, runs it, and summarises every message the handler wrote for it (the test sends
    /// one request at a time, so they all answer it). Records an issue for an extended chunk whose offset
    /// is not the request's.
    func roundTrip(_ bytes: ByteBuffer, offset: UInt64, length: Int = 0) throws -> ReplySummary {
        try self.send(bytes)
        self.completeRequests()
        var summary = ReplySummary()
        summary.data = [UInt8](repeating: 0, count: length)
        func absorb(_ chunk: NBDStructuredReplyChunk) {
            if chunk.flags.contains(.done) { summary.done = true }
            switch chunk.content {
            case .blockStatus(let id, let extents):
                summary.contexts.append(id)
                summary.extents += extents.map { (UInt64($0.length), UInt64($0.flags)) }
            case .blockStatusExtended(let id, let extents):
                summary.contexts.append(id)
                summary.extents += extents.map { ($0.length, $0.flags) }
            case .offsetData(let at, let data):
                let start = Int(at - offset)
                summary.data.replaceSubrange(start..<start + data.readableBytes, with: data.readableBytesView)
            case .offsetHole, .none:
                break
            case .error(let error, _), .errorOffset(let error, _, _):
                summary.error = error
            }
        }
        for message in try self.written() {
            switch message {
            case .simpleReply(let reply):
                summary.forms.insert("simple")
                summary.error = reply.error
                summary.done = true
                if let data = reply.data { summary.data = Array(data.readableBytesView) }
            case .structuredReply(let chunk):
                summary.forms.insert("structured")
                absorb(chunk)
            case .extendedReply(let chunk, let requestOffset):
                summary.forms.insert("extended")
                #expect(requestOffset == offset, "an extended reply echoes the request offset")
                absorb(chunk)
            default:
                Issue.record("unexpected message in transmission: \(message)")
            }
        }
        return summary
    }

    /// Negotiates GO after the given options (each must be acknowledged unless listed in `refused`).
    func negotiate(
        options: [ByteBuffer], expectRefused refused: [NBDOption: NBDOptionReplyType] = [:]
    ) throws -> [NBDServerMessage] {
        try self.connect()
        try self.send(Wire.clientFlags)
        var all: [NBDServerMessage] = []
        for option in options {
            try self.send(option)
            all += try self.written()
        }
        for case .optionReply(let reply) in all {
            if case .error(let type, _) = reply.body {
                #expect(refused[reply.option] == type, "\(reply.option) refused with \(type)")
            }
        }
        try self.send(Wire.go())
        let go = try self.written()
        #expect(go.last == .optionReply(NBDOptionReply(option: .go, body: .ack)), "\(go)")
        return all + go
    }
}

/// The transmission flags in a GO answer.
func transmissionFlags(in replies: [NBDServerMessage]) -> NBDTransmissionFlags? {
    for case .optionReply(let reply) in replies {
        if case .information(.export(_, let flags)) = reply.body { return flags }
    }
    return nil
}

/// Extended headers through the connection handler: negotiation in every order, the reply forms, what
/// is refused without dropping the connection, and context filtering.
@Suite struct ExtendedHeaderTests {
    enum Order: String, CaseIterable, Sendable {
        case neither, structuredOnly, extendedOnly, structuredThenExtended, extendedThenStructured, extendedRefused
    }

    @Test(arguments: Order.allCases)
    func negotiationDecidesTheReplyForm(_ order: Order) throws {
        var options = NBDServerOptions()
        options.extendedHeaders = order != .extendedRefused
        let connection = try ConnectionUnderTest(options: options)
        connection.disk.fill(0x5a, at: 4096, count: 512)
        let sr = Wire.option(.structuredReply)
        let eh = Wire.option(.extendedHeaders)
        let sent: [ByteBuffer]
        var refused: [NBDOption: NBDOptionReplyType] = [:]
        switch order {
        case .neither: sent = []
        case .structuredOnly: sent = [sr]
        case .extendedOnly: sent = [eh]
        case .structuredThenExtended: sent = [sr, eh]
        case .extendedThenStructured:
            sent = [eh, sr]
            refused[.structuredReply] = .errorExtendedHeaderRequired
        case .extendedRefused:
            sent = [eh]
            refused[.extendedHeaders] = .errorUnsupported
        }
        let replies = try connection.negotiate(options: sent, expectRefused: refused)
        let acked = replies.compactMap { message -> NBDOption? in
            if case .optionReply(let reply) = message, reply.body == .ack, reply.option != .go { return reply.option }
            return nil
        }
        let extended = [.extendedOnly, .structuredThenExtended, .extendedThenStructured].contains(order)
        #expect(acked.contains(.extendedHeaders) == extended)
        let flags = try #require(transmissionFlags(in: replies))
        #expect(flags.contains(.sendDF) == (order != .neither && order != .extendedRefused))
        #expect(!flags.contains(.blockStatusPayload), "no context was selected")

        let request =
            extended
            ? Wire.extendedRequest(.read, cookie: 7, offset: 4096, length: 512)
            : Wire.request(.read, cookie: 7, offset: 4096, length: 512)
        let read = try connection.roundTrip(request, offset: 4096, length: 512)
        let expectedForm = extended ? "extended" : (order == .structuredOnly ? "structured" : "simple")
        #expect(read.forms == [expectedForm])
        #expect(read.error == nil && read.done)
        #expect(read.data == [UInt8](repeating: 0x5a, count: 512))

        // A command without data: extended headers forbid simple replies, so success is a NONE chunk.
        let flush = extended ? Wire.extendedRequest(.flush, cookie: 8) : Wire.request(.flush, cookie: 8)
        let flushed = try connection.roundTrip(flush, offset: 0)
        #expect(flushed.forms == [extended ? "extended" : "simple"] && flushed.done && flushed.error == nil)
        #expect(connection.channel.isActive)
    }

    @Test func extendedHeadersTwiceOrWithDataAreInvalidAndExportNameAfterThemCloses() throws {
        let connection = try ConnectionUnderTest()
        try connection.connect()
        #expect(try connection.written().count == 1, "the greeting")
        try connection.send(Wire.clientFlags, Wire.option(.extendedHeaders, { $0.writeInteger(UInt32(1)) }))
        #expect(
            try connection.written() == [
                .optionReply(
                    .init(
                        option: .extendedHeaders, body: .error(.errorInvalid, message: "EXTENDED_HEADERS takes no data")
                    ))
            ])
        try connection.send(Wire.option(.extendedHeaders), Wire.option(.extendedHeaders))
        let replies = try connection.written()
        #expect(replies.count == 2)
        #expect(replies.first == .optionReply(.init(option: .extendedHeaders, body: .ack)))
        if case .optionReply(let second)? = replies.last, case .error(let type, _) = second.body {
            #expect(type == .errorInvalid)
        } else {
            Issue.record("expected ERR_INVALID for the second EXTENDED_HEADERS: \(replies)")
        }
        try connection.send(Wire.option(.exportName))
        #expect(try connection.written().isEmpty, "EXPORT_NAME cannot be answered with an error")
        #expect(!connection.channel.isActive, "EXPORT_NAME after extended headers closes the connection")
    }

    @Test func whatIsNotServedGetsAnErrorAndTheConnectionLives() throws {
        let connection = try ConnectionUnderTest()
        connection.disk.fill(0x11, at: 0, count: 4096)
        _ = try connection.negotiate(options: [Wire.option(.extendedHeaders)])
        let maximum = UInt64(NBD.defaultMaximumPayloadLength)

        // READs beyond the maximum payload: EOVERFLOW, the protocol's hint to retry smaller.
        for length: UInt64 in [maximum + 1, 1 << 32, (1 << 32) + 1] {
            let read = try connection.roundTrip(Wire.extendedRequest(.read, cookie: 1, length: length), offset: 0)
            #expect(read.error == .overflow && read.done && read.forms == ["extended"], "READ of \(length)")
        }
        // A WRITE payload beyond it is read off the wire and thrown away, then refused.
        let big = ByteBuffer(repeating: 1, count: Int(maximum) + 512)
        let write = try connection.roundTrip(Wire.extendedRequest(.write, cookie: 2, payload: big), offset: 0)
        #expect(write.error == .invalid && write.done)
        // An extended WRITE without PAYLOAD_LEN (as QEMU 10 sends it) still carries its data.
        var bare = ByteBuffer()
        bare.writeNBDRequestHeader(
            NBDRequestHeader(command: .write, cookie: 3, offset: 8192, length: 512, isExtended: true))
        bare.writeRepeatingByte(0x22, count: 512)
        #expect(try connection.roundTrip(bare, offset: 8192).error == nil)
        #expect(connection.disk.contents(at: 8192, count: 512) == [UInt8](repeating: 0x22, count: 512))
        // A payload on a command that takes none is consumed, then refused.
        let trim = try connection.roundTrip(
            Wire.extendedRequest(.trim, cookie: 4, offset: 0, payload: ByteBuffer(repeating: 9, count: 100)), offset: 0)
        #expect(trim.error == .invalid)
        // Effect lengths past the end of the export, or overflowing 64 bits.
        let past = try connection.roundTrip(
            Wire.extendedRequest(.writeZeroes, cookie: 5, offset: 4096, length: 1 << 40), offset: 4096)
        #expect(past.error == .noSpace)
        let wrap = try connection.roundTrip(
            Wire.extendedRequest(.cache, cookie: 6, offset: 4096, length: .max), offset: 4096)
        #expect(wrap.error == .invalid)

        // Still in sync: the next request is served, and the data is untouched.
        let read = try connection.roundTrip(
            Wire.extendedRequest(.read, cookie: 9, length: 4096), offset: 0, length: 4096)
        #expect(read.error == nil && read.data == [UInt8](repeating: 0x11, count: 4096))
        #expect(connection.channel.isActive)
    }

    @Test func aPayloadOf4GiBOrMoreClosesTheConnection() throws {
        let connection = try ConnectionUnderTest()
        _ = try connection.negotiate(options: [Wire.option(.extendedHeaders)])
        var header = ByteBuffer()
        header.writeNBDRequestHeader(
            NBDRequestHeader(
                command: .write, flags: .payloadLength, cookie: 1, offset: 0, length: 1 << 32, isExtended: true))
        // The decoder's error goes down the pipeline to the handler, which closes.
        try? connection.send(header)
        connection.channel.embeddedEventLoop.run()
        #expect(try connection.written().isEmpty, "nothing is answered")
        #expect(!connection.channel.isActive)
    }

    @Test(arguments: [false, true])
    func aRequestInTheOtherHeaderFormClosesTheConnection(_ extended: Bool) throws {
        let connection = try ConnectionUnderTest()
        _ = try connection.negotiate(options: extended ? [Wire.option(.extendedHeaders)] : [])
        try connection.send(
            extended
                ? Wire.request(.read, cookie: 1, length: 512) : Wire.extendedRequest(.read, cookie: 1, length: 512))
        #expect(try connection.written().isEmpty)
        #expect(!connection.channel.isActive)
    }

    @Test func blockStatusPayloadSelectsContexts() throws {
        var options = NBDServerOptions()
        options.allocationDepth = true
        let connection = try ConnectionUnderTest(options: options)
        connection.disk.fill(0x77, at: 0, count: 65536)
        let replies = try connection.negotiate(options: [
            Wire.option(.extendedHeaders), Wire.setMetaContext(["base:allocation", "qemu:allocation-depth"]),
        ])
        #expect(transmissionFlags(in: replies)?.contains(.blockStatusPayload) == true)

        func status(_ ids: [UInt32], effect: UInt64 = 65536) throws -> ReplySummary {
            var payload = ByteBuffer()
            NBDBlockStatusPayload(effectLength: effect, contextIDs: []).write(to: &payload)
            for id in ids { payload.writeInteger(id) }
            return try connection.roundTrip(Wire.extendedRequest(.blockStatus, cookie: 3, payload: payload), offset: 0)
        }
        let all = try connection.roundTrip(Wire.extendedRequest(.blockStatus, cookie: 2, length: 65536), offset: 0)
        #expect(all.contexts == [0, 1] && all.error == nil)
        let depthOnly = try status([1])
        #expect(depthOnly.contexts == [1] && depthOnly.error == nil && depthOnly.done)
        #expect(depthOnly.extents.map(\.length) == [65536], "the payload's effect length is used")
        let reversed = try status([1, 0])
        #expect(reversed.contexts == [1, 0])
        for bad in [[UInt32](), [0, 0], [7]] {
            #expect(try status(bad).error == .invalid, "ids \(bad)")
        }
        #expect(try status([0], effect: 0).error == .invalid, "effect length 0")
        #expect(connection.channel.isActive)
    }
}
