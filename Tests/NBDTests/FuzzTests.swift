import NBD
import NIOCore
import NIOEmbedded
import TestSupport
import Testing

/// Random and mutated input must never trap or hang; decoders may only fail with
/// ``NBDDecodingError``, the negotiation always answers, and every reply encodes.
///
/// `QED_FUZZ_ITERATIONS` sets the iterations of each target (default 10,000, as CI runs them),
/// `QED_TEST_SEED` the seed; `QED_FUZZ_FIRST=n QED_FUZZ_ITERATIONS=1` replays iteration n.
@Suite("Fuzz: random and mutated bytes never trap")
struct FuzzTests {
    static let ciIterations = 10_000

    /// Validators for decoded requests: compact, and extended with context filtering advertised.
    static let validators = [
        NBDRequestValidator(
            exportSize: 1 << 40, transmissionFlags: [.hasFlags, .sendTrim, .sendWriteZeroes],
            structuredReplies: true, hasMetaContexts: true),
        NBDRequestValidator(
            exportSize: 1 << 40,
            transmissionFlags: [.hasFlags, .sendTrim, .sendWriteZeroes, .sendDF, .blockStatusPayload],
            structuredReplies: true, extendedHeaders: true, hasMetaContexts: true, metaContextIDs: [0, 1]),
    ]

