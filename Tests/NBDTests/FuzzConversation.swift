import NBD
import NIOCore
import TestSupport

/// A well-formed client conversation as bytes: client flags, a few options, `GO` or
/// `EXPORT_NAME`, then transmission requests. The fuzzer mutates these bytes, so parsing goes deep
/// before it meets the damage.
struct FuzzConversation {
    /// The bytes a client would send.
    var bytes = ByteBuffer()
    /// Transmission requests written after the handshake.
    var requests = 0
    /// Whether an unmutated copy must reach transmission (no `ABORT` among the options).
    var entersTransmission = true
    /// Whether the conversation negotiates extended headers (then its requests are 32-byte ones).
    var extended = false

    static let exportSize: UInt64 = 1 << 20
    static let maximumPayload: UInt32 = 64 << 10
    static let configuration = NBDServerConfiguration(
        exports: [
            NBDExport(
                name: "", size: exportSize,
                flags: [
                    .sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .sendDF,
                    .sendCache, .sendFastZero,
                ], offersAllocationDepth: true),
            NBDExport(name: "ro", description: "read-only", size: 4096, flags: .readOnly),
        ],
        tls: .disabled,
        blockSize: NBDBlockSizeConstraints(minimum: 1, preferred: 4096, maximum: maximumPayload)
    )

    init(_ rng: inout SplitMix64) {
        bytes.writeNBDClientFlags(
            Int.random(in: 0..<10, using: &rng) == 0 ? [.fixedNewstyle] : [.fixedNewstyle, .noZeroes])
        let export = Int.random(in: 0..<5, using: &rng) == 0 ? "ro" : ""
        for _ in 0..<Int.random(in: 0...5, using: &rng) {
            switch Int.random(in: 0..<8, using: &rng) {
            case 0: option(.structuredReply)
            case 1: option(.list)
            case 2:
                var data = ByteBuffer()
                NBDExportInfoRequest(exportName: export, requests: [.name, .description, .blockSize]).write(to: &data)
                option(.info, data)
            case 3, 4:
                var data = ByteBuffer()
                let queries = [["base:allocation"], ["qemu:allocation-depth", "base:allocation"], ["base:"], []]
                NBDMetaContextRequest(exportName: export, queries: queries[Int.random(in: 0..<4, using: &rng)])
                    .write(to: &data)
                option(Bool.random(using: &rng) ? .setMetaContext : .listMetaContext, data)
            case 5:
                if Bool.random(using: &rng) {
                    option(.extendedHeaders)
                    extended = true
                } else {
                    option(.startTLS)
                }
            case 6:
                option(NBDOption(rawValue: UInt32.random(in: 11...50, using: &rng)), ByteBuffer(bytes: rng.bytes(6)))
            default:
                if Int.random(in: 0..<10, using: &rng) == 0 {
                    option(.abort)
                    entersTransmission = false
                } else {
                    option(.structuredReply)
                }
            }
        }
        // EXPORT_NAME is not allowed after extended headers.
        if extended || Bool.random(using: &rng) {
            var data = ByteBuffer()
            NBDExportInfoRequest(exportName: export, requests: [.blockSize]).write(to: &data)
            option(.go, data)
        } else {
            option(.exportName, ByteBuffer(string: export))
        }
        let size = export == "ro" ? UInt64(4096) : Self.exportSize
        for _ in 0..<Int.random(in: 0...8, using: &rng) {
            requests += 1
            let length = UInt32.random(in: 0...min(UInt32(size), 8192), using: &rng)
            let offset = UInt64.random(in: 0...(size - UInt64(length)), using: &rng)
            let cookie = rng.next()
            let commands: [NBDCommand] = [.read, .write, .flush, .trim, .writeZeroes, .blockStatus, .cache]
            let command = commands[Int.random(in: 0..<commands.count, using: &rng)]
            var flags: NBDCommandFlags = Int.random(in: 0..<4, using: &rng) == 0 ? .fua : []
            var effect = UInt64(length)
            if extended && command != .read && command != .write && Int.random(in: 0..<4, using: &rng) == 0 {
                effect = UInt64.random(in: 0...(size - offset), using: &rng)  // 64-bit effect lengths
            }
            var payload: NBDRequestPayload =
                command == .write ? .data(ByteBuffer(bytes: rng.bytes(Int(length)))) : .none
            if extended && command == .write && Bool.random(using: &rng) { flags.insert(.payloadLength) }
            if extended && command == .blockStatus && Bool.random(using: &rng) {
                // The context-filtering form: effect length and ids in a payload.
                var filter = ByteBuffer()
                NBDBlockStatusPayload(effectLength: effect, contextIDs: [UInt32.random(in: 0...2, using: &rng)]).write(
                    to: &filter)
                flags.insert(.payloadLength)
                effect = UInt64(filter.readableBytes)
                payload = .data(filter)
            }
            let header = NBDRequestHeader(
                command: command, flags: flags, cookie: cookie, offset: offset, length: effect, isExtended: extended)
            bytes.writeNBDRequest(NBDRequest(header: header, payload: payload))
        }
        if Bool.random(using: &rng) {
            requests += 1
            bytes.writeNBDRequest(
                NBDRequest(
                    header: NBDRequestHeader(
                        command: .disconnect, cookie: 0, offset: 0, length: 0, isExtended: extended)))
        }
    }

