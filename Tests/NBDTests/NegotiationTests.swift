import NBD
import NIOCore
import Testing

/// Shorthands for expected replies.
private func ack(_ option: NBDOption) -> NBDServerMessage { .optionReply(NBDOptionReply(option: option, body: .ack)) }
private func info(_ option: NBDOption, _ item: NBDInformation) -> NBDServerMessage {
    .optionReply(NBDOptionReply(option: option, body: .information(item)))
}
private func meta(_ option: NBDOption, _ id: UInt32, _ name: String) -> NBDServerMessage {
    .optionReply(NBDOptionReply(option: option, body: .metaContext(id: id, name: name)))
}
private func server(_ name: String, _ details: String?) -> NBDServerMessage {
    .optionReply(NBDOptionReply(option: .list, body: .server(name: name, details: details)))
}
/// The reply type of an error reply, or nil.
private func errorType(_ message: NBDServerMessage) -> NBDOptionReplyType? {
    if case .optionReply(let reply) = message, case .error(let type, _) = reply.body { return type }
    return nil
}
private func echoedOption(of message: NBDServerMessage) -> NBDOption? {
    if case .optionReply(let reply) = message { return reply.option }
    return nil
}
private func session(_ step: NBDNegotiation.Step) -> NBDSession? {
    if case .enterTransmission(let session) = step.action { return session }
    return nil
}

@Suite("NBDNegotiation")
struct NegotiationTests {
    static let writable: NBDTransmissionFlags = [
        .sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .sendFastZero, .sendDF, .sendCache, .canMultiConn,
    ]
    static let disk = NBDExport(name: "disk", description: "test image", size: 1 << 30, flags: writable)
    static let deep = NBDExport(name: "deep", size: 1 << 20, flags: [.readOnly], offersAllocationDepth: true)

    let config = NBDServerConfiguration(exports: [disk, deep])

    /// A negotiation that already accepted the usual client flags.
    private func started(
        _ config: NBDServerConfiguration? = nil, flags: NBDClientFlags = [.fixedNewstyle, .noZeroes]
    )
        -> NBDNegotiation
    {
        var negotiation = NBDNegotiation(configuration: config ?? self.config)
        let step = negotiation.receive(.clientFlags(flags))
        #expect(step == NBDNegotiation.Step(replies: [], action: .continue))
        return negotiation
    }

    private func send(_ negotiation: inout NBDNegotiation, _ option: NBDOptionRequest) -> NBDNegotiation.Step {
        negotiation.receive(.option(option))
    }

    @Test func greetingIs0003() {
        let negotiation = NBDNegotiation(configuration: self.config)
        #expect(encoded(negotiation.greeting) == hex("4e42444d41474943 49484156454f5054 0003"))
    }

    // MARK: Real clients (docs/nbd-protocol.md §5.3)