    /// Random bytes, often starting with a valid magic and small lengths so parsing goes deep.
    private func randomInput(_ rng: inout SplitMix64) -> ByteBuffer {
        var buffer = ByteBuffer()
        let pieces = Int.random(in: 0...6, using: &rng)
        for _ in 0..<pieces {
            switch Int.random(in: 0..<6, using: &rng) {
            case 0:
                buffer.writeInteger(NBD.optionRequestMagic)
                buffer.writeInteger(UInt32.random(in: 0...12, using: &rng))
                buffer.writeInteger(UInt32.random(in: 0...40, using: &rng))
            case 1:
                buffer.writeInteger(NBD.requestMagic)
                buffer.writeInteger(UInt16.random(in: 0...0x3f, using: &rng))
                buffer.writeInteger(UInt16.random(in: 0...9, using: &rng))
                buffer.writeInteger(UInt64.random(in: 0...UInt64.max, using: &rng))
                buffer.writeInteger(
                    [0, UInt64.max, UInt64.max - 1, UInt64.random(in: 0...UInt64.max, using: &rng)][
                        Int.random(in: 0..<4, using: &rng)
                    ]
                )
                buffer.writeInteger(
                    [0, 1, 64, UInt32.max, UInt32.random(in: 0...200, using: &rng)][Int.random(in: 0..<5, using: &rng)]
                )
            case 2:
                buffer.writeInteger(UInt32.random(in: 0...3, using: &rng))
            case 3:
                // An extended request: PAYLOAD_LEN (bit 5) often set, 64-bit lengths at the edges.
                buffer.writeInteger(NBD.extendedRequestMagic)
                buffer.writeInteger(UInt16.random(in: 0...0x3f, using: &rng))
                buffer.writeInteger(UInt16.random(in: 0...9, using: &rng))
                buffer.writeInteger(UInt64.random(in: 0...UInt64.max, using: &rng))
                buffer.writeInteger(
                    [0, UInt64.max, UInt64.random(in: 0...UInt64.max, using: &rng)][Int.random(in: 0..<3, using: &rng)])
                buffer.writeInteger(
                    [0, 1, 12, 64, UInt64(UInt32.max), 1 << 32, UInt64.max, UInt64.random(in: 0...200, using: &rng)][
                        Int.random(in: 0..<8, using: &rng)
                    ]
                )
            default:
                let count = Int.random(in: 0...48, using: &rng)
                buffer.writeBytes((0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) })
            }
        }
        return buffer
    }

    @Test func decodersNeverTrapAndOnlyThrowTypedErrors() {
        let base = SplitMix64.seed(0x4E42_4421, salt: 2)
        let iterations = FuzzSettings.iterations(default: Self.ciIterations)
        let watchdog = StallWatchdog(label: "NBD decoder fuzz, base seed \(base)")
        defer { watchdog.stop() }
        let start = ContinuousClock.now
        var messages = 0
        var errors = 0
        for iteration in iterations {
            watchdog.tick(iteration)
            var rng = FuzzSettings.generator(base: base, iteration: iteration)
            let input = self.randomInput(&rng)
            for phase in [NBDServerDecoder.Phase.clientFlags, .options, .transmission] {
                var decoder = NBDServerDecoder(startingAt: phase, maximumOptionLength: 64, maximumPayloadLength: 32)
                var remaining = input
                // Feed in random-sized pieces to exercise partial states.
                var pending = ByteBuffer()
                do {
                    while remaining.readableBytes > 0 {
                        var piece =
                            remaining.readSlice(
                                length: min(remaining.readableBytes, Int.random(in: 1...17, using: &rng))
                            ) ?? ByteBuffer()
                        pending.writeBuffer(&piece)
                        while let message = try decoder.decodeNext(from: &pending) {
                            messages += 1
                            // Whatever decodes must also validate without trapping, in either header mode.
                            if case .request(let request) = message {
                                _ = Self.validators[request.header.isExtended ? 1 : 0].rejection(of: request)
                            }
                        }
                    }
                } catch {
                    // `decodeNext` uses typed throws: `error` is statically an NBDDecodingError.
                    let typed: NBDDecodingError = error
                    errors += 1
                    _ = typed
                }
            }
        }
        print(
            "NBD decoder fuzz (random bytes): \(iterations.count) iterations (base seed \(base)) in \(ContinuousClock.now - start): \(messages) messages, \(errors) errors"
        )
        #expect(
            iterations.count < 1000 || (messages > iterations.count / 3 && errors > iterations.count / 3),
            "the fuzzer reached both outcomes (\(messages) messages, \(errors) errors)"
        )
    }

    @Test func negotiationNeverTrapsAndEveryReplyEncodes() {
        let base = SplitMix64.seed(0x5EED, salt: 3)
        let iterations = FuzzSettings.iterations(default: Self.ciIterations)
        let watchdog = StallWatchdog(label: "NBD negotiation fuzz, base seed \(base)")
        defer { watchdog.stop() }
        let start = ContinuousClock.now
        let exports = [
            NBDExport(name: "", size: 1 << 20, flags: [.sendFlush, .sendDF], offersAllocationDepth: true),
            NBDExport(name: "a", description: "é", size: .max, flags: .readOnly),
        ]
        var outcomes: Set<String> = []
        for iteration in iterations {
            watchdog.tick(iteration)
            var rng = FuzzSettings.generator(base: base, iteration: iteration)
            let tls: NBDTLSMode = [.disabled, .optional, .required][iteration % 3]
            var negotiation = NBDNegotiation(configuration: NBDServerConfiguration(exports: exports, tls: tls))
            _ = encoded(negotiation.greeting)
            let flags = NBDClientFlags(
                rawValue: Int.random(in: 0..<8, using: &rng) == 0 ? UInt32.random(in: 0...7, using: &rng) : 3
            )
            var step = negotiation.receive(.clientFlags(flags))
            for _ in 0..<Int.random(in: 0...12, using: &rng) {
                guard step.action == .continue else { break }
                let option = NBDOption(rawValue: UInt32.random(in: 0...12, using: &rng))
                var data = ByteBuffer()
                switch Int.random(in: 0..<4, using: &rng) {
                case 0:
                    NBDExportInfoRequest(
                        exportName: ["", "a", "zz"][Int.random(in: 0..<3, using: &rng)],
                        requests: (0..<Int.random(in: 0...4, using: &rng)).map { _ in
                            NBDInfoType(rawValue: UInt16.random(in: 0...5, using: &rng))
                        }
                    ).write(to: &data)
                case 1:
                    NBDMetaContextRequest(
                        exportName: ["", "a"][Int.random(in: 0..<2, using: &rng)],
                        queries: (0..<Int.random(in: 0...3, using: &rng)).map { _ in
                            ["base:", "qemu:", "base:allocation", "qemu:allocation-depth", "x:y", ""][
                                Int.random(in: 0..<6, using: &rng)
                            ]
                        }
                    ).write(to: &data)
                default:
                    data.writeBytes(
                        (0..<Int.random(in: 0...24, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                    )
                }
                if Int.random(in: 0..<5, using: &rng) == 0, data.readableBytes > 0 {
                    // Corrupt one byte of otherwise well-formed data.
                    let index = data.readerIndex + Int.random(in: 0..<data.readableBytes, using: &rng)
                    data.setInteger(UInt8.random(in: 0...255, using: &rng), at: index)
                }
                step = negotiation.receive(.option(NBDOptionRequest(option: option, data: data)))
                for reply in step.replies { _ = encoded(reply) }
                if step.action == .startTLS {
                    negotiation.tlsHandshakeCompleted()
                    step.action = .continue
                }
                if case .enterTransmission(let session) = step.action {
                    let validator = NBDRequestValidator(session: session)
                    for _ in 0..<20 {
                        let header = NBDRequestHeader(
                            command: NBDCommand(rawValue: UInt16.random(in: 0...9, using: &rng)),
                            flags: NBDCommandFlags(rawValue: UInt16.random(in: 0...0x3f, using: &rng)),
                            cookie: 0,
                            offset: [0, .max, UInt64.random(in: 0...UInt64.max, using: &rng)][
                                Int.random(in: 0..<3, using: &rng)
                            ],
                            length: UInt64(UInt32.random(in: 0...UInt32.max, using: &rng))
                        )
                        _ = validator.validate(header, payloadDiscarded: Bool.random(using: &rng))
                    }
                }
            }
            outcomes.insert("\(step.action)".prefix(12).description)
        }
        print(
            "NBD negotiation fuzz: \(iterations.count) iterations (base seed \(base)) in \(ContinuousClock.now - start): outcomes \(outcomes.sorted())"
        )
        #expect(iterations.count < 100 || outcomes.count >= 3, "several kinds of outcome were reached: \(outcomes)")
    }

    /// Feeds `input` through a `ByteToMessageHandler` on an `EmbeddedChannel` in random pieces,
    /// then ends the stream (so `decodeLast` runs too); returns 1 if it failed. Failures must be
    /// ``NBDDecodingError``s.
    private static func throughChannel(_ input: ByteBuffer, _ rng: inout SplitMix64) -> Int {
        let channel = EmbeddedChannel(
            handler: ByteToMessageHandler(
                NBDServerDecoder(maximumOptionLength: 4096, maximumPayloadLength: Int(FuzzConversation.maximumPayload)))
        )
        var remaining = input
        do {
            while remaining.readableBytes > 0 {
                let size = min(remaining.readableBytes, Int.random(in: 1...200, using: &rng))
                try channel.writeInbound(remaining.readSlice(length: size) ?? ByteBuffer())
                while (try channel.readInbound(as: NBDClientMessage.self)) != nil {}
            }
            _ = try channel.finish()
            return 0
        } catch {
            #expect(error is NBDDecodingError, "the pipeline failed with \(type(of: error)): \(error)")
            _ = try? channel.finish()
            return 1
        }
    }

    /// Well-formed client conversations (``FuzzConversation``), mutated, through the decoder, the
    /// negotiation, the request validator and the reply encoders, as a server would run them; and
    /// the same bytes through a decoder starting at each phase. Every tenth conversation goes
    /// through unmutated and must then decode completely and reach transmission.
    @Test func mutatedConversationsNeverTrap() {
        let base = SplitMix64.seed(0xC0_4E42, salt: 4)
        let iterations = FuzzSettings.iterations(default: Self.ciIterations)
        let watchdog = StallWatchdog(label: "NBD conversation fuzz, base seed \(base)")
        defer { watchdog.stop() }
        let start = ContinuousClock.now
        var total = FuzzServer.Outcome()
        var phaseErrors = 0
        var channelErrors = 0
        for iteration in iterations {
            watchdog.tick(iteration)
            var rng = FuzzSettings.generator(base: base, iteration: iteration)
            let conversation = FuzzConversation(&rng)
            var input = conversation.bytes
            let pristine = iteration % 10 == 0
            if !pristine { FuzzConversation.mutate(&input, &rng) }

            var server = FuzzServer()
            server.feed(input, &rng)
            let o = server.outcome
            if pristine {
                #expect(
                    o.decodingErrors == 0,
                    "base seed \(base) iteration \(iteration): a valid conversation failed to decode")
                if conversation.entersTransmission {
                    #expect(
                        o.transmissions == 1 && o.requests == conversation.requests,
                        "base seed \(base) iteration \(iteration): \(o), expected \(conversation.requests) requests")
                }
            }
            total.decodingErrors += o.decodingErrors
            total.messages += o.messages
            total.closes += o.closes
            total.transmissions += o.transmissions
            total.requests += o.requests
            total.accepted += o.accepted
            total.rejected += o.rejected
            total.replyBytes += o.replyBytes
            if iteration % 8 == 0 { channelErrors += Self.throughChannel(input, &rng) }

            for phase in [NBDServerDecoder.Phase.options, .transmission] {
                var decoder = NBDServerDecoder(startingAt: phase, maximumOptionLength: 4096, maximumPayloadLength: 4096)
                var pending = input
                do {
                    while (try decoder.decodeNext(from: &pending)) != nil {}
                } catch {
                    let typed: NBDDecodingError = error
                    _ = typed
                    phaseErrors += 1
                }
            }
        }
        print(
            "NBD conversation fuzz (mutated valid streams): \(iterations.count) iterations (base seed \(base)) in \(ContinuousClock.now - start): \(total), \(phaseErrors) errors from other start phases, \(channelErrors) from the channel pipeline"
        )
        if iterations.count >= 1000 {
            #expect(channelErrors > 0, "the channel pipeline met damaged input")
            #expect(total.decodingErrors > iterations.count / 10 && total.closes > 0, "\(total)")
            #expect(total.transmissions > iterations.count / 4 && total.accepted > 0 && total.rejected > 0, "\(total)")
        }
    }
}
