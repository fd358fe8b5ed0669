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
    /// 6: a WRITE whose payload was too large and discarded.
    case payloadDiscarded
    /// 6: longer than ``NBDRequestValidator/maximumPayloadLength``.
    case tooLong
    /// 6: BLOCK_STATUS of length 0.
    case emptyBlockStatus
    /// 7: offset + length overflows 64 bits.
    case overflow
    /// 7: ends past the end of the export.
    case pastEnd
    /// 8: offset or length not a multiple of the minimum block size.
    case misaligned
}

/// Checks transmission requests against the negotiated state before they reach the storage. Pure and
/// cheap; one value per connection.
///
/// Rules, in the order applied (first failure wins):
/// 1. unknown command (including RESIZE) → EINVAL;
/// 2. unknown flag, or a flag that does not apply to the command (`NO_HOLE`/`FAST_ZERO` outside WRITE_ZEROES,
///    `DF` outside READ, `REQ_ONE` outside BLOCK_STATUS, `PAYLOAD_LEN`) → EINVAL;
/// 3. WRITE/TRIM/WRITE_ZEROES on a read-only export → EPERM (even though such an export advertises
///    neither TRIM nor WRITE_ZEROES);
/// 4. a flag or command the export did not advertise (`FUA` without `SEND_FUA`, `DF` without `SEND_DF`,
///    `FAST_ZERO` without `SEND_FAST_ZERO`, FLUSH/TRIM/WRITE_ZEROES without their flag, any flag on CACHE
///    without `SEND_CACHE`, BLOCK_STATUS without structured replies or without a selected context) → EINVAL;
///    CACHE itself is accepted even when not advertised, as some clients send it anyway;
/// 5. DISC is always accepted (it is never answered); FLUSH ignores offset and length unless
///    ``strictFlush`` is set (then non-zero → EINVAL);
/// 6. READ, WRITE or CACHE longer than ``maximumPayloadLength``, or a WRITE whose payload was discarded → EINVAL;
///    BLOCK_STATUS of length 0 → EINVAL;
/// 7. offset + length overflowing 64 bits → EINVAL; past the end of the export → ENOSPC for WRITE and
///    WRITE_ZEROES, EINVAL otherwise;
/// 8. offset or length not a multiple of the minimum block size (when it is above 1) → EINVAL.
public struct NBDRequestValidator: Hashable, Sendable {
    /// Export size in bytes.
    public var exportSize: UInt64
    /// Transmission flags sent to the client.
    public var transmissionFlags: NBDTransmissionFlags
    /// Whether structured replies were negotiated.
    public var structuredReplies: Bool
    /// Whether at least one metadata context is selected.
    public var hasMetaContexts: Bool
    /// Largest READ/WRITE/CACHE length accepted, in bytes.
    public var maximumPayloadLength: UInt32
    /// Required alignment of offsets and lengths, in bytes (1 = none).
    public var minimumBlockSize: UInt32
    /// Whether FLUSH must carry offset 0 and length 0 (the spec's MUST); off by default, like qemu.
    public var strictFlush: Bool

    /// Creates a validator from explicit values.
    /// - Parameters:
    ///   - exportSize: Export size in bytes.
    ///   - transmissionFlags: Flags advertised.
    ///   - structuredReplies: Whether structured replies are on.
    ///   - hasMetaContexts: Whether a metadata context is selected.
    ///   - maximumPayloadLength: Largest payload in bytes; 32 MiB by default.
    ///   - minimumBlockSize: Alignment in bytes; 1 by default.
    ///   - strictFlush: Whether to reject FLUSH with a non-zero range.
    public init(
        exportSize: UInt64,
        transmissionFlags: NBDTransmissionFlags,
        structuredReplies: Bool,
        hasMetaContexts: Bool,
        maximumPayloadLength: UInt32 = UInt32(NBD.defaultMaximumPayloadLength),
        minimumBlockSize: UInt32 = 1,
        strictFlush: Bool = false
    ) {
        self.exportSize = exportSize
        self.transmissionFlags = transmissionFlags
        self.structuredReplies = structuredReplies
        self.hasMetaContexts = hasMetaContexts
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
            hasMetaContexts: !session.metaContexts.isEmpty,
            maximumPayloadLength: session.blockSize.maximum,
            minimumBlockSize: session.blockSize.minimum,
            strictFlush: strictFlush
        )
    }

    /// Checks a decoded request (including whether its WRITE payload was discarded).
    /// - Parameter request: The request.
    public func validate(_ request: NBDRequest) -> NBDRequestVerdict {
        self.validate(request.header, payloadDiscarded: request.isOversized)
    }

    /// Checks a request header.
    /// - Parameters:
    ///   - header: The request header.
    ///   - payloadDiscarded: Whether the decoder discarded the WRITE payload as too large.
    public func validate(_ header: NBDRequestHeader, payloadDiscarded: Bool = false) -> NBDRequestVerdict {
        if let (error, _) = self.check(header, payloadDiscarded: payloadDiscarded) { return .reject(error) }
        return .accept
    }

    /// The error to answer a request with and the rule it broke, or nil when it may be executed.
    /// - Parameter request: The request (including whether its WRITE payload was discarded).
    public func rejection(of request: NBDRequest) -> (error: NBDError, rule: NBDRequestRule)? {
        self.check(request.header, payloadDiscarded: request.isOversized)
    }

    private static let knownFlags: NBDCommandFlags = [.fua, .noHole, .dontFragment, .requestOne, .fastZero]

    private func check(_ header: NBDRequestHeader, payloadDiscarded: Bool) -> (NBDError, NBDRequestRule)? {
        let command = header.command
        let flags = header.flags
        let advertised = self.transmissionFlags

        // 1. Known command?
        let commandSpecificFlags: NBDCommandFlags
        switch command {
        case .read: commandSpecificFlags = .dontFragment
        case .writeZeroes: commandSpecificFlags = [.noHole, .fastZero]
        case .blockStatus: commandSpecificFlags = .requestOne
        case .write, .disconnect, .flush, .trim, .cache: commandSpecificFlags = []
        default: return (.invalid, .unknownCommand)
        }

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
        default: break
        }

        // 5. Commands without a range.
        if command == .disconnect { return nil }
        if command == .flush {
            if self.strictFlush && (header.offset != 0 || header.length != 0) { return (.invalid, .flushRange) }
            return nil
        }

        // 6. Lengths.
        if command == .write && payloadDiscarded { return (.invalid, .payloadDiscarded) }
        if (command == .read || command == .write || command == .cache) && header.length > self.maximumPayloadLength {
            return (.invalid, .tooLong)
        }
        if command == .blockStatus && header.length == 0 { return (.invalid, .emptyBlockStatus) }

        // 7. Bounds, without overflow.
        let (end, overflow) = header.offset.addingReportingOverflow(UInt64(header.length))
        if overflow { return (.invalid, .overflow) }
        if end > self.exportSize {
            return ((command == .write || command == .writeZeroes) ? .noSpace : .invalid, .pastEnd)
        }

        // 8. Alignment.
        if self.minimumBlockSize > 1 {
            let alignment = UInt64(self.minimumBlockSize)
            if header.offset % alignment != 0 || UInt64(header.length) % alignment != 0 { return (.invalid, .misaligned) }
        }
        return nil
    }
}
