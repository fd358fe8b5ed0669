public import NBD
import NIOCore
public import QED

/// Executes validated NBD transmission requests against one open ``QED/Disk`` and builds their replies.
///
/// Every method except ``readIfCached(_:session:)`` blocks on the engine: call them from a thread pool,
/// never from an event loop. One backend is shared by every connection of a server, so all connections
/// see one image and a FLUSH on any of them makes the completed writes of all of them durable (what
/// `CAN_MULTI_CONN` promises).
public final class NBDDiskBackend: Sendable {
    /// The disk served.
    public let disk: any Disk
    /// The policies applied to writes, trims and zeroes.
    public let options: NBDServerOptions
    /// QED cluster size in bytes (FAST_ZERO is only fast on whole clusters); 1 for raw disks.
    private let zeroGranularity: UInt64
    private let allocator = ByteBufferAllocator()

    /// Reads at least this long (bytes) are answered with `OFFSET_HOLE` chunks for their zero extents.
    static let sparseReadThreshold = 64 * 1024
    /// Smallest zero run (bytes) worth an `OFFSET_HOLE` chunk.
    static let minimumHoleLength: UInt64 = 4096

    /// Wraps an open disk.
    /// - Parameters:
    ///   - disk: The disk; the backend does not close it.
    ///   - options: Server policies (cache, discard, detect-zeroes).
    public init(disk: any Disk, options: NBDServerOptions) {
        self.disk = disk
        self.options = options
        zeroGranularity = disk.clusterSize ?? 1
    }

    /// The export this disk is offered as: its size, and the flags qemu-nbd advertises for the same setup
    /// (`0x0ced` writable, `0x048f` read-only, plus `CAN_MULTI_CONN` when several clients may connect).
    public var export: NBDExport {
        var flags: NBDTransmissionFlags = [.hasFlags, .sendFlush, .sendFUA, .sendDF, .sendCache]
        if self.disk.isReadOnly {
            flags.insert(.readOnly)
        } else {
            flags.formUnion([.sendTrim, .sendWriteZeroes, .sendFastZero])
        }
        if self.options.sharedClients != 1 { flags.insert(.canMultiConn) }
        return NBDExport(
            name: self.options.exportName,
            description: self.options.description,
            size: self.disk.virtualSize,
            flags: flags,
            offersAllocationDepth: self.options.allocationDepth
        )
    }

    /// Executes one request that ``NBD/NBDRequestValidator`` accepted and returns its complete reply, in
    /// the style the session negotiated. Engine failures become error replies; nothing is thrown.
    /// - Parameters:
    ///   - request: The request (DISC is not executed; it has no reply).
    ///   - session: The connection's negotiated state.
    /// - Returns: The reply messages to write, in order (empty for DISC).
    public func execute(_ request: NBDRequest, session: NBDSession) -> NBDReply {
        let header = request.header
        do {
            switch header.command {
            case .read:
                return try read(header, session: session)
            case .write:
                guard case .data(let payload) = request.payload else {
                    return .one(session.errorReply(to: header, .invalid, message: "WRITE without payload"))
                }
                try write(payload, header: header)
            case .flush:
                try self.disk.flush()
            case .trim:
                if self.options.discard == .unmap && header.length > 0 {
                    try self.disk.discard(at: header.offset, length: header.length)
                }
                try flushIfRequired(header)
            case .writeZeroes:
                if let rejection = try zeroes(header, session: session) { return rejection }
            case .blockStatus:
                return try blockStatus(request, session: session)
            case .cache:
                break  // A prefetch hint: the page cache and the L2 cache fill on the next read anyway.
            case .disconnect:
                return .none
            default:
                return .one(session.errorReply(to: header, .invalid, message: "unknown command \(header.command)"))
            }
            return .one(session.successReply(to: header))
        } catch {
            let (code, message) = Self.nbdError(for: error)
            return .one(session.errorReply(to: header, code, message: "\(header.command) failed: \(message)"))
        }
    }

    /// Answers a small READ at once if the disk can serve it without waiting for the disk (mapping
    /// cached, data in the page cache, no backing file involved); nil otherwise, and then the request
    /// goes through ``execute(_:session:)`` on the thread pool. Safe to call on an event loop: it
    /// never blocks on I/O. Only reads that get one reply chunk (shorter than
    /// ``sparseReadThreshold``) qualify.
    public func readIfCached(_ header: NBDRequestHeader, session: NBDSession) -> NBDReply? {
        guard header.command == .read, header.length > 0, header.length < UInt64(Self.sparseReadThreshold) else {
            return nil
        }
        let length = Int(header.length)  // below sparseReadThreshold
        var buffer = allocator.buffer(capacity: length)
        let served = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { space in
            self.disk.readIfCached(into: UnsafeMutableRawBufferPointer(rebasing: space[0..<length]), at: header.offset)
                ? length : 0
        }
        guard served == length else { return nil }
        return .one(session.readReply(to: header, data: buffer))
    }

