/// The outcome of checking a transmission request.
public enum NBDRequestVerdict: Hashable, Sendable {
    /// The request may be executed.
    case accept
    /// The request must be answered with this error without touching the export.
    case reject(NBDError)
}

/// The rule of ``NBDRequestValidator`` a rejected request broke (numbered as in its list), so a
/// server can say why without working it out again.
public enum NBDRequestRule: Hashable, Sendable {
    /// 1: an unknown command.
    case unknownCommand
    /// 2: an unknown flag, or one that does not apply to the command.
    case inapplicableFlag
    /// 3: a change to a read-only export.
    case readOnly
    /// 4: a flag or command the export did not advertise (or BLOCK_STATUS without a context).
    case notAdvertised
    /// 5: FLUSH with a range under ``NBDRequestValidator/strictFlush``.
    case flushRange
    /// 6: a payload too large that was discarded.
    case payloadDiscarded
    /// 6: longer than ``NBDRequestValidator/maximumPayloadLength``.
    case tooLong
    /// 6: BLOCK_STATUS of length 0.
    case emptyBlockStatus
    /// 6: a BLOCK_STATUS payload that is malformed or names a context that is not selected (or twice).
    case invalidBlockStatusPayload
    /// 7: offset + length overflows 64 bits.
    case overflow
    /// 7: ends past the end of the export.
    case pastEnd
    /// 8: offset or length not a multiple of the minimum block size.
    case misaligned
}

extension NBDRequest {
    /// The parsed payload of a BLOCK_STATUS sent with `NBD_CMD_FLAG_PAYLOAD_LEN`; nil for any other request
    /// or a malformed payload.
    public var blockStatusPayload: NBDBlockStatusPayload? {
        guard self.header.command == .blockStatus, self.header.flags.contains(.payloadLength),
            case .data(let bytes) = self.payload
        else { return nil }
        return NBDBlockStatusPayload(parsing: bytes)
    }

    /// How much of the export the request covers, in bytes: the effect length from a BLOCK_STATUS payload
    /// when there is one (0 if it is malformed), otherwise the header's length.
    public var effectLength: UInt64 {
        if self.header.command == .blockStatus && self.header.flags.contains(.payloadLength) {
            return blockStatusPayload?.effectLength ?? 0
        }
        return self.header.length
    }
}

/// Checks transmission requests against the negotiated state before they reach the storage. Pure and
/// cheap; one value per connection.
///
/// Lengths are 64-bit: with extended headers TRIM, WRITE_ZEROES, CACHE and BLOCK_STATUS may cover more than
/// 4 GiB; only the payload-carrying commands (READ's reply, WRITE) are bounded by the maximum payload.
///
/// Rules, in the order applied (first failure wins):
/// 1. unknown command (including RESIZE) → EINVAL;
/// 2. unknown flag, or a flag that does not apply to the command (`NO_HOLE`/`FAST_ZERO` outside WRITE_ZEROES,
///    `DF` outside READ, `REQ_ONE` outside BLOCK_STATUS, `PAYLOAD_LEN` with compact headers or outside WRITE
///    and BLOCK_STATUS) → EINVAL (an extended WRITE without `PAYLOAD_LEN` is accepted: QEMU 10 sends those);
/// 3. WRITE/TRIM/WRITE_ZEROES on a read-only export → EPERM (even though such an export advertises
///    neither TRIM nor WRITE_ZEROES);
/// 4. a flag or command the export did not advertise (`FUA` without `SEND_FUA`, `DF` without `SEND_DF`,
///    `FAST_ZERO` without `SEND_FAST_ZERO`, `PAYLOAD_LEN` on BLOCK_STATUS without `BLOCK_STATUS_PAYLOAD`,
///    FLUSH/TRIM/WRITE_ZEROES without their flag, any flag on CACHE without `SEND_CACHE`, BLOCK_STATUS without
///    chunked replies or without a selected context) → EINVAL; CACHE itself is accepted even when not
///    advertised, as some clients send it anyway;
/// 5. DISC is always accepted (it is never answered); FLUSH ignores offset and length unless
///    ``strictFlush`` is set (then non-zero → EINVAL);
/// 6. a payload that was discarded as too large → EINVAL; READ or WRITE longer than ``maximumPayloadLength``
///    → EINVAL with compact headers, EOVERFLOW for an extended READ (the protocol's hint to retry smaller);
///    CACHE longer than that with compact headers → EINVAL (as qemu); BLOCK_STATUS of effect length 0, or
///    with a payload that is malformed or names contexts not selected (or one twice) → EINVAL;
/// 7. offset + effect length overflowing 64 bits → EINVAL; past the end of the export → ENOSPC for WRITE and
///    WRITE_ZEROES, EINVAL otherwise;
/// 8. offset or effect length not a multiple of the minimum block size (when it is above 1) → EINVAL.
///
/// Whether a request's header form (compact or extended) matches the negotiation is not a rule here: a
/// mismatch means the two sides disagree on framing, and ``matchesHeaderStyle(_:)`` lets the server drop
/// the connection.
public struct NBDRequestValidator: Hashable, Sendable {
    /// Export size in bytes.
    public var exportSize: UInt64
    /// Transmission flags sent to the client.
    public var transmissionFlags: NBDTransmissionFlags
    /// Whether replies are chunked (structured replies or extended headers).
    public var structuredReplies: Bool
    /// Whether extended headers were negotiated.
    public var extendedHeaders: Bool
    /// The ids of the selected metadata contexts.
    public var metaContextIDs: [UInt32]
    /// Largest READ/WRITE payload accepted, in bytes (and CACHE length with compact headers).
    public var maximumPayloadLength: UInt32
    /// Required alignment of offsets and lengths, in bytes (1 = none).
    public var minimumBlockSize: UInt32
    /// Whether FLUSH must carry offset 0 and length 0 (the spec's MUST); off by default, like qemu.
    public var strictFlush: Bool