    private mutating func option(_ option: NBDOption, _ data: ByteBuffer = ByteBuffer()) {
        bytes.writeNBDOptionRequest(NBDOptionRequest(option: option, data: data))
    }

    /// Damages `buffer` one to four times: flipped bits, odd bytes, 32-bit fields set to edge
    /// values (lengths), inserted, deleted, repeated or cut ranges, stray magics.
    static func mutate(_ buffer: inout ByteBuffer, _ rng: inout SplitMix64) {
        var b = Array(buffer.readableBytesView)
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            guard !b.isEmpty else {
                b = rng.bytes(Int.random(in: 1...32, using: &rng))
                continue
            }
            let at = Int.random(in: 0..<b.count, using: &rng)
            switch Int.random(in: 0..<9, using: &rng) {
            case 0: b[at] ^= 1 << UInt8.random(in: 0..<8, using: &rng)
            case 1: b[at] = [0, 0xff, 0x7f, 0x80, 1][Int.random(in: 0..<5, using: &rng)]
            case 2:
                let edges: [UInt32] = [
                    0, 1, 0xffff_ffff, 0x7fff_ffff, maximumPayload, maximumPayload + 1, 32 << 20, (32 << 20) + 1, 4095,
                ]
                let value = edges[Int.random(in: 0..<edges.count, using: &rng)]
                for i in 0..<4 where at + i < b.count {
                    b[at + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32(i)))
                }
            case 3: b.insert(contentsOf: rng.bytes(Int.random(in: 1...16, using: &rng)), at: at)
            case 4: b.removeSubrange(at..<min(b.count, at + Int.random(in: 1...32, using: &rng)))
            case 5:
                let end = min(b.count, at + Int.random(in: 1...64, using: &rng))
                b.insert(contentsOf: b[at..<end], at: Int.random(in: 0...b.count, using: &rng))
            case 6: b.removeSubrange(at...)
            case 7:
                var magic = ByteBuffer()
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: magic.writeInteger(NBD.optionRequestMagic)
                case 1: magic.writeInteger(NBD.requestMagic)
                default: magic.writeInteger(NBD.extendedRequestMagic)
                }
                b.insert(contentsOf: magic.readableBytesView, at: at)
            default:
                for i in 0..<8 where at + i < b.count { b[at + i] = UInt8.random(in: 0...255, using: &rng) }
            }
        }
        buffer = ByteBuffer(bytes: b)
    }
}

