import NBD
import NIOCore
import NIOEmbedded
import Testing

@Suite("Encoders: exact bytes from the spec tables")
struct EncoderTests {
    let replyMagic = "0003e889045565a9"

    @Test func greetingIsNBDMAGICThenIHAVEOPTThenFlags0003() {
        var buffer = ByteBuffer()
        #expect(buffer.writeNBDGreeting() == 18)
        #expect(buffer == hex("4e42444d41474943 49484156454f5054 0003"))
    }

    @Test func ackEchoesOptionWithZeroLength() {
        let message = NBDServerMessage.optionReply(NBDOptionReply(option: .go, body: .ack))
        #expect(encoded(message) == hex("\(replyMagic) 00000007 00000001 00000000"))
    }

    @Test func infoExportCarriesSizeAndFlags() {
        let message = NBDServerMessage.optionReply(
            NBDOptionReply(
                option: .go,
                body: .information(.export(size: 0x10_0000, flags: NBDTransmissionFlags(rawValue: 0x0ced)))
            )
        )
        #expect(encoded(message) == hex("\(replyMagic) 00000007 00000003 0000000c | 0000 0000000000100000 0ced"))
    }

    @Test func infoBlockSizeIsFourteenBytes() {
        let message = NBDServerMessage.optionReply(
            NBDOptionReply(option: .info, body: .information(.blockSize(.default)))
        )
        #expect(encoded(message) == hex("\(replyMagic) 00000006 00000003 0000000e | 0003 00000001 00001000 02000000"))
    }

    @Test func infoNameAndDescription() {
        let name = NBDServerMessage.optionReply(NBDOptionReply(option: .go, body: .information(.name("disk"))))
        #expect(encoded(name) == hex("\(replyMagic) 00000007 00000003 00000006 | 0001 \(ascii("disk"))"))
        let text = NBDServerMessage.optionReply(NBDOptionReply(option: .info, body: .information(.description("A"))))
        #expect(encoded(text) == hex("\(replyMagic) 00000006 00000003 00000003 | 0002 41"))
    }

    @Test func serverReplyHasNameLengthNameAndDetails() {
        let message = NBDServerMessage.optionReply(
            NBDOptionReply(option: .list, body: .server(name: "disk", details: "d"))
        )
        #expect(encoded(message) == hex("\(replyMagic) 00000003 00000002 00000009 | 00000004 \(ascii("disk")) 64"))
        let bare = NBDServerMessage.optionReply(NBDOptionReply(option: .list, body: .server(name: "", details: nil)))
        #expect(encoded(bare) == hex("\(replyMagic) 00000003 00000002 00000004 | 00000000"))
    }

