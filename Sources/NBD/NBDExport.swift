/// One export the server offers, as the negotiation sees it.
public struct NBDExport: Hashable, Sendable {
    /// The export name clients ask for (may be empty).
    public var name: String
    /// Human-readable text sent in `NBD_REP_SERVER` and `NBD_INFO_DESCRIPTION`; `nil` or empty for none.
    public var description: String?
    /// Export size in bytes.
    public var size: UInt64
    /// The features this export supports (`READ_ONLY`, `SEND_FLUSH`, `SEND_FUA`, `SEND_TRIM`,
    /// `SEND_WRITE_ZEROES`, `SEND_FAST_ZERO`, `SEND_DF`, `SEND_CACHE`, `CAN_MULTI_CONN`, `ROTATIONAL`).
    /// ``NBDNegotiation`` derives the flags actually sent from these (see ``NBDSession/transmissionFlags``).
    public var flags: NBDTransmissionFlags
    /// Whether the `qemu:allocation-depth` metadata context (id 1) is offered besides `base:allocation` (id 0).
    public var offersAllocationDepth: Bool

    /// Creates an export description.
    /// - Parameters:
    ///   - name: Export name.
    ///   - description: Optional human-readable description.
    ///   - size: Size in bytes.
    ///   - flags: Supported features.
    ///   - offersAllocationDepth: Whether to offer `qemu:allocation-depth`.
    public init(
        name: String,
        description: String? = nil,
        size: UInt64,
        flags: NBDTransmissionFlags,
        offersAllocationDepth: Bool = false
    ) {
        self.name = name
        self.description = description
        self.size = size
        self.flags = flags
        self.offersAllocationDepth = offersAllocationDepth
    }

    /// The transmission flags to advertise for this export given what was negotiated: `HAS_FLAGS` is added;
    /// `SEND_DF` is removed unless replies are chunked (structured replies or extended headers);
    /// `SEND_FAST_ZERO` is removed without `SEND_WRITE_ZEROES`; `SEND_RESIZE` (unsupported here) is removed;
    /// `BLOCK_STATUS_PAYLOAD` is set exactly when extended headers are on and a metadata context is selected.
    /// - Parameters:
    ///   - structuredReplies: Whether replies are chunked (structured replies or extended headers).
    ///   - extendedHeaders: Whether extended headers were negotiated.
    ///   - hasMetaContexts: Whether at least one metadata context is selected for this export.
    public func advertisedFlags(
        structuredReplies: Bool,
        extendedHeaders: Bool = false,
        hasMetaContexts: Bool = false
    ) -> NBDTransmissionFlags {
        var flags = self.flags
        flags.insert(.hasFlags)
        flags.remove(.sendResize)
        flags.remove(.blockStatusPayload)
        if !(structuredReplies || extendedHeaders) { flags.remove(.sendDF) }
        if !flags.contains(.sendWriteZeroes) { flags.remove(.sendFastZero) }
        if extendedHeaders && hasMetaContexts { flags.insert(.blockStatusPayload) }
        return flags
    }
}

/// A metadata context a client can select for `NBD_CMD_BLOCK_STATUS`.
public struct NBDMetaContext: Hashable, Sendable {
    /// The context id used in BLOCK_STATUS chunks.
    public var id: UInt32
    /// The full context name, e.g. `"base:allocation"`.
    public var name: String

    /// Creates a context.
    /// - Parameters:
    ///   - id: Context id.
    ///   - name: Context name.
    public init(id: UInt32, name: String) {
        self.id = id
        self.name = name
    }

    /// `base:allocation` (id 0): bit 0 hole, bit 1 reads as zero.
    public static let baseAllocation = NBDMetaContext(id: 0, name: "base:allocation")
    /// `qemu:allocation-depth` (id 1): the backing-chain depth at which each extent is allocated (0 = none).
    public static let qemuAllocationDepth = NBDMetaContext(id: 1, name: "qemu:allocation-depth")
}

/// Whether and how TLS is used during negotiation.
public enum NBDTLSMode: Hashable, Sendable {
    /// TLS is not available: `NBD_OPT_STARTTLS` is answered with `NBD_REP_ERR_POLICY` (NOTLS mode).
    case disabled
    /// TLS is available but not required.
    case optional
    /// TLS is mandatory (FORCEDTLS mode): every option but `STARTTLS` is answered with `NBD_REP_ERR_TLS_REQD`
    /// until TLS is up, and `EXPORT_NAME` before TLS closes the connection.
    case required
}

/// What the negotiation needs to know about the server.
public struct NBDServerConfiguration: Hashable, Sendable {
    /// The exports offered, in LIST order.
    public var exports: [NBDExport]
    /// TLS policy.
    public var tls: NBDTLSMode
    /// Block size constraints sent in every INFO/GO answer; the maximum is also the largest READ/WRITE
    /// payload accepted in transmission.
    public var blockSize: NBDBlockSizeConstraints
    /// Whether `NBD_OPT_EXTENDED_HEADERS` is accepted (otherwise it is answered `NBD_REP_ERR_UNSUP` and every
    /// session keeps compact headers).
    public var offersExtendedHeaders: Bool

