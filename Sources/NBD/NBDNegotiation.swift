import NIOCore

/// The handshake of one connection as a pure state machine: it consumes decoded client messages and says
/// what to send and what to do next. No I/O.
///
/// Drive it like this:
/// ```swift
/// var negotiation = NBDNegotiation(configuration: config)
/// write(negotiation.greeting)
/// for message in inbound {
///     let step = negotiation.receive(message)
///     write(step.replies)                       // in order, then flush
///     switch step.action {
///     case .continue: continue
///     case .startTLS: add TLS handler in front of the decoder; negotiation.tlsHandshakeCompleted()
///     case .close: close the connection (after the replies are flushed)
///     case .enterTransmission(let session): serve requests with NBDRequestValidator(session: session)
///     }
/// }
/// ```
public struct NBDNegotiation: Sendable {
    /// What the server does after sending a step's replies.
    public enum Action: Hashable, Sendable {
        /// Keep reading option requests.
        case `continue`
        /// Start the TLS handshake (the ACK is in the replies), then call ``NBDNegotiation/tlsHandshakeCompleted()``.
        case startTLS
        /// Close the connection.
        case close(CloseReason)
        /// The handshake is over: serve transmission requests with this negotiated state.
        case enterTransmission(NBDSession)
    }

    /// Why the negotiation ends the connection.
    public enum CloseReason: Hashable, Sendable {
        /// The client sent `NBD_OPT_ABORT`.
        case clientAborted
        /// The client flags had bits this server does not know or did not offer.
        case unsupportedClientFlags(NBDClientFlags)
        /// The client did not set `FIXED_NEWSTYLE` and sent an option other than `EXPORT_NAME`.
        case optionWithoutFixedNewstyle(NBDOption)
        /// `EXPORT_NAME` named no export (this cannot be answered with an error).
        case unknownExport(String)
        /// `EXPORT_NAME` carried a name that is not a valid protocol string.
        case invalidExportName
        /// `EXPORT_NAME` arrived before TLS although TLS is required.
        case tlsRequired
        /// `EXPORT_NAME` arrived after extended headers were negotiated, which the protocol forbids (and it
        /// cannot be answered with an error).
        case exportNameWithExtendedHeaders
        /// A message arrived that the current state does not allow (e.g. a transmission request during the
        /// handshake, or anything after the handshake ended).
        case unexpectedMessage
    }

    /// The replies to send, in order, and the action to take afterwards.
    public struct Step: Hashable, Sendable {
        /// Messages to write before acting.
        public var replies: [NBDServerMessage]
        /// What to do once they are written.
        public var action: Action

        /// Creates a step.
        /// - Parameters:
        ///   - replies: Messages to write.
        ///   - action: What to do next.
        public init(replies: [NBDServerMessage], action: Action) {
            self.replies = replies
            self.action = action
        }
    }

    private enum State: Hashable, Sendable {
        case awaitingClientFlags
        case negotiating
        case awaitingTLSHandshake
        case finished
    }

    private struct MetaSelection: Hashable, Sendable {
        var exportName: String
        var contexts: [NBDMetaContext]
    }

    /// The server's exports and policies.
    public let configuration: NBDServerConfiguration
    private var state: State = .awaitingClientFlags
    private var clientFlags: NBDClientFlags = []
    private var structuredReplies = false
    private var extendedHeaders = false
    private var tlsActive = false
    private var metaSelection: MetaSelection?

    /// Creates the state machine for a new connection.
    /// - Parameter configuration: Exports and policies.
    public init(configuration: NBDServerConfiguration) {
        self.configuration = configuration
    }

    /// The greeting to send as soon as the connection is up (flags `FIXED_NEWSTYLE | NO_ZEROES`, 0x0003).
    public var greeting: NBDServerMessage { .greeting([.fixedNewstyle, .noZeroes]) }

    /// Whether the negotiation ended (closed or entered transmission); further input is unexpected.
    public var isFinished: Bool { state == .finished }

    /// Whether structured replies have been negotiated so far.
    public var structuredRepliesNegotiated: Bool { structuredReplies }