    @Test func metaContextReplyHasIdAndName() {
        let message = NBDServerMessage.optionReply(
            NBDOptionReply(option: .setMetaContext, body: .metaContext(id: 1, name: "base:allocation"))
        )
        #expect(
            encoded(message) == hex("\(replyMagic) 0000000a 00000004 00000013 | 00000001 \(ascii("base:allocation"))")
        )
    }

    @Test func errorReplyWithAndWithoutMessage() {
        let unsupported = NBDServerMessage.optionReply(
            NBDOptionReply(option: NBDOption(rawValue: 0x0765_4321), body: .error(.errorUnsupported, message: "abc"))
        )
        #expect(encoded(unsupported) == hex("\(replyMagic) 07654321 80000001 00000003 616263"))
        let unknown = NBDServerMessage.optionReply(
            NBDOptionReply(option: .go, body: .error(.errorUnknown, message: nil))
        )
        #expect(encoded(unknown) == hex("\(replyMagic) 00000007 80000006 00000000"))
    }

    @Test func errorMessagesAreCutTo4096BytesOnAScalarBoundary() {
        let long = String(repeating: "é", count: 3000)  // 6000 bytes of 2-byte scalars
        let reply = encoded(.optionReply(NBDOptionReply(option: .go, body: .error(.errorInvalid, message: long))))
        #expect(reply.readableBytes == 20 + 4096)
        #expect(reply.getInteger(at: 16, as: UInt32.self) == 4096)
    }

    @Test func exportNameReplyPadsWith124ZeroesUnlessNoZeroes() {
        let padded = encoded(
            .exportNameReply(
                NBDExportNameReply(size: 0x4000_0000, flags: [.hasFlags, .sendFlush], includesZeroPadding: true)
            )
        )
        #expect(padded == hex("0000000040000000 0005" + String(repeating: "00", count: 124)))
        let bare = encoded(
            .exportNameReply(
                NBDExportNameReply(size: 0x4000_0000, flags: [.hasFlags, .sendFlush], includesZeroPadding: false)
            )
        )
        #expect(bare == hex("0000000040000000 0005"))
    }

    @Test func simpleReplies() {
        let ok = encoded(
            .simpleReply(NBDSimpleReply(cookie: 0x0102_0304_0506_0708, data: ByteBuffer(bytes: [0xAA, 0xBB])))
        )
        #expect(ok == hex("67446698 00000000 0102030405060708 aabb"))
        let failed = encoded(.simpleReply(NBDSimpleReply(cookie: 9, error: .invalid, data: ByteBuffer(bytes: [1]))))
        #expect(failed == hex("67446698 00000016 0000000000000009"))
        var header = ByteBuffer()
        #expect(header.writeNBDSimpleReplyHeader(cookie: 9, error: .noSpace) == 16)
        #expect(header == hex("67446698 0000001c 0000000000000009"))
    }

    @Test func noneChunk() {
        #expect(encoded(.structuredReply(.done(cookie: 7))) == hex("668e33ef 0001 0000 0000000000000007 00000000"))
    }

    @Test func offsetDataChunk() {
        let chunk = NBDStructuredReplyChunk(
            cookie: 7,
            flags: [],
            content: .offsetData(offset: 0x200, data: ByteBuffer(bytes: [1, 2, 3]))
        )
        #expect(
            encoded(.structuredReply(chunk))
                == hex("668e33ef 0000 0001 0000000000000007 0000000b | 0000000000000200 010203")
        )
        var header = ByteBuffer()
        #expect(header.writeNBDOffsetDataChunkHeader(cookie: 7, flags: .done, offset: 0x200, dataLength: 3) == 28)
        #expect(header == hex("668e33ef 0001 0001 0000000000000007 0000000b 0000000000000200"))
    }

    @Test func offsetHoleChunk() {
        let chunk = NBDStructuredReplyChunk(cookie: 7, flags: [], content: .offsetHole(offset: 0x1000, length: 0x1000))
        #expect(
            encoded(.structuredReply(chunk))
                == hex("668e33ef 0000 0002 0000000000000007 0000000c | 0000000000001000 00001000")
        )
    }

    @Test func blockStatusChunk() {
        let chunk = NBDStructuredReplyChunk(
            cookie: 7,
            flags: .done,
            content: .blockStatus(
                contextID: 0,
                extents: [NBDExtent(length: 0x10000, flags: 0), NBDExtent(length: 0x20000, flags: 3)]
            )
        )
        #expect(
            encoded(.structuredReply(chunk))
                == hex(
                    "668e33ef 0001 0005 0000000000000007 00000014 | 00000000 | 00010000 00000000 | 00020000 00000003"
                )
        )
    }

    @Test func errorChunks() {
        let error = NBDStructuredReplyChunk.error(cookie: 7, .invalid, message: "oops")
        #expect(
            encoded(.structuredReply(error))
                == hex("668e33ef 0001 8001 0000000000000007 0000000a | 00000016 0004 \(ascii("oops"))")
        )
        let silent = NBDStructuredReplyChunk.error(cookie: 7, .io)
        #expect(
            encoded(.structuredReply(silent)) == hex("668e33ef 0001 8001 0000000000000007 00000006 | 00000005 0000")
        )
        let atOffset = NBDStructuredReplyChunk(
            cookie: 7,
            flags: .done,
            content: .errorOffset(.io, message: "io", offset: 0x400)
        )
        #expect(
            encoded(.structuredReply(atOffset))
                == hex("668e33ef 0001 8002 0000000000000007 00000010 | 00000005 0002 \(ascii("io")) 0000000000000400")
        )
    }

    @Test func clientSideEncodings() {
        #expect(wire(optionRequest(.structuredReply)) == hex("49484156454f5054 00000008 00000000"))
        #expect(
            wire(infoRequest(.go, name: "x", [.blockSize]))
                == hex("49484156454f5054 00000007 00000009 | 00000001 78 0001 0003")
        )
        let read = request(.read, flags: .fua, cookie: 0xABCD, offset: 0x200, length: 0x1000)
        #expect(wire(read) == hex("25609513 0001 0000 000000000000abcd 0000000000000200 00001000"))
    }

    @Test func errnoMapping() {
        #expect(NBDError(errno: 30) == .permissionDenied)  // EROFS on Linux and Darwin
        #expect(NBDError(errno: 27) == .noSpace)  // EFBIG
        #expect(NBDError(errno: 5) == .io)
        #expect(NBDError(errno: 28) == .noSpace)
        #expect(NBDError(errno: 2) == .invalid)  // ENOENT: not an NBD error → EINVAL
        #expect(
            NBDError.invalid.rawValue == 22 && NBDError.overflow.rawValue == 75 && NBDError.shutdown.rawValue == 108
        )
    }
}

@Suite("NBDServerMessageEncoder on a channel")
struct MessageEncoderHandlerTests {
    @Test func largeReadDataIsWrittenAsASeparateBufferWithoutCopy() throws {
        let channel = EmbeddedChannel(handler: NBDServerMessageEncoder(copyThreshold: 8))
        let data = ByteBuffer(bytes: Array(repeating: 0x5A, count: 64))
        try channel.writeOutbound(NBDServerMessage.simpleReply(NBDSimpleReply(cookie: 3, data: data)))
        let header = try channel.readOutbound(as: ByteBuffer.self)
        let payload = try channel.readOutbound(as: ByteBuffer.self)
        #expect(header == hex("67446698 00000000 0000000000000003"))
        #expect(payload == data)
        let chunk = NBDStructuredReplyChunk(cookie: 4, flags: .done, content: .offsetData(offset: 0, data: data))
        try channel.writeOutbound(NBDServerMessage.structuredReply(chunk))
        #expect(
            try channel.readOutbound(as: ByteBuffer.self)
                == hex("668e33ef 0001 0001 0000000000000004 00000048 0000000000000000")
        )
        #expect(try channel.readOutbound(as: ByteBuffer.self) == data)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        _ = try channel.finish()
    }

    @Test func smallMessagesAreOneBuffer() throws {
        let channel = EmbeddedChannel(handler: NBDServerMessageEncoder(copyThreshold: 8))
        try channel.writeOutbound(
            NBDServerMessage.simpleReply(NBDSimpleReply(cookie: 3, data: ByteBuffer(bytes: [1, 2])))
        )
        #expect(try channel.readOutbound(as: ByteBuffer.self) == hex("67446698 00000000 0000000000000003 0102"))
        try channel.writeOutbound(NBDServerMessage.greeting([.fixedNewstyle, .noZeroes]))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == hex("4e42444d41474943 49484156454f5054 0003"))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        _ = try channel.finish()
    }
}
