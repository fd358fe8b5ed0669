import NBD
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@Suite("NBDServerDecoder")
struct DecoderTests {
    // MARK: ByteToMessageDecoderVerifier (drip feed, batching, shuffling)

    @Test func verifierOptions() throws {
        let options: [NBDOptionRequest] = [
            optionRequest(.structuredReply),
            metaRequest(.setMetaContext, name: "", ["base:allocation"]),
            infoRequest(.info, name: "disk", [.blockSize, .name]),
            infoRequest(.go, name: "", [.blockSize]),
            optionRequest(NBDOption(rawValue: 0x0765_4321), ByteBuffer(bytes: [1, 2, 3, 4])),
            exportNameRequest("disk"),
            optionRequest(.abort),
        ]
        let pairs = options.map { (wire($0), [NBDClientMessage.option($0)]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            NBDServerDecoder(startingAt: .options)
        }
    }

    @Test func verifierRequests() throws {
        let requests: [NBDRequest] = [
            request(.read, cookie: 1, offset: 512, length: 4096),
            writeRequest(cookie: 2, offset: 0, payload: Array(0..<10)),
            writeRequest(cookie: 3, offset: 8, payload: []),
            request(.flush, cookie: 4),
            request(.blockStatus, flags: .requestOne, cookie: 5, offset: 0, length: 1 << 20),
            request(NBDCommand(rawValue: 99), cookie: 6, offset: 1, length: 2),
        ]
        var pairs = requests.map { (wire($0), [NBDClientMessage.request($0)]) }
        // A WRITE above the 16-byte limit: its 40 payload bytes are skipped, the request flagged.
        var oversized = ByteBuffer()
        oversized.writeNBDRequestHeader(NBDRequestHeader(command: .write, cookie: 7, offset: 0, length: 40))
        oversized.writeBytes(Array(repeating: 0xEE, count: 40))
        pairs.append((oversized, [.request(request(.write, cookie: 7, length: 40, payload: .discarded(length: 40)))]))
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            NBDServerDecoder(startingAt: .transmission, maximumPayloadLength: 16)
        }
    }

    // MARK: EmbeddedChannel

    private func readAll(_ channel: EmbeddedChannel) throws -> [NBDClientMessage] {
        var out: [NBDClientMessage] = []
        while let message = try channel.readInbound(as: NBDClientMessage.self) { out.append(message) }
        return out
    }

    /// A full fio-like connection: flags, SR, GO, then requests pipelined in the same segment.
    private func pipelinedConnection() -> (ByteBuffer, [NBDClientMessage]) {
        let sr = optionRequest(.structuredReply)
        let go = infoRequest(.go, name: "", [.blockSize])
        let write = writeRequest(cookie: 1, offset: 0, payload: Array(repeating: 0xAB, count: 100))
        let read = request(.read, cookie: 2, offset: 0, length: 100)
        let disc = request(.disconnect, cookie: 3)
        var stream = ByteBuffer()
        stream.writeNBDClientFlags([.fixedNewstyle, .noZeroes])
        stream.writeNBDOptionRequest(sr)
        stream.writeNBDOptionRequest(go)
        stream.writeNBDRequest(write)
        stream.writeNBDRequest(read)
        stream.writeNBDRequest(disc)
        let expected: [NBDClientMessage] = [
            .clientFlags([.fixedNewstyle, .noZeroes]), .option(sr), .option(go), .request(write), .request(read),
            .request(disc),
        ]
        return (stream, expected)
    }