    @Test func qemuImg() throws {
        var n = self.started()
        #expect(
            self.send(&n, optionRequest(.structuredReply)) == .init(replies: [ack(.structuredReply)], action: .continue)
        )
        let set = self.send(&n, metaRequest(.setMetaContext, name: "disk", ["base:allocation"]))
        #expect(
            set
                == .init(
                    replies: [meta(.setMetaContext, 0, "base:allocation"), ack(.setMetaContext)],
                    action: .continue
                )
        )
        let go = self.send(&n, infoRequest(.go, name: "disk", [.blockSize]))
        let flags = NBDTransmissionFlags(
            rawValue: 0x0001 | 0x0004 | 0x0008 | 0x0020 | 0x0040 | 0x0080 | 0x0100 | 0x0400 | 0x0800
        )
        #expect(
            go.replies == [
                info(.go, .description("test image")), info(.go, .blockSize(.default)),
                info(.go, .export(size: 1 << 30, flags: flags)), ack(.go),
            ]
        )
        let s = try #require(session(go))
        #expect(s.structuredReplies && s.metaContexts == [.baseAllocation] && s.clientRequestedBlockSize)
        #expect(s.transmissionFlags == flags && s.export == Self.disk && s.clientNoZeroes && s.enteredWith == .go)
        #expect(n.isFinished)
        #expect(n.receive(.request(request(.read, length: 512))).action == .close(.unexpectedMessage))
    }

    @Test func qemuNbdList() {
        var n = self.started()
        _ = self.send(&n, optionRequest(.structuredReply))
        #expect(
            self.send(&n, optionRequest(.list)).replies == [
                server("disk", "test image"), server("deep", nil), ack(.list),
            ]
        )
        let infoStep = self.send(&n, infoRequest(.info, name: "deep", [.blockSize]))
        #expect(infoStep.action == .continue)
        #expect(
            infoStep.replies == [
                info(.info, .blockSize(.default)), info(.info, .export(size: 1 << 20, flags: [.hasFlags, .readOnly])),
                ack(.info),
            ]
        )
        let all = self.send(&n, metaRequest(.listMetaContext, name: "deep", []))
        #expect(
            all.replies == [
                meta(.listMetaContext, 0, "base:allocation"), meta(.listMetaContext, 0, "qemu:allocation-depth"),
                ack(.listMetaContext),
            ]
        )
        let qemu = self.send(&n, metaRequest(.listMetaContext, name: "deep", ["qemu:"]))
        #expect(qemu.replies == [meta(.listMetaContext, 0, "qemu:allocation-depth"), ack(.listMetaContext)])
        #expect(self.send(&n, optionRequest(.abort)) == .init(replies: [ack(.abort)], action: .close(.clientAborted)))
    }

    @Test func nbdinfo() throws {
        var n = self.started()
        _ = self.send(&n, optionRequest(.structuredReply))
        let infoStep = self.send(&n, infoRequest(.info, name: "disk", [.blockSize, .description, .name]))
        #expect(infoStep.replies.first == info(.info, .name("disk")))
        #expect(infoStep.replies.contains(info(.info, .description("test image"))))
        #expect(infoStep.replies.last == ack(.info) && infoStep.action == .continue)
        let list = self.send(&n, metaRequest(.listMetaContext, name: "disk", []))
        #expect(list.replies == [meta(.listMetaContext, 0, "base:allocation"), ack(.listMetaContext)])
        let go = self.send(&n, infoRequest(.go, name: "disk", [.blockSize]))
        let s = try #require(session(go))
        #expect(s.metaContexts.isEmpty, "LIST does not select contexts")
    }

    @Test func nbdinfoListAndNbdClientList() {
        var n = self.started()
        _ = self.send(&n, optionRequest(.structuredReply))
        #expect(self.send(&n, optionRequest(.list)).replies.count == 3)
        #expect(self.send(&n, infoRequest(.info, name: "disk")).replies.last == ack(.info))
        #expect(self.send(&n, metaRequest(.listMetaContext, name: "disk", [])).replies.count == 2)
        #expect(self.send(&n, optionRequest(.abort)).action == .close(.clientAborted))

        var plain = self.started()  // nbd-client -l: no SR
        #expect(
            self.send(&plain, optionRequest(.list)).replies == [
                server("disk", "test image"), server("deep", nil), ack(.list),
            ]
        )
        #expect(self.send(&plain, optionRequest(.abort)).action == .close(.clientAborted))
    }

    @Test func nbdClientKernelUsesGOWithNoInfoRequests() throws {
        var n = self.started(flags: [.fixedNewstyle])
        let go = self.send(&n, infoRequest(.go, name: "disk"))
        let s = try #require(session(go))
        #expect(!s.structuredReplies && !s.transmissionFlags.contains(.sendDF), "DF needs structured replies")
        #expect(!s.clientRequestedBlockSize && !s.clientNoZeroes)
        #expect(go.replies.contains(info(.go, .blockSize(.default))), "BLOCK_SIZE is always sent")
    }

    @Test func exportNameFallbackWithAndWithoutNoZeroes() throws {
        var withZeroes = self.started(flags: [.fixedNewstyle])
        let padded = self.send(&withZeroes, exportNameRequest("disk"))
        let flags = Self.disk.advertisedFlags(structuredReplies: false)
        #expect(
            padded.replies == [
                .exportNameReply(NBDExportNameReply(size: 1 << 30, flags: flags, includesZeroPadding: true))
            ]
        )
        #expect(try #require(session(padded)).enteredWith == .exportName)
        #expect(encoded(padded.replies[0]).readableBytes == 134)

        var noZeroes = self.started()
        let bare = self.send(&noZeroes, exportNameRequest("disk"))
        #expect(
            bare.replies == [
                .exportNameReply(NBDExportNameReply(size: 1 << 30, flags: flags, includesZeroPadding: false))
            ]
        )
        #expect(encoded(bare.replies[0]).readableBytes == 10)
    }

    @Test func fioAndNbdcopy() throws {
        var fio = self.started()
        _ = self.send(&fio, optionRequest(.structuredReply))
        let s = try #require(session(self.send(&fio, infoRequest(.go, name: ""))))
        #expect(s.export == Self.disk, "empty name selects the first export")
        #expect(s.structuredReplies && s.metaContexts.isEmpty)

        var copy = self.started()
        _ = self.send(&copy, optionRequest(.structuredReply))
        _ = self.send(&copy, metaRequest(.setMetaContext, name: "", ["base:allocation"]))
        let copySession = try #require(session(self.send(&copy, infoRequest(.go, name: ""))))
        #expect(copySession.metaContexts == [.baseAllocation])
    }

    // MARK: Meta contexts

    @Test func setMetaContextSelectsExactNamesOnlyWithIds() throws {
        var n = self.started()
        _ = self.send(&n, optionRequest(.structuredReply))
        let set = self.send(
            &n,
            metaRequest(
                .setMetaContext,
                name: "deep",
                ["base:", "qemu:", "x-unknown:thing", "qemu:allocation-depth", "base:allocation", "base:allocation"]
            )
        )
        #expect(
            set.replies == [
                meta(.setMetaContext, 1, "qemu:allocation-depth"), meta(.setMetaContext, 0, "base:allocation"),
                ack(.setMetaContext),
            ]
        )
        let s = try #require(session(self.send(&n, infoRequest(.go, name: "deep"))))
        #expect(s.metaContexts == [.qemuAllocationDepth, .baseAllocation])
        #expect(s.metaContext(id: 1) == .qemuAllocationDepth)
    }

    @Test func allocationDepthIsNotOfferedUnlessEnabled() {
        var n = self.started()
        _ = self.send(&n, optionRequest(.structuredReply))
        #expect(
            self.send(&n, metaRequest(.listMetaContext, name: "disk", ["qemu:"])).replies == [ack(.listMetaContext)]
        )
        #expect(
            self.send(&n, metaRequest(.setMetaContext, name: "disk", ["qemu:allocation-depth"])).replies == [
                ack(.setMetaContext)
            ]
        )
    }

    @Test func setMetaBeforeStructuredRepliesIsInvalid() {
        var n = self.started()
        let step = self.send(&n, metaRequest(.setMetaContext, name: "disk", ["base:allocation"]))
        #expect(step.replies.count == 1 && errorType(step.replies[0]) == .errorInvalid && step.action == .continue)
    }

    @Test func failedSetClearsTheEarlierSelectionAndOtherExportGetsNone() throws {
        var n = self.started()
        _ = self.send(&n, optionRequest(.structuredReply))
        _ = self.send(&n, metaRequest(.setMetaContext, name: "disk", ["base:allocation"]))
        let bad = self.send(&n, metaRequest(.setMetaContext, name: "nope", ["base:allocation"]))
        #expect(errorType(bad.replies[0]) == .errorUnknown)
        #expect(try #require(session(self.send(&n, infoRequest(.go, name: "disk")))).metaContexts.isEmpty)

        var other = self.started()
        _ = self.send(&other, optionRequest(.structuredReply))
        _ = self.send(&other, metaRequest(.setMetaContext, name: "deep", ["base:allocation"]))
        #expect(try #require(session(self.send(&other, infoRequest(.go, name: "disk")))).metaContexts.isEmpty)
    }

    @Test func malformedMetaContextLengthsAreInvalid() {
        var n = self.started()
        _ = self.send(&n, optionRequest(.structuredReply))
        let cases: [ByteBuffer] = [
            hex("00000004 6469"),  // name length beyond data
            hex("00000004 \(ascii("disk")) 00000002 00000003 \(ascii("abc"))"),  // 2 queries announced, 1 present
            hex("00000004 \(ascii("disk")) 00000001 00000010 \(ascii("abc"))"),  // query length beyond data
            hex("00000004 \(ascii("disk")) 00000000 00"),  // trailing byte
            hex("00000004 \(ascii("disk")) 000000"),  // truncated count
            hex("00000002 ff fe 00000000"),  // name is not UTF-8
        ]
        for data in cases {
            for option in [NBDOption.listMetaContext, .setMetaContext] {
                let step = self.send(&n, optionRequest(option, data))
                #expect(
                    step.replies.count == 1 && errorType(step.replies[0]) == .errorInvalid,
                    "\(option) \(bytes(data))"
                )
                #expect(echoedOption(of: step.replies[0]) == option)
            }
        }
    }

    // MARK: Errors

    // 11 (EXTENDED_HEADERS) is supported now; 12 is the first number the protocol has not given out.
    @Test func unknownOptionIsUnsupportedAndEchoed() {
        var n = self.started()
        for raw: UInt32 in [0x0765_4321, 4, 12, 0] {
            let step = self.send(&n, optionRequest(NBDOption(rawValue: raw), ByteBuffer(bytes: [1, 2, 3, 4])))
            #expect(step.action == .continue && step.replies.count == 1)
            #expect(
                errorType(step.replies[0]) == .errorUnsupported
                    && echoedOption(of: step.replies[0]) == NBDOption(rawValue: raw)
            )
        }
        #expect(
            encoded(self.send(&n, optionRequest(NBDOption(rawValue: 0x0765_4321))).replies[0]).getInteger(
                at: 8,
                as: UInt32.self
            ) == 0x0765_4321
        )
    }

    @Test func listWithDataIsInvalid() {
        var n = self.started()
        let step = self.send(&n, optionRequest(.list, ByteBuffer(bytes: [0])))
        #expect(step.replies.count == 1 && errorType(step.replies[0]) == .errorInvalid && step.action == .continue)
    }

    @Test func structuredReplyWithDataOrRepeatedIsInvalid() {
        var n = self.started()
        #expect(
            errorType(self.send(&n, optionRequest(.structuredReply, ByteBuffer(bytes: [1]))).replies[0])
                == .errorInvalid
        )
        #expect(!n.structuredRepliesNegotiated)
        #expect(self.send(&n, optionRequest(.structuredReply)).replies == [ack(.structuredReply)])
        #expect(errorType(self.send(&n, optionRequest(.structuredReply)).replies[0]) == .errorInvalid)
    }

    @Test func unknownExportOnGOAndInfoIsErrUnknownOnExportNameCloses() {
        var n = self.started()
        for option in [NBDOption.info, .go] {
            let step = self.send(&n, infoRequest(option, name: "nope", [.blockSize]))
            #expect(step.replies.count == 1 && errorType(step.replies[0]) == .errorUnknown && step.action == .continue)
        }
        #expect(self.send(&n, exportNameRequest("nope")) == .init(replies: [], action: .close(.unknownExport("nope"))))
    }

    @Test func malformedInfoRequestIsInvalid() {
        var n = self.started()
        for data in [hex("00000001 78 0002 0003"), hex("00000001 78 0001 0003 00"), hex("00000001 78 00"), hex("")] {
            let step = self.send(&n, optionRequest(.go, data))
            #expect(errorType(step.replies[0]) == .errorInvalid && step.action == .continue, "\(bytes(data))")
        }
    }

    @Test func clientFlags() {
        var unknown = NBDNegotiation(configuration: self.config)
        #expect(
            unknown.receive(.clientFlags(NBDClientFlags(rawValue: 0x5))).action
                == .close(.unsupportedClientFlags(NBDClientFlags(rawValue: 5)))
        )

        var legacy = self.started(flags: [])
        #expect(self.send(&legacy, optionRequest(.list)).action == .close(.optionWithoutFixedNewstyle(.list)))
        var legacy2 = self.started(flags: [])
        #expect(session(self.send(&legacy2, exportNameRequest("disk"))) != nil)

        var early = NBDNegotiation(configuration: self.config)
        #expect(early.receive(.option(optionRequest(.list))).action == .close(.unexpectedMessage))
    }

    @Test func requestDuringNegotiationCloses() {
        var n = self.started()
        #expect(n.receive(.request(request(.read, length: 1))).action == .close(.unexpectedMessage))
    }

    // MARK: TLS

    @Test func startTLSWithoutTLSConfiguredIsPolicy() {
        var n = self.started()
        let step = self.send(&n, optionRequest(.startTLS))
        #expect(errorType(step.replies[0]) == .errorPolicy && step.action == .continue)
    }

    @Test func tlsRequired() throws {
        let config = NBDServerConfiguration(exports: [Self.disk], tls: .required)
        var n = self.started(config)
        for request in [
            optionRequest(.structuredReply), optionRequest(.list), infoRequest(.info, name: "disk"),
            infoRequest(.go, name: "disk"), optionRequest(NBDOption(rawValue: 99)),
        ] {
            let step = self.send(&n, request)
            #expect(
                step.replies.count == 1 && errorType(step.replies[0]) == .errorTLSRequired && step.action == .continue
            )
        }
        var exportName = self.started(config)
        #expect(self.send(&exportName, exportNameRequest("disk")).action == .close(.tlsRequired))

        #expect(self.send(&n, optionRequest(.startTLS)) == .init(replies: [ack(.startTLS)], action: .startTLS))
        #expect(
            n.receive(.option(optionRequest(.list))).action == .close(.unexpectedMessage),
            "nothing before the TLS handshake"
        )

        var m = self.started(config)
        _ = self.send(&m, optionRequest(.startTLS))
        m.tlsHandshakeCompleted()
        #expect(errorType(self.send(&m, optionRequest(.startTLS)).replies[0]) == .errorInvalid)
        _ = self.send(&m, optionRequest(.structuredReply))
        let s = try #require(session(self.send(&m, infoRequest(.go, name: "disk"))))
        #expect(s.tlsActive && s.structuredReplies)
    }

    @Test func tlsHandshakeForgetsEarlierNegotiation() throws {
        let config = NBDServerConfiguration(exports: [Self.disk], tls: .optional)
        var n = self.started(config)
        _ = self.send(&n, optionRequest(.structuredReply))
        _ = self.send(&n, metaRequest(.setMetaContext, name: "disk", ["base:allocation"]))
        _ = self.send(&n, optionRequest(.startTLS))
        n.tlsHandshakeCompleted()
        #expect(!n.structuredRepliesNegotiated)
        let s = try #require(session(self.send(&n, infoRequest(.go, name: "disk"))))
        #expect(!s.structuredReplies && s.metaContexts.isEmpty && s.tlsActive)
    }

    @Test func optionalTLSAllowsPlainSessions() throws {
        var n = self.started(NBDServerConfiguration(exports: [Self.disk], tls: .optional))
        #expect(try #require(session(self.send(&n, infoRequest(.go, name: "disk")))).tlsActive == false)
    }
}