    /// Creates a configuration.
    /// - Parameters:
    ///   - exports: Exports offered. An empty export name from a client selects the export named `""`, or the
    ///     first export if none has that name.
    ///   - tls: TLS policy; ``NBDTLSMode/disabled`` by default.
    ///   - blockSize: Block size constraints; 1 / 4096 / 32 MiB by default.
    ///   - offersExtendedHeaders: Whether extended headers may be negotiated; true by default.
    public init(
        exports: [NBDExport],
        tls: NBDTLSMode = .disabled,
        blockSize: NBDBlockSizeConstraints = .default,
        offersExtendedHeaders: Bool = true
    ) {
        self.exports = exports
        self.tls = tls
        self.blockSize = blockSize
        self.offersExtendedHeaders = offersExtendedHeaders
    }

    /// The export a client means by `name`: an exact (byte-wise) match, else for the empty name the first export.
    /// - Parameter name: The name sent by the client.
    public func export(named name: String) -> NBDExport? {
        if let exact = self.exports.first(where: { $0.name.utf8.elementsEqual(name.utf8) }) { return exact }
        if name.isEmpty { return self.exports.first }
        return nil
    }
}

/// The state negotiated for one connection, handed to the transmission phase.
public struct NBDSession: Hashable, Sendable {
    /// The export selected.
    public var export: NBDExport
    /// Whether replies are chunks: structured replies or extended headers were negotiated (READ must then be
    /// answered with chunks).
    public var structuredReplies: Bool
    /// Whether extended headers were negotiated: requests and reply chunks use the 32-byte headers, no simple
    /// replies are sent, and block status uses `NBD_REPLY_TYPE_BLOCK_STATUS_EXT`.
    public var extendedHeaders: Bool
    /// The metadata contexts selected for this export with SET_META_CONTEXT, in reply order.
    public var metaContexts: [NBDMetaContext]
    /// Whether the client set `NBD_FLAG_C_NO_ZEROES`.
    public var clientNoZeroes: Bool
    /// The block size constraints advertised.
    public var blockSize: NBDBlockSizeConstraints
    /// Whether the client asked for `NBD_INFO_BLOCK_SIZE` in GO (and so promised to honour it).
    public var clientRequestedBlockSize: Bool
    /// Whether the session runs over TLS.
    public var tlsActive: Bool
    /// The option that entered transmission: ``NBDOption/go`` or ``NBDOption/exportName``.
    public var enteredWith: NBDOption

    /// The transmission flags sent to the client: the export's, for what was negotiated
    /// (``NBDExport/advertisedFlags(structuredReplies:extendedHeaders:hasMetaContexts:)``).
    public var transmissionFlags: NBDTransmissionFlags {
        self.export.advertisedFlags(
            structuredReplies: self.structuredReplies,
            extendedHeaders: self.extendedHeaders,
            hasMetaContexts: !self.metaContexts.isEmpty
        )
    }

    /// Creates a session (normally produced by ``NBDNegotiation``; public for tests and custom servers).
    /// - Parameters:
    ///   - export: The export.
    ///   - structuredReplies: Whether replies are chunked (forced on by `extendedHeaders`).
    ///   - extendedHeaders: Whether extended headers are on; false by default.
    ///   - metaContexts: Selected metadata contexts.
    ///   - clientNoZeroes: Whether the client set `NO_ZEROES`.
    ///   - blockSize: Block size constraints.
    ///   - clientRequestedBlockSize: Whether the client asked for block sizes.
    ///   - tlsActive: Whether TLS is on.
    ///   - enteredWith: The option that entered transmission.
    public init(
        export: NBDExport,
        structuredReplies: Bool,
        extendedHeaders: Bool = false,
        metaContexts: [NBDMetaContext] = [],
        clientNoZeroes: Bool = false,
        blockSize: NBDBlockSizeConstraints = .default,
        clientRequestedBlockSize: Bool = false,
        tlsActive: Bool = false,
        enteredWith: NBDOption = .go
    ) {
        self.export = export
        self.structuredReplies = structuredReplies || extendedHeaders
        self.extendedHeaders = extendedHeaders
        self.metaContexts = metaContexts
        self.clientNoZeroes = clientNoZeroes
        self.blockSize = blockSize
        self.clientRequestedBlockSize = clientRequestedBlockSize
        self.tlsActive = tlsActive
        self.enteredWith = enteredWith
    }

    /// The selected context with `id`, if any.
    /// - Parameter id: A context id.
    public func metaContext(id: UInt32) -> NBDMetaContext? {
        self.metaContexts.first { $0.id == id }
    }
}
