import NBD
import NIOCore
import NIOTestUtils
import Testing

/// The extended-header forms on the wire: 32-byte requests (decoded, with and without payloads), 32-byte
/// reply chunks and `BLOCK_STATUS_EXT` (encoded byte by byte), the negotiation rules, the validator's
/// 64-bit lengths, and extent building beyond 4 GiB.
@Suite("Extended headers: codec, negotiation, validation")
struct ExtendedHeaderCodecTests {
    static func extended(
        _ command: NBDCommand, flags: NBDCommandFlags = [], cookie: UInt64, offset: UInt64 = 0, length: UInt64,
        payload: NBDRequestPayload = .none
    ) -> NBDRequest {
        NBDRequest(
            header: NBDRequestHeader(
                command: command, flags: flags, cookie: cookie, offset: offset, length: length, isExtended: true),
            payload: payload)
    }

    // MARK: Decoding

    @Test func extendedRequestLayout() throws {
        var decoder = NBDServerDecoder(startingAt: .transmission)
        var buffer = hex(
            "21e41c71 | 0008 | 0007 | 0102030405060708 | 00000000ffffffff | 0000000100000001")
        let message = try decoder.decodeNext(from: &buffer)
        #expect(
            message
                == .request(
                    Self.extended(
                        .blockStatus, flags: .requestOne, cookie: 0x0102_0304_0506_0708, offset: 0xffff_ffff,
                        length: (1 << 32) + 1)))
        #expect(buffer.readableBytes == 0)
    }

    @Test func verifierMixesFormsAndPayloads() throws {
        var filter = ByteBuffer()
        NBDBlockStatusPayload(effectLength: 1 << 33, contextIDs: [0, 1]).write(to: &filter)
        let requests: [NBDRequest] = [
            Self.extended(.read, cookie: 1, offset: 1 << 40, length: 1 << 20),
            Self.extended(
                .write, flags: .payloadLength, cookie: 2, offset: 512, length: 5,
                payload: .data(ByteBuffer(bytes: [1, 2, 3, 4, 5]))),
            // QEMU 10 sends WRITE without PAYLOAD_LEN: the data still follows.
            Self.extended(.write, cookie: 3, offset: 0, length: 3, payload: .data(ByteBuffer(bytes: [7, 8, 9]))),
            Self.extended(.writeZeroes, flags: .noHole, cookie: 4, offset: 7, length: UInt64.max - 7),
            Self.extended(
                .blockStatus, flags: .payloadLength, cookie: 5, length: UInt64(filter.readableBytes),
                payload: .data(filter)),
            Self.extended(
                .trim, flags: .payloadLength, cookie: 6, length: 2, payload: .data(ByteBuffer(bytes: [0, 0]))),
            request(.read, cookie: 7, offset: 512, length: 4096),
        ]
        var pairs = requests.map { (wire($0), [NBDClientMessage.request($0)]) }
        // A payload above the 16-byte limit is skipped and the request flagged, in the extended form too.
        var oversized = ByteBuffer()
        oversized.writeNBDRequestHeader(
            NBDRequestHeader(
                command: .blockStatus, flags: .payloadLength, cookie: 8, offset: 0, length: 40, isExtended: true))
        oversized.writeBytes(Array(repeating: 0xEE, count: 40))
        pairs.append(
            (
                oversized,
                [
                    .request(
                        Self.extended(
                            .blockStatus, flags: .payloadLength, cookie: 8, length: 40, payload: .discarded(length: 40))
                    )
                ]
            ))
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            NBDServerDecoder(startingAt: .transmission, maximumPayloadLength: 16)
        }
    }

    @Test(arguments: [UInt64(1) << 32, UInt64.max])
    func aPayloadOf4GiBOrMoreIsAFramingError(_ length: UInt64) throws {
        var decoder = NBDServerDecoder(startingAt: .transmission)
        var buffer = ByteBuffer()
        buffer.writeNBDRequestHeader(
            NBDRequestHeader(
                command: .write, flags: .payloadLength, cookie: 1, offset: 0, length: length, isExtended: true))
        #expect(throws: NBDDecodingError.payloadTooLarge(command: .write, length: length)) {
            _ = try decoder.decodeNext(from: &buffer)
        }
    }

    @Test func aTruncatedExtendedHeaderWaits() throws {
        var decoder = NBDServerDecoder(startingAt: .transmission)
        var buffer = hex("21e41c71 0000 0000 0000000000000001 0000000000000000 00000000000000")
        #expect(try decoder.decodeNext(from: &buffer) == nil)
        #expect(buffer.readableBytes == 31, "nothing consumed until the header is complete")
    }

    // MARK: Encoding

    @Test func extendedChunksByteByByte() {
        let cookie: UInt64 = 0x1122_3344_5566_7788
        let done = NBDServerMessage.extendedReply(.done(cookie: cookie), requestOffset: 0x1_0000_0000)
        #expect(
            bytes(encoded(done)) == bytes(hex("6e8a278c 0001 0000 1122334455667788 0000000100000000 0000000000000000")))

        let status = NBDServerMessage.extendedReply(
            NBDStructuredReplyChunk(
                cookie: cookie, flags: .done,
                content: .blockStatusExtended(
                    contextID: 1,
                    extents: [
                        NBDExtendedExtent(length: 0x1_0000_0001, flags: 3), NBDExtendedExtent(length: 512, flags: 0),
                    ])),
            requestOffset: 4096)
        #expect(
            bytes(encoded(status))
                == bytes(
                    hex(
                        """
                        6e8a278c 0001 0006 1122334455667788 0000000000001000 0000000000000028
                        00000001 00000002 0000000100000001 0000000000000003 0000000000000200 0000000000000000
                        """)))

        let error = NBDServerMessage.extendedReply(.error(cookie: cookie, .overflow, message: "no"), requestOffset: 9)
        #expect(
            bytes(encoded(error))
                == bytes(
                    hex(
                        "6e8a278c 0001 8001 1122334455667788 0000000000000009 0000000000000008 0000004b 0002 \(ascii("no"))"
                    )))

        let data = NBDServerMessage.extendedReply(
            NBDStructuredReplyChunk(
                cookie: cookie, flags: .done, content: .offsetData(offset: 9, data: ByteBuffer(bytes: [0xab]))),
            requestOffset: 9)
        #expect(
            bytes(encoded(data))
                == bytes(
                    hex("6e8a278c 0001 0001 1122334455667788 0000000000000009 0000000000000009 0000000000000009 ab")))
    }

    @Test func extendedRequestEncodesAs32Bytes() {
        var buffer = ByteBuffer()
        let written = buffer.writeNBDRequestHeader(
            NBDRequestHeader(command: .trim, flags: .fua, cookie: 5, offset: 6, length: 1 << 32, isExtended: true))
        #expect(written == 32)
        #expect(bytes(buffer) == bytes(hex("21e41c71 0001 0004 0000000000000005 0000000000000006 0000000100000000")))
    }

    @Test func sessionRepliesUseTheNegotiatedForm() {
        let export = NBDExport(name: "", size: 1 << 40, flags: [.sendFlush])
        let session = NBDSession(export: export, structuredReplies: false, extendedHeaders: true)
        #expect(session.structuredReplies, "extended headers imply chunked replies")
        let header = NBDRequestHeader(command: .flush, cookie: 3, offset: 77, length: 0, isExtended: true)
        #expect(session.successReply(to: header) == .extendedReply(.done(cookie: 3), requestOffset: 77))
        #expect(
            session.errorReply(to: header, .invalid, message: "x")
                == .extendedReply(.error(cookie: 3, .invalid, message: "x"), requestOffset: 77))
    }

    // MARK: Negotiation

    static let configuration = NBDServerConfiguration(
        exports: [NBDExport(name: "", size: 1 << 40, flags: [.sendFlush, .sendDF])])

    static func negotiation(_ configuration: NBDServerConfiguration = configuration) -> NBDNegotiation {
        var negotiation = NBDNegotiation(configuration: configuration)
        _ = negotiation.receive(.clientFlags([.fixedNewstyle, .noZeroes]))
        return negotiation
    }

    static func replyType(_ step: NBDNegotiation.Step) -> NBDOptionReplyType? {
        guard case .optionReply(let reply)? = step.replies.last else { return nil }
        switch reply.body {
        case .ack: return .ack
        case .error(let type, _): return type
        default: return nil
        }
    }

    @Test func negotiationRules() {
        var n = Self.negotiation()
        #expect(
            Self.replyType(n.receive(.option(optionRequest(.extendedHeaders, ByteBuffer(bytes: [0]))))) == .errorInvalid
        )
        #expect(!n.extendedHeadersNegotiated)
        #expect(Self.replyType(n.receive(.option(optionRequest(.structuredReply)))) == .ack)
        #expect(Self.replyType(n.receive(.option(optionRequest(.extendedHeaders)))) == .ack, "after structured replies")
        #expect(n.extendedHeadersNegotiated)
        #expect(Self.replyType(n.receive(.option(optionRequest(.extendedHeaders)))) == .errorInvalid, "twice")
        #expect(Self.replyType(n.receive(.option(optionRequest(.structuredReply)))) == .errorExtendedHeaderRequired)

        var refusing = Self.negotiation(
            NBDServerConfiguration(exports: Self.configuration.exports, offersExtendedHeaders: false))
        #expect(Self.replyType(refusing.receive(.option(optionRequest(.extendedHeaders)))) == .errorUnsupported)

        // Extended headers alone allow SET_META_CONTEXT, and GO then advertises BLOCK_STATUS_PAYLOAD.
        var alone = Self.negotiation()
        _ = alone.receive(.option(optionRequest(.extendedHeaders)))
        #expect(
            Self.replyType(alone.receive(.option(metaRequest(.setMetaContext, name: "", ["base:allocation"])))) == .ack)
        let go = alone.receive(.option(infoRequest(.go, name: "")))
        guard case .enterTransmission(let session) = go.action else {
            Issue.record("GO did not enter transmission: \(go)")
            return
        }
        #expect(session.extendedHeaders && session.structuredReplies && session.metaContexts == [.baseAllocation])
        #expect(session.transmissionFlags.contains(.blockStatusPayload) && session.transmissionFlags.contains(.sendDF))
        let advertised = go.replies.compactMap { message -> NBDTransmissionFlags? in
            if case .optionReply(let reply) = message, case .information(.export(_, let flags)) = reply.body {
                return flags
            }
            return nil
        }
        #expect(advertised == [session.transmissionFlags], "GO advertises what the session uses")
    }

    @Test func startTLSForgetsExtendedHeaders() {
        var n = Self.negotiation(NBDServerConfiguration(exports: Self.configuration.exports, tls: .optional))
        #expect(Self.replyType(n.receive(.option(optionRequest(.extendedHeaders)))) == .ack)
        #expect(n.receive(.option(optionRequest(.startTLS))).action == .startTLS)
        n.tlsHandshakeCompleted()
        #expect(!n.extendedHeadersNegotiated, "the protocol asks for negotiating again after STARTTLS")
        #expect(Self.replyType(n.receive(.option(optionRequest(.structuredReply)))) == .ack, "no longer superseded")
        #expect(
            Self.replyType(n.receive(.option(optionRequest(.extendedHeaders)))) == .ack, "and it can be asked again")
        #expect(n.extendedHeadersNegotiated)
    }

    @Test func exportNameAfterExtendedHeadersCloses() {
        var n = Self.negotiation()
        _ = n.receive(.option(optionRequest(.extendedHeaders)))
        #expect(n.receive(.option(exportNameRequest(""))).action == .close(.exportNameWithExtendedHeaders))
    }

    // MARK: Validation

    static let validator = NBDRequestValidator(
        exportSize: 16 << 30,
        transmissionFlags: [
            .hasFlags, .sendFlush, .sendTrim, .sendWriteZeroes, .sendCache, .sendDF, .blockStatusPayload,
        ],
        structuredReplies: true, extendedHeaders: true, hasMetaContexts: true, metaContextIDs: [0, 1])

    @Test(arguments: [UInt64(1 << 32) - 1, UInt64(1) << 32, UInt64(1 << 32) + 1])
    func effectLengthsBeyond32BitsAreAccepted(_ length: UInt64) {
        for command: NBDCommand in [.trim, .writeZeroes, .cache, .blockStatus] {
            let request = Self.extended(command, cookie: 1, offset: (4 << 30) - 1, length: length)
            #expect(Self.validator.validate(request) == .accept, "\(command) of \(length)")
        }
    }

    @Test func extendedRejections() {
        let v = Self.validator
        let max = UInt64(NBD.defaultMaximumPayloadLength)
        #expect(v.rejection(of: Self.extended(.read, cookie: 1, length: max + 1))?.error == .overflow)
        #expect(v.rejection(of: Self.extended(.read, cookie: 1, length: 1 << 32))?.error == .overflow)
        #expect(v.validate(Self.extended(.read, cookie: 1, length: max)) == .accept)
        #expect(
            v.rejection(
                of: Self.extended(
                    .write, flags: .payloadLength, cookie: 1, length: 64,
                    payload: .discarded(length: 64)))?.rule == .payloadDiscarded)
        #expect(
            v.rejection(
                of: Self.extended(
                    .trim, flags: .payloadLength, cookie: 1, length: 2,
                    payload: .data(ByteBuffer(bytes: [0, 0]))))?.rule == .inapplicableFlag)
        #expect(v.rejection(of: Self.extended(.writeZeroes, cookie: 1, offset: 1, length: 16 << 30))?.error == .noSpace)
        #expect(v.rejection(of: Self.extended(.cache, cookie: 1, offset: 2, length: .max))?.rule == .overflow)
        #expect(v.rejection(of: Self.extended(.blockStatus, cookie: 1, length: 0))?.rule == .emptyBlockStatus)
        // The compact form keeps its rules: PAYLOAD_LEN is not a compact flag, long READ is EINVAL.
        #expect(
            v.rejection(of: request(.read, flags: .payloadLength, cookie: 1, length: 512))?.rule == .inapplicableFlag)
        #expect(v.matchesHeaderStyle(Self.extended(.read, cookie: 1, length: 1).header))
        #expect(!v.matchesHeaderStyle(request(.read, cookie: 1, length: 1).header))
        let compact = NBDRequestValidator(
            exportSize: 1 << 30, transmissionFlags: [.hasFlags], structuredReplies: true, hasMetaContexts: false)
        #expect(compact.rejection(of: request(.read, cookie: 1, length: UInt32(max + 1)))?.error == .invalid)
    }

    @Test func blockStatusPayloadRules() {
        func status(_ ids: [UInt32], effect: UInt64 = 4096, raw: [UInt8]? = nil) -> NBDRequestRule? {
            var payload = ByteBuffer()
            if let raw {
                payload.writeBytes(raw)
            } else {
                NBDBlockStatusPayload(effectLength: effect, contextIDs: ids).write(to: &payload)
            }
            let request = Self.extended(
                .blockStatus, flags: .payloadLength, cookie: 1,
                length: UInt64(payload.readableBytes), payload: .data(payload))
            return Self.validator.rejection(of: request)?.rule
        }
        #expect(status([1]) == nil)
        #expect(status([1, 0], effect: 1 << 34) == nil)
        #expect(status([]) == .invalidBlockStatusPayload, "no id")
        #expect(status([0, 0]) == .invalidBlockStatusPayload, "duplicate")
        #expect(status([2]) == .invalidBlockStatusPayload, "not selected")
        #expect(status([], raw: [0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0]) == .invalidBlockStatusPayload, "not 8 + 4n bytes")
        #expect(status([0], effect: 0) == .emptyBlockStatus)
        #expect(status([0], effect: 17 << 30) == .pastEnd, "the payload's effect length is bounded too")
        let withoutFlag = NBDRequestValidator(
            exportSize: 1 << 30, transmissionFlags: [.hasFlags], structuredReplies: true, extendedHeaders: true,
            hasMetaContexts: true)
        var payload = ByteBuffer()
        NBDBlockStatusPayload(effectLength: 512, contextIDs: [0]).write(to: &payload)
        #expect(
            withoutFlag.rejection(
                of: Self.extended(
                    .blockStatus, flags: .payloadLength, cookie: 1, length: 12,
                    payload: .data(payload)))?.rule == .notAdvertised)
    }

    // MARK: Extents

    @Test func extendedExtentsKeep64BitLengths() {
        let runs: [(length: UInt64, flags: UInt32)] = [(1 << 32, 3), ((1 << 32) + 1, 3), (5, 0), (1 << 40, 2)]
        let extents = NBDBlockStatus.extendedExtents(from: runs, requestLength: (1 << 33) + 100, requestOne: false)
        #expect(
            extents == [
                NBDExtendedExtent(length: (1 << 33) + 1, flags: 3), NBDExtendedExtent(length: 5, flags: 0),
                NBDExtendedExtent(length: 94, flags: 2),
            ])
        let one = NBDBlockStatus.extendedExtents(from: runs, requestLength: (1 << 32) + 1, requestOne: true)
        #expect(one == [NBDExtendedExtent(length: (1 << 32) + 1, flags: 3)])
        let chunk = NBDBlockStatus.chunk(
            cookie: 1, contextID: 0, runs: runs, requestLength: 1 << 34, requestOne: false,
            isFinal: true, extended: true)
        if case .blockStatusExtended(_, let list)? = chunk?.content {
            #expect(list.reduce(0) { $0 + $1.length } == 1 << 34)
        } else {
            Issue.record("expected a BLOCK_STATUS_EXT chunk: \(String(describing: chunk))")
        }
    }
}