/// A server without I/O: the decoder, the negotiation and the validator, with every reply
/// encoded. What it reached is counted in ``Outcome``.
struct FuzzServer {
    struct Outcome {
        var decodingErrors = 0
        var messages = 0
        var closes = 0
        var transmissions = 0
        var requests = 0
        var accepted = 0
        var rejected = 0
        var replyBytes = 0
    }

    var decoder = NBDServerDecoder(
        startingAt: .clientFlags, maximumOptionLength: 4096,
        maximumPayloadLength: Int(FuzzConversation.maximumPayload))
    var negotiation = NBDNegotiation(configuration: FuzzConversation.configuration)
    var session: NBDSession?
    var done = false
    var outcome = Outcome()

    /// Feeds `input` in random pieces until it is used up or the connection would end.
    mutating func feed(_ input: ByteBuffer, _ rng: inout SplitMix64) {
        send(negotiation.greeting)
        var remaining = input
        var pending = ByteBuffer()
        while remaining.readableBytes > 0 && !done {
            let size =
                Int.random(in: 0..<4, using: &rng) == 0 ? remaining.readableBytes : Int.random(in: 1...64, using: &rng)
            var piece = remaining.readSlice(length: min(size, remaining.readableBytes)) ?? ByteBuffer()
            pending.writeBuffer(&piece)
            do {
                while !done, let message = try decoder.decodeNext(from: &pending) { handle(message, &rng) }
            } catch {
                let typed: NBDDecodingError = error  // typed throws: statically the codec's error
                _ = typed
                outcome.decodingErrors += 1
                done = true
            }
        }
    }

    private mutating func handle(_ message: NBDClientMessage, _ rng: inout SplitMix64) {
        outcome.messages += 1
        guard let session else {
            let step = negotiation.receive(message)
            step.replies.forEach { send($0) }
            switch step.action {
            case .continue: break
            case .startTLS: negotiation.tlsHandshakeCompleted()
            case .close:
                outcome.closes += 1
                done = true
            case .enterTransmission(let entered):
                outcome.transmissions += 1
                self.session = entered
            }
            return
        }
        guard case .request(let request) = message else {
            done = true  // an option after the handshake: the server drops the connection
            return
        }
        outcome.requests += 1
        let header = request.header
        let validator = NBDRequestValidator(session: session)
        guard validator.matchesHeaderStyle(header) else {
            outcome.closes += 1
            done = true  // the other header form: the server drops the connection
            return
        }
        if let (error, _) = validator.rejection(of: request) {
            outcome.rejected += 1
            send(session.errorReply(to: header, error, message: "rejected"))
            return
        }
        outcome.accepted += 1
        switch header.command {
        case .disconnect: done = true
        case .read:
            send(session.readReply(to: header, data: ByteBuffer(repeating: 0, count: Int(header.length))))
        case .blockStatus:
            let length = request.effectLength  // validated: within the export
            let runs = (0..<Int.random(in: 0...5, using: &rng)).map { _ in
                (
                    length: UInt64.random(in: 0...(length + 100), using: &rng),
                    flags: UInt32.random(in: 0...3, using: &rng)
                )
            }
            for (index, context) in session.metaContexts.enumerated() {
                if let chunk = NBDBlockStatus.chunk(
                    cookie: header.cookie, contextID: context.id, runs: runs,
                    requestLength: length,
                    requestOne: header.flags.contains(.requestOne),
                    isFinal: index == session.metaContexts.count - 1,
                    extended: session.extendedHeaders)
                {
                    send(session.message(chunk, answering: header))
                } else {
                    send(session.errorReply(to: header, .invalid))
                }
            }
        default: send(session.successReply(to: header))
        }
    }

    private mutating func send(_ message: NBDServerMessage) {
        var buffer = ByteBuffer()
        outcome.replyBytes += buffer.writeNBDServerMessage(message)
    }
}