    /// Whether extended headers have been negotiated so far.
    public var extendedHeadersNegotiated: Bool { extendedHeaders }

    /// Reports that the TLS handshake that followed a ``Action/startTLS`` succeeded. As the protocol
    /// requires, everything negotiated before TLS (structured replies, extended headers, metadata contexts)
    /// is forgotten and must be negotiated again.
    public mutating func tlsHandshakeCompleted() {
        guard state == .awaitingTLSHandshake else { return }
        state = .negotiating
        tlsActive = true
        structuredReplies = false
        extendedHeaders = false
        metaSelection = nil
    }

    /// Consumes one decoded client message.
    /// - Parameter message: The message.
    /// - Returns: The replies to send and the action to take.
    public mutating func receive(_ message: NBDClientMessage) -> Step {
        switch (state, message) {
        case (.awaitingClientFlags, .clientFlags(let flags)):
            guard NBDClientFlags.known.isSuperset(of: flags) else {
                return finish(then: .close(.unsupportedClientFlags(flags)))
            }
            clientFlags = flags
            state = .negotiating
            return Step(replies: [], action: .continue)
        case (.negotiating, .option(let request)):
            return handle(request)
        default:
            return finish(then: .close(.unexpectedMessage))
        }
    }

    // MARK: - Options

    private mutating func handle(_ request: NBDOptionRequest) -> Step {
        let option = request.option
        if !clientFlags.contains(.fixedNewstyle) && option != .exportName {
            return finish(then: .close(.optionWithoutFixedNewstyle(option)))
        }
        if self.configuration.tls == .required && !tlsActive && option != .startTLS {
            if option == .exportName { return finish(then: .close(.tlsRequired)) }
            let reply = Self.error(option, .errorTLSRequired, "TLS is required before option \(option)")
            if option == .abort { return finish([reply], then: .close(.clientAborted)) }
            return Step(replies: [reply], action: .continue)
        }
        switch option {
        case .exportName: return handleExportName(request.data)
        case .abort: return finish([Self.reply(option, .ack)], then: .close(.clientAborted))
        case .list: return handleList(request)
        case .startTLS: return handleStartTLS(request)
        case .info, .go: return handleInfoOrGo(request)
        case .structuredReply: return handleStructuredReply(request)
        case .extendedHeaders where self.configuration.offersExtendedHeaders: return handleExtendedHeaders(request)
        case .listMetaContext, .setMetaContext: return handleMetaContext(request)
        default:
            return Step(
                replies: [Self.error(option, .errorUnsupported, "option \(option.rawValue) is not supported")],
                action: .continue
            )
        }
    }

    private mutating func handleExportName(_ data: ByteBuffer) -> Step {
        if extendedHeaders { return finish(then: .close(.exportNameWithExtendedHeaders)) }
        guard let name = NBD.string(from: data) else { return finish(then: .close(.invalidExportName)) }
        guard let export = self.configuration.export(named: name) else {
            return finish(then: .close(.unknownExport(name)))
        }
        let session = makeSession(export: export, requestedBlockSize: false, enteredWith: .exportName)
        let reply = NBDExportNameReply(
            size: export.size,
            flags: session.transmissionFlags,
            includesZeroPadding: !session.clientNoZeroes
        )
        return finish([.exportNameReply(reply)], then: .enterTransmission(session))
    }

    private func handleList(_ request: NBDOptionRequest) -> Step {
        guard request.data.readableBytes == 0 else {
            return Step(replies: [Self.error(.list, .errorInvalid, "LIST takes no data")], action: .continue)
        }
        var replies: [NBDServerMessage] = self.configuration.exports.map { export in
            Self.reply(.list, .server(name: export.name, details: export.description.flatMap { $0.isEmpty ? nil : $0 }))
        }
        replies.append(Self.reply(.list, .ack))
        return Step(replies: replies, action: .continue)
    }