    /// Whether at least one metadata context is selected.
    public var hasMetaContexts: Bool { !self.metaContextIDs.isEmpty }

    /// Creates a validator from explicit values.
    /// - Parameters:
    ///   - exportSize: Export size in bytes.
    ///   - transmissionFlags: Flags advertised.
    ///   - structuredReplies: Whether replies are chunked.
    ///   - extendedHeaders: Whether extended headers are on; false by default.
    ///   - hasMetaContexts: Whether a metadata context is selected (`base:allocation`, id 0), when
    ///     `metaContextIDs` is not given.
    ///   - metaContextIDs: The selected context ids; overrides `hasMetaContexts`.
    ///   - maximumPayloadLength: Largest payload in bytes; 32 MiB by default.
    ///   - minimumBlockSize: Alignment in bytes; 1 by default.
    ///   - strictFlush: Whether to reject FLUSH with a non-zero range.
    public init(
        exportSize: UInt64,
        transmissionFlags: NBDTransmissionFlags,
        structuredReplies: Bool,
        extendedHeaders: Bool = false,
        hasMetaContexts: Bool,
        metaContextIDs: [UInt32]? = nil,
        maximumPayloadLength: UInt32 = UInt32(NBD.defaultMaximumPayloadLength),
        minimumBlockSize: UInt32 = 1,
        strictFlush: Bool = false
    ) {
        self.exportSize = exportSize
        self.transmissionFlags = transmissionFlags
        self.structuredReplies = structuredReplies || extendedHeaders
        self.extendedHeaders = extendedHeaders
        self.metaContextIDs = metaContextIDs ?? (hasMetaContexts ? [NBDMetaContext.baseAllocation.id] : [])
        self.maximumPayloadLength = maximumPayloadLength
        self.minimumBlockSize = minimumBlockSize
        self.strictFlush = strictFlush
    }

    /// Creates a validator for a negotiated session.
    /// - Parameters:
    ///   - session: The state negotiated by ``NBDNegotiation``.
    ///   - strictFlush: Whether to reject FLUSH with a non-zero range.
    public init(session: NBDSession, strictFlush: Bool = false) {
        self.init(
            exportSize: session.export.size,
            transmissionFlags: session.transmissionFlags,
            structuredReplies: session.structuredReplies,
            extendedHeaders: session.extendedHeaders,
            hasMetaContexts: !session.metaContexts.isEmpty,
            metaContextIDs: session.metaContexts.map(\.id),
            maximumPayloadLength: session.blockSize.maximum,
            minimumBlockSize: session.blockSize.minimum,
            strictFlush: strictFlush
        )
    }

    /// Whether `header` came in the form the session uses (extended exactly when extended headers were
    /// negotiated). A mismatch is a framing violation: drop the connection.
    public func matchesHeaderStyle(_ header: NBDRequestHeader) -> Bool {
        header.isExtended == self.extendedHeaders
    }

    /// Checks a decoded request (including whether its payload was discarded).
    /// - Parameter request: The request.
    public func validate(_ request: NBDRequest) -> NBDRequestVerdict {
        if let (error, _) = rejection(of: request) { return .reject(error) }
        return .accept
    }