    // MARK: - Commands

    private func read(_ header: NBDRequestHeader, session: NBDSession) throws -> NBDReply {
        // The validator bounds READ by the maximum payload (a UInt32); this only guards against a caller
        // that skipped it.
        guard let length = Int(exactly: header.length), header.length <= UInt64(UInt32.max) else {
            return .one(
                session.errorReply(to: header, .overflow, message: "READ of \(header.length) bytes is too long"))
        }
        var buffer = allocator.buffer(capacity: length)
        if length > 0 {
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { space in
                try self.disk.read(into: UnsafeMutableRawBufferPointer(rebasing: space[0..<length]), at: header.offset)
                return length
            }
        }
        guard session.structuredReplies, length >= Self.sparseReadThreshold,
            !header.flags.contains(.dontFragment)
        else {
            return .one(session.readReply(to: header, data: buffer))
        }
        return .many(try sparseReadChunks(header, data: buffer, session: session))
    }

    /// `OFFSET_DATA` and `OFFSET_HOLE` chunks for a read: holes where the engine reports zero extents and
    /// the bytes read are indeed zero (so a concurrent write can never be lost), data elsewhere.
    private func sparseReadChunks(
        _ header: NBDRequestHeader, data: ByteBuffer, session: NBDSession
    ) throws -> [NBDServerMessage] {
        let extents = try self.disk.extents(at: header.offset, length: header.length)
        var chunks: [NBDServerMessage] = []
        var dataStart = 0  // start (relative) of the pending data run
        func emitData(upTo end: Int) {
            guard end > dataStart, let slice = data.getSlice(at: data.readerIndex + dataStart, length: end - dataStart)
            else { return }
            let chunk = NBDStructuredReplyChunk(
                cookie: header.cookie,
                flags: [],
                content: .offsetData(offset: header.offset + UInt64(dataStart), data: slice)
            )
            chunks.append(session.message(chunk, answering: header))
        }
        let requestEnd = header.offset + header.length  // the validator checked it does not overflow
        for extent in extents where extent.zero && extent.length >= Self.minimumHoleLength {
            // Defensive clipping: the engine reports extents covering exactly the range asked for.
            guard extent.offset >= header.offset, extent.offset < requestEnd else { continue }
            let start = Int(extent.offset - header.offset)
            let end = Int(min(extent.offset + extent.length, requestEnd) - header.offset)
            guard start >= dataStart, Self.isZero(data, from: start, to: end) else { continue }
            emitData(upTo: start)
            let hole = NBDStructuredReplyChunk(
                cookie: header.cookie,
                flags: [],
                content: .offsetHole(offset: extent.offset, length: UInt32(end - start))
            )
            chunks.append(session.message(hole, answering: header))
            dataStart = end
        }
        emitData(upTo: data.readableBytes)
        chunks.append(session.message(.done(cookie: header.cookie), answering: header))
        return chunks
    }

    private func write(_ payload: ByteBuffer, header: NBDRequestHeader) throws {
        let detect = self.options.detectZeroes
        if detect != .off && payload.readableBytes > 0 && Self.isZero(payload, from: 0, to: payload.readableBytes) {
            let unmap = detect == .unmap && self.options.discard == .unmap
            try self.disk.writeZeroes(at: header.offset, length: header.length, unmap: unmap)
        } else {
            try payload.withUnsafeReadableBytes { bytes in
                try self.disk.write(bytes, at: header.offset)
            }
        }
        try flushIfRequired(header)
    }

    /// Executes WRITE_ZEROES; returns a reply only when FAST_ZERO refuses the request (engine errors
    /// are thrown, and ``execute(_:session:)`` answers them like any other command's).
    private func zeroes(_ header: NBDRequestHeader, session: NBDSession) throws -> NBDReply? {
        let length = header.length
        if header.flags.contains(.fastZero) && !zeroingIsFast(offset: header.offset, length: length) {
            return .one(
                session.errorReply(
                    to: header,
                    .notSupported,
                    message: "zeroing a range that is not cluster-aligned would write data"
                )
            )
        }
        if length > 0 {
            let unmap = !header.flags.contains(.noHole) && self.options.discard == .unmap
            try self.disk.writeZeroes(at: header.offset, length: length, unmap: unmap)
        }
        try flushIfRequired(header)
        return nil
    }