    private mutating func handleStartTLS(_ request: NBDOptionRequest) -> Step {
        guard request.data.readableBytes == 0 else {
            return Step(replies: [Self.error(.startTLS, .errorInvalid, "STARTTLS takes no data")], action: .continue)
        }
        guard !tlsActive else {
            return Step(replies: [Self.error(.startTLS, .errorInvalid, "TLS is already active")], action: .continue)
        }
        guard self.configuration.tls != .disabled else {
            return Step(replies: [Self.error(.startTLS, .errorPolicy, "TLS is not configured")], action: .continue)
        }
        state = .awaitingTLSHandshake
        return Step(replies: [Self.reply(.startTLS, .ack)], action: .startTLS)
    }

    /// The outcome of parsing an option's data that names an export.
    private enum ExportLookup<Request> {
        /// The data parsed and the export exists.
        case found(Request, NBDExport)
        /// The step that answers the option: ERR_INVALID for bad data, ERR_UNKNOWN for no such export.
        case refused(Step)
    }

    /// Parses `request`'s data as `type` and finds the export it names.
    private func parseNamingExport<Request: NBDExportNamingRequest>(
        _ request: NBDOptionRequest, as type: Request.Type
    ) -> ExportLookup<Request> {
        let parsed: Request
        do {
            parsed = try Request(parsing: request.data)
        } catch {
            return .refused(Step(replies: [Self.error(request.option, .errorInvalid, error.reason)], action: .continue))
        }
        guard let export = self.configuration.export(named: parsed.exportName) else {
            return .refused(
                Step(
                    replies: [Self.error(request.option, .errorUnknown, "export '\(parsed.exportName)' not present")],
                    action: .continue
                ))
        }
        return .found(parsed, export)
    }

    private mutating func handleInfoOrGo(_ request: NBDOptionRequest) -> Step {
        let option = request.option
        let (parsed, export): (NBDExportInfoRequest, NBDExport)
        switch parseNamingExport(request, as: NBDExportInfoRequest.self) {
        case .found(let request, let named): (parsed, export) = (request, named)
        case .refused(let step): return step
        }
        let flags = export.advertisedFlags(
            structuredReplies: structuredReplies,
            extendedHeaders: extendedHeaders,
            hasMetaContexts: !self.contexts(for: export).isEmpty
        )
        var replies: [NBDServerMessage] = []
        if parsed.requests.contains(.name) {
            replies.append(Self.reply(option, .information(.name(export.name))))
        }
        if let description = export.description, !description.isEmpty {
            replies.append(Self.reply(option, .information(.description(description))))
        }
        replies.append(Self.reply(option, .information(.blockSize(self.configuration.blockSize))))
        replies.append(Self.reply(option, .information(.export(size: export.size, flags: flags))))
        replies.append(Self.reply(option, .ack))
        if option == .go {
            let session = makeSession(
                export: export, requestedBlockSize: parsed.requests.contains(.blockSize), enteredWith: option)
            return finish(replies, then: .enterTransmission(session))
        }
        return Step(replies: replies, action: .continue)
    }

    private mutating func handleStructuredReply(_ request: NBDOptionRequest) -> Step {
        guard request.data.readableBytes == 0 else {
            return Step(
                replies: [Self.error(.structuredReply, .errorInvalid, "STRUCTURED_REPLY takes no data")],
                action: .continue
            )
        }
        guard !extendedHeaders else {
            return Step(
                replies: [
                    Self.error(
                        .structuredReply, .errorExtendedHeaderRequired,
                        "extended headers are already negotiated and take precedence")
                ],
                action: .continue
            )
        }
        guard !structuredReplies else {
            return Step(
                replies: [Self.error(.structuredReply, .errorInvalid, "structured replies already negotiated")],
                action: .continue
            )
        }
        structuredReplies = true
        return Step(replies: [Self.reply(.structuredReply, .ack)], action: .continue)
    }