    /// Checks a request header alone (no payload: a BLOCK_STATUS with `PAYLOAD_LEN` is judged on its header).
    /// - Parameters:
    ///   - header: The request header.
    ///   - payloadDiscarded: Whether the decoder discarded the payload as too large.
    public func validate(_ header: NBDRequestHeader, payloadDiscarded: Bool = false) -> NBDRequestVerdict {
        let request = NBDRequest(header: header, payload: payloadDiscarded ? .discarded(length: header.length) : .none)
        return validate(request)
    }

    /// The error to answer a request with and the rule it broke, or nil when it may be executed.
    /// - Parameter request: The request (including whether its payload was discarded).
    public func rejection(of request: NBDRequest) -> (error: NBDError, rule: NBDRequestRule)? {
        check(request)
    }

    private static let knownFlags: NBDCommandFlags = [
        .fua, .noHole, .dontFragment, .requestOne, .fastZero, .payloadLength,
    ]

    private func check(_ request: NBDRequest) -> (NBDError, NBDRequestRule)? {
        let header = request.header
        let command = header.command
        let flags = header.flags
        let advertised = self.transmissionFlags

        // 1. Known command?
        var commandSpecificFlags: NBDCommandFlags
        switch command {
        case .read: commandSpecificFlags = .dontFragment
        case .writeZeroes: commandSpecificFlags = [.noHole, .fastZero]
        case .blockStatus: commandSpecificFlags = [.requestOne, .payloadLength]
        case .write: commandSpecificFlags = .payloadLength
        case .disconnect, .flush, .trim, .cache: commandSpecificFlags = []
        default: return (.invalid, .unknownCommand)
        }
        if !header.isExtended { commandSpecificFlags.remove(.payloadLength) }

        // 2. Known, applicable flags?
        guard Self.knownFlags.isSuperset(of: flags), flags.subtracting(.fua).isSubset(of: commandSpecificFlags) else {
            return (.invalid, .inapplicableFlag)
        }

        // 3. Read-only? Checked before the advertised features: a read-only export advertises neither TRIM
        //    nor WRITE_ZEROES, yet changing it is a permission problem, not an invalid request (as qemu).
        if advertised.contains(.readOnly) && (command == .write || command == .trim || command == .writeZeroes) {
            return (.permissionDenied, .readOnly)
        }

        // 4. Advertised?
        let notAdvertised: (NBDError, NBDRequestRule) = (.invalid, .notAdvertised)
        if flags.contains(.fua) && !advertised.contains(.sendFUA) { return notAdvertised }
        if flags.contains(.dontFragment) && !advertised.contains(.sendDF) { return notAdvertised }
        if flags.contains(.fastZero) && !advertised.contains(.sendFastZero) { return notAdvertised }
        switch command {
        case .flush where !advertised.contains(.sendFlush): return notAdvertised
        case .trim where !advertised.contains(.sendTrim): return notAdvertised
        case .writeZeroes where !advertised.contains(.sendWriteZeroes): return notAdvertised
        case .cache where !flags.isEmpty && !advertised.contains(.sendCache): return notAdvertised
        case .blockStatus where !self.structuredReplies || !self.hasMetaContexts: return notAdvertised
        case .blockStatus where flags.contains(.payloadLength) && !advertised.contains(.blockStatusPayload):
            return notAdvertised
        default: break
        }

        // 5. Commands without a range.
        if command == .disconnect { return nil }
        if command == .flush {
            if self.strictFlush && (header.offset != 0 || header.length != 0) { return (.invalid, .flushRange) }
            return nil
        }

        // 6. Lengths.
        if request.isOversized { return (.invalid, .payloadDiscarded) }
        let maximum = UInt64(self.maximumPayloadLength)
        switch command {
        case .read where header.length > maximum:
            return (header.isExtended ? .overflow : .invalid, .tooLong)
        case .write where header.length > maximum,
            .cache where !header.isExtended && header.length > maximum:
            return (.invalid, .tooLong)
        default: break
        }
        if command == .blockStatus && flags.contains(.payloadLength) {
            guard let payload = request.blockStatusPayload,
                payload.contextIDs.allSatisfy(self.metaContextIDs.contains)
            else { return (.invalid, .invalidBlockStatusPayload) }
        }
        let length = request.effectLength
        if command == .blockStatus && length == 0 { return (.invalid, .emptyBlockStatus) }

        // 7. Bounds, without overflow.
        let (end, overflow) = header.offset.addingReportingOverflow(length)
        if overflow { return (.invalid, .overflow) }
        if end > self.exportSize {
            return ((command == .write || command == .writeZeroes) ? .noSpace : .invalid, .pastEnd)
        }

        // 8. Alignment.
        if self.minimumBlockSize > 1 {
            let alignment = UInt64(self.minimumBlockSize)
            if header.offset % alignment != 0 || length % alignment != 0 { return (.invalid, .misaligned) }
        }
        return nil
    }
}