    /// Whether zeroing `[offset, offset+length)` only changes metadata or punches holes: for QED, when the
    /// range covers whole clusters (the end of the disk counts as a cluster boundary).
    private func zeroingIsFast(offset: UInt64, length: UInt64) -> Bool {
        let granularity = zeroGranularity
        guard granularity > 1 else { return true }
        let end = offset + length
        return offset % granularity == 0 && (end % granularity == 0 || end == self.disk.virtualSize)
    }

    /// One status chunk per selected context (or, with a BLOCK_STATUS payload, per context it names), over
    /// the request's effect length: `BLOCK_STATUS_EXT` with extended headers, so one reply may cover the
    /// whole export.
    private func blockStatus(_ request: NBDRequest, session: NBDSession) throws -> NBDReply {
        let header = request.header
        let length = request.effectLength
        var contexts = session.metaContexts
        if let payload = request.blockStatusPayload {
            contexts = payload.contextIDs.compactMap { session.metaContext(id: $0) }
        }
        let extents = try self.disk.extents(at: header.offset, length: length)
        let requestOne = header.flags.contains(.requestOne)
        var chunks: [NBDServerMessage] = []
        for (index, context) in contexts.enumerated() {
            let isFinal = index == contexts.count - 1
            let runs: [(length: UInt64, flags: UInt32)]
            if context.id == NBDMetaContext.qemuAllocationDepth.id {
                runs = extents.map { ($0.length, $0.present ? UInt32(clamping: $0.depth + 1) : 0) }
            } else {
                runs = extents.map { ($0.length, Self.allocationFlags($0)) }
            }
            guard
                let chunk = NBDBlockStatus.chunk(
                    cookie: header.cookie,
                    contextID: context.id,
                    runs: runs,
                    requestLength: length,
                    requestOne: requestOne,
                    isFinal: isFinal,
                    extended: session.extendedHeaders
                )
            else {
                return .one(session.errorReply(to: header, .io, message: "no extents for the requested range"))
            }
            chunks.append(session.message(chunk, answering: header))
        }
        return .many(chunks)
    }

    /// `base:allocation` flags of an extent: HOLE unless stored as data in some layer, ZERO when it reads
    /// as zeroes.
    static func allocationFlags(_ extent: Extent) -> UInt32 {
        (extent.data ? 0 : NBDExtent.stateHole) | (extent.zero ? NBDExtent.stateZero : 0)
    }

    private func flushIfRequired(_ header: NBDRequestHeader) throws {
        if header.flags.contains(.fua) || self.options.cache.flushesEveryWrite {
            try self.disk.flush()
        }
    }

    // MARK: - Helpers

    /// Whether the readable bytes `[from, to)` (relative to the reader index) of `buffer` are all zero.
    static func isZero(_ buffer: ByteBuffer, from: Int, to: Int) -> Bool {
        buffer.withUnsafeReadableBytes { bytes in
            guard from >= 0, to <= bytes.count, from <= to else { return false }
            return isAllZero(UnsafeRawBufferPointer(rebasing: bytes[from..<to]))
        }
    }

    /// The NBD error value and a message for an engine failure: out of space → ENOSPC, read-only → EPERM,
    /// closed → ESHUTDOWN, unsupported → ENOTSUP, a failed system call by its `errno`, anything else EIO.
    public static func nbdError(for error: any Error) -> (NBDError, String) {
        if let qed = error as? QEDError { return nbdError(forEngineError: qed) }
        return (.io, String(describing: error))
    }

    /// ``nbdError(for:)`` of an engine error. (A function of its own: with the cast and the
    /// `switch` in one function, Swift 6.3.1's optimizer crashes in release builds — CopyPropagation,
    /// "Found ownership error".)
    private static func nbdError(forEngineError qed: QEDError) -> (NBDError, String) {
        let code: NBDError
        switch qed.code {
        case .noSpace: code = .noSpace
        case .readOnly: code = .permissionDenied
        case .closed: code = .shutdown
        case .unsupported: code = .notSupported
        case .outOfRange, .invalidArgument: code = .invalid
        case .io: code = qed.errno.map { NBDError(errno: $0) } ?? .io
        default: code = .io
        }
        // errno values the protocol does not name map to EINVAL; an I/O failure should still read as EIO.
        return (code == .invalid && qed.code == .io ? .io : code, qed.message)
    }
}

/// The reply to one request: nothing (DISC), one message (the common case, no array), or several chunks.
public enum NBDReply: Sendable {
    /// No reply (DISC).
    case none
    /// One message.
    case one(NBDServerMessage)
    /// Several messages, written back to back.
    case many([NBDServerMessage])
}