    @Test func requestsPipelinedRightAfterGOAreDecodedInOneRead() throws {
        let (stream, expected) = self.pipelinedConnection()
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(NBDServerDecoder()))
        try channel.writeInbound(stream)
        #expect(try self.readAll(channel) == expected)
        #expect(try channel.finish().isClean)
    }

    @Test func pipelinedStreamSplitAtEveryOffsetDecodesTheSame() throws {
        let (stream, expected) = self.pipelinedConnection()
        for split in 0...stream.readableBytes {
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(NBDServerDecoder()))
            try channel.writeInbound(stream.getSlice(at: stream.readerIndex, length: split) ?? ByteBuffer())
            try channel.writeInbound(
                stream.getSlice(at: stream.readerIndex + split, length: stream.readableBytes - split) ?? ByteBuffer()
            )
            #expect(try self.readAll(channel) == expected, "split at \(split)")
            _ = try channel.finish()
        }
    }

    @Test func failedGOThenMoreOptionsThenRequests() throws {
        let badGo = infoRequest(.go, name: "nope")
        let goodGo = infoRequest(.go, name: "")
        let read = request(.read, cookie: 1, length: 512)
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(NBDServerDecoder(startingAt: .options)))
        try channel.writeInbound(concat(wire(badGo), wire(optionRequest(.list)), wire(goodGo), wire(read)))
        #expect(
            try self.readAll(channel) == [
                .option(badGo), .option(optionRequest(.list)), .option(goodGo), .request(read),
            ]
        )
        _ = try channel.finish()
    }

    @Test func writePayloadSplitAcrossReads() throws {
        let payload = (0..<300).map { UInt8(truncatingIfNeeded: $0) }
        let write = writeRequest(cookie: 9, offset: 4096, payload: payload)
        let bytes = wire(write)
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(NBDServerDecoder(startingAt: .transmission)))
        var rest = bytes
        for size in [5, 23, 1, 100, 171] {
            try channel.writeInbound(rest.readSlice(length: size) ?? ByteBuffer())
            #expect(try channel.readInbound(as: NBDClientMessage.self) == nil)
        }
        try channel.writeInbound(rest)
        #expect(try channel.readInbound(as: NBDClientMessage.self) == .request(write))
        _ = try channel.finish()
    }

    @Test func oversizedWriteIsDrainedWithoutBufferingAndStreamStaysInSync() throws {
        var decoder = NBDServerDecoder(startingAt: .transmission, maximumPayloadLength: 1024)
        var buffer = ByteBuffer()
        buffer.writeNBDRequestHeader(
            NBDRequestHeader(command: .write, flags: .fua, cookie: 5, offset: 0, length: 1_000_000)
        )
        #expect(try decoder.decodeNext(from: &buffer) == nil)
        #expect(buffer.readableBytes == 0)
        var drained = 0
        while drained < 1_000_000 {
            var chunk = ByteBuffer(repeating: 0x77, count: min(65536, 1_000_000 - drained))
            drained += chunk.readableBytes
            let result = try decoder.decodeNext(from: &chunk)
            #expect(chunk.readableBytes == 0, "payload bytes are consumed as they arrive, never held")
            if drained < 1_000_000 {
                #expect(result == nil)
            } else {
                #expect(
                    result
                        == .request(
                            request(
                                .write,
                                flags: .fua,
                                cookie: 5,
                                length: 1_000_000,
                                payload: .discarded(length: 1_000_000)
                            )
                        )
                )
            }
        }
        var next = wire(request(.read, cookie: 6, length: 512))
        #expect(try decoder.decodeNext(from: &next) == .request(request(.read, cookie: 6, length: 512)))
    }

    @Test func oversizedWriteOnAChannelFollowedByARead() throws {
        let channel = EmbeddedChannel(
            handler: ByteToMessageHandler(NBDServerDecoder(startingAt: .transmission, maximumPayloadLength: 8))
        )
        var stream = ByteBuffer()
        stream.writeNBDRequestHeader(NBDRequestHeader(command: .write, cookie: 1, offset: 0, length: 9))
        stream.writeBytes(Array(repeating: 0x49, count: 9))  // 'I' bytes must not be mistaken for anything
        stream.writeNBDRequest(request(.read, cookie: 2, length: 8))
        try channel.writeInbound(stream)
        #expect(
            try self.readAll(channel) == [
                .request(request(.write, cookie: 1, length: 9, payload: .discarded(length: 9))),
                .request(request(.read, cookie: 2, length: 8)),
            ]
        )
        _ = try channel.finish()
    }

    @Test func payloadAtExactlyTheLimitIsDelivered() throws {
        var decoder = NBDServerDecoder(startingAt: .transmission, maximumPayloadLength: 4)
        let write = writeRequest(cookie: 1, offset: 0, payload: [1, 2, 3, 4])
        var bytes = wire(write)
        #expect(try decoder.decodeNext(from: &bytes) == .request(write))
    }

    @Test func badOptionMagicIsAnError() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(NBDServerDecoder()))
        #expect(throws: NBDDecodingError.invalidOptionMagic(0x4948_4156_454F_5055)) {
            try channel.writeInbound(hex("00000003 49484156454f5055 00000001 00000000"))
        }
        #expect(try channel.readInbound(as: NBDClientMessage.self) == .clientFlags([.fixedNewstyle, .noZeroes]))
        _ = try? channel.finish()
    }

    @Test func badRequestMagicIsAnError() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(NBDServerDecoder(startingAt: .transmission)))
        #expect(throws: NBDDecodingError.invalidRequestMagic(0x2560_9514)) {
            try channel.writeInbound(hex("25609514 0000 0000 0000000000000001 0000000000000000 00000200"))
        }
        _ = try? channel.finish()
    }

    @Test func requestMagicBeforeGOIsAnOptionMagicError() throws {
        var decoder = NBDServerDecoder(startingAt: .options)
        var bytes = wire(request(.read, cookie: 1, length: 1))
        #expect(throws: NBDDecodingError.self) { try decoder.decodeNext(from: &bytes) }
    }

    @Test func optionAfterTheFirstRequestIsARequestMagicError() throws {
        var decoder = NBDServerDecoder(startingAt: .options)
        var bytes = concat(
            wire(infoRequest(.go, name: "")),
            wire(request(.flush, cookie: 1)),
            wire(optionRequest(.abort))
        )
        _ = try decoder.decodeNext(from: &bytes)
        _ = try decoder.decodeNext(from: &bytes)
        #expect(throws: NBDDecodingError.invalidRequestMagic(0x4948_4156)) { try decoder.decodeNext(from: &bytes) }
    }

    @Test func optionLongerThan32MiBIsRejectedBeforeItsDataArrives() throws {
        var decoder = NBDServerDecoder(startingAt: .options)
        var ok = hex("49484156454f5054 00000007 02000000")  // exactly 32 MiB: wait for data
        #expect(try decoder.decodeNext(from: &ok) == nil)
        var decoder2 = NBDServerDecoder(startingAt: .options)
        var tooLong = hex("49484156454f5054 00000007 02000001")
        #expect(throws: NBDDecodingError.optionTooLarge(option: .go, length: 0x0200_0001, limit: 32 << 20)) {
            try decoder2.decodeNext(from: &tooLong)
        }
    }

    @Test func eofInsideAMessageIsReportedAsTruncation() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(NBDServerDecoder(startingAt: .transmission)))
        try channel.writeInbound(hex("25609513 0000 0000"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(throws: NBDDecodingError.truncatedMessage(missingOrBufferedBytes: 8)) {
            try channel.throwIfErrorCaught()
        }
        _ = try? channel.finish()
    }

    @Test func eofBetweenMessagesIsClean() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(NBDServerDecoder(startingAt: .transmission)))
        try channel.writeInbound(wire(request(.flush, cookie: 1)))
        #expect(try channel.readInbound(as: NBDClientMessage.self) == .request(request(.flush, cookie: 1)))
        #expect(try channel.finish().isClean)
    }
}