    /// `NBD_OPT_EXTENDED_HEADERS`: takes no data; accepted with or without structured replies before it (it
    /// takes precedence over them), once per TLS state.
    private mutating func handleExtendedHeaders(_ request: NBDOptionRequest) -> Step {
        guard request.data.readableBytes == 0 else {
            return Step(
                replies: [Self.error(.extendedHeaders, .errorInvalid, "EXTENDED_HEADERS takes no data")],
                action: .continue
            )
        }
        guard !extendedHeaders else {
            return Step(
                replies: [Self.error(.extendedHeaders, .errorInvalid, "extended headers already negotiated")],
                action: .continue
            )
        }
        extendedHeaders = true
        return Step(replies: [Self.reply(.extendedHeaders, .ack)], action: .continue)
    }

    private mutating func handleMetaContext(_ request: NBDOptionRequest) -> Step {
        let option = request.option
        let isSet = option == .setMetaContext
        if isSet {
            // A SET replaces the earlier selection, even when it fails.
            metaSelection = nil
            guard structuredReplies || extendedHeaders else {
                return Step(
                    replies: [
                        Self.error(option, .errorInvalid, "negotiate structured replies or extended headers first")
                    ],
                    action: .continue
                )
            }
        }
        let (parsed, export): (NBDMetaContextRequest, NBDExport)
        switch parseNamingExport(request, as: NBDMetaContextRequest.self) {
        case .found(let request, let named): (parsed, export) = (request, named)
        case .refused(let step): return step
        }
        let contexts = Self.matchContexts(parsed.queries, for: export, wildcards: !isSet)
        if isSet {
            metaSelection = MetaSelection(exportName: export.name, contexts: contexts)
        }
        var replies: [NBDServerMessage] = contexts.map { context in
            Self.reply(option, .metaContext(id: isSet ? context.id : 0, name: context.name))
        }
        replies.append(Self.reply(option, .ack))
        return Step(replies: replies, action: .continue)
    }

    /// The contexts of `export` that `queries` select, deduplicated, in first-match order.
    /// Zero queries select everything when listing and nothing when setting; unknown queries are ignored;
    /// `base:` and `qemu:` match every context of their namespace when listing.
    private static func matchContexts(_ queries: [String], for export: NBDExport, wildcards: Bool) -> [NBDMetaContext] {
        var offered: [NBDMetaContext] = [.baseAllocation]
        if export.offersAllocationDepth { offered.append(.qemuAllocationDepth) }
        if queries.isEmpty { return wildcards ? offered : [] }
        var selected: [NBDMetaContext] = []
        for query in queries {
            for context in offered where !selected.contains(context) {
                let exact = context.name.utf8.elementsEqual(query.utf8)
                let namespaceWildcard =
                    wildcards && query.utf8.last == UInt8(ascii: ":")
                    && query.utf8.elementsEqual(context.name.utf8.prefix(query.utf8.count))
                if exact || namespaceWildcard { selected.append(context) }
            }
        }
        return selected
    }

    // MARK: - Helpers

    /// The contexts the last SET_META_CONTEXT selected, if it named `export`.
    private func contexts(for export: NBDExport) -> [NBDMetaContext] {
        guard let selection = metaSelection, selection.exportName.utf8.elementsEqual(export.name.utf8) else {
            return []
        }
        return selection.contexts
    }

    private func makeSession(export: NBDExport, requestedBlockSize: Bool, enteredWith: NBDOption) -> NBDSession {
        NBDSession(
            export: export,
            structuredReplies: structuredReplies,
            extendedHeaders: extendedHeaders,
            metaContexts: self.contexts(for: export),
            clientNoZeroes: clientFlags.contains(.noZeroes),
            blockSize: self.configuration.blockSize,
            clientRequestedBlockSize: requestedBlockSize,
            tlsActive: tlsActive,
            enteredWith: enteredWith
        )
    }

    private mutating func finish(_ replies: [NBDServerMessage] = [], then action: Action) -> Step {
        state = .finished
        return Step(replies: replies, action: action)
    }

    private static func reply(_ option: NBDOption, _ body: NBDOptionReply.Body) -> NBDServerMessage {
        .optionReply(NBDOptionReply(option: option, body: body))
    }

    private static func error(_ option: NBDOption, _ type: NBDOptionReplyType, _ message: String) -> NBDServerMessage {
        .optionReply(NBDOptionReply(option: option, body: .error(type, message: message)))
    }
}
