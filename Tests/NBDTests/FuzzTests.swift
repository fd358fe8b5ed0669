import NBD
import NIOCore
import Testing
import TestSupport

/// Random input must never trap; decoders may only fail with ``NBDDecodingError``.
@Suite("Fuzz: random bytes never trap")
struct FuzzTests {
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
            default:
                let count = Int.random(in: 0...48, using: &rng)
                buffer.writeBytes((0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) })
            }
        }
        return buffer
    }

    @Test func decodersNeverTrapAndOnlyThrowTypedErrors() {
        var rng = SplitMix64(seed: 0x4E42_4421)
        var messages = 0
        var errors = 0
        for _ in 0..<3000 {
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
                        while (try decoder.decodeNext(from: &pending)) != nil { messages += 1 }
                    }
                } catch {
                    // `decodeNext` uses typed throws: `error` is statically an NBDDecodingError.
                    let typed: NBDDecodingError = error
                    errors += 1
                    _ = typed
                }
            }
        }
        #expect(
            messages > 1000 && errors > 1000,
            "the fuzzer reached both outcomes (\(messages) messages, \(errors) errors)"
        )
    }

    @Test func negotiationNeverTrapsAndEveryReplyEncodes() {
        var rng = SplitMix64(seed: 0x5EED)
        let exports = [
            NBDExport(name: "", size: 1 << 20, flags: [.sendFlush, .sendDF], offersAllocationDepth: true),
            NBDExport(name: "a", description: "é", size: .max, flags: .readOnly),
        ]
        var outcomes: Set<String> = []
        for iteration in 0..<3000 {
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
                            length: UInt32.random(in: 0...UInt32.max, using: &rng)
                        )
                        _ = validator.validate(header, payloadDiscarded: Bool.random(using: &rng))
                    }
                }
            }
            outcomes.insert("\(step.action)".prefix(12).description)
        }
        #expect(outcomes.count >= 3, "several kinds of outcome were reached: \(outcomes)")
    }
}
