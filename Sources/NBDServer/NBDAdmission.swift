/// Who may connect and who may use the export: the bookkeeping behind `-e` and the listener's pause,
/// as a value with no I/O (``NBDServer`` keeps it under its lock; tests drive it directly).
///
/// Two separate limits:
/// - ``transmissionLimit`` (`-e`) counts connections in the transmission phase, the ones using the
///   export. A connection that finishes negotiating while that many are in transmission *waits* for a
///   slot: the server holds its reply to `NBD_OPT_GO`/`NBD_OPT_EXPORT_NAME` until one leaves, first
///   come first served.
/// - ``negotiationLimit`` counts connections that have not entered transmission (still negotiating, or
///   waiting for a slot). At that many the server stops accepting, and new connections wait in the
///   listen queue; the handshake limit (``NBDServerOptions/handshakeLimit``) bounds how long an idle one
///   can hold its place.
///
/// So connections that never negotiate cannot lock out a client that does: they take no `-e` slot.
///
/// `Grant` is what the owner needs to tell a waiting connection that its slot came (the server uses a
/// closure that hops to the connection's event loop); it is returned, never called, so the owner calls
/// it outside its lock.
struct NBDAdmission<Grant> {
    /// Where one connection stands.
    enum Stage: Equatable {
        /// Accepted, negotiating.
        case negotiating
        /// Finished negotiating, waiting for a transmission slot.
        case waiting
        /// In the transmission phase: holds a slot.
        case transmitting
    }

    /// Connections allowed in the transmission phase at once; 0 means no limit.
    let transmissionLimit: Int
    /// Connections allowed to be negotiating or waiting at once (at least 1).
    let negotiationLimit: Int

    private var stages: [ObjectIdentifier: Stage] = [:]
    /// Waiting connections in arrival order.
    private var waiters: [(id: ObjectIdentifier, grant: Grant)] = []
    /// Connections negotiating or waiting.
    private(set) var notTransmitting = 0
    /// Connections in the transmission phase.
    private(set) var transmitting = 0

    /// - Parameters:
    ///   - transmissionLimit: Connections in transmission at once (`-e`); 0 means no limit.
    ///   - negotiationLimit: Connections not yet in transmission at once; values below 1 count as 1.
    init(transmissionLimit: Int, negotiationLimit: Int) {
        self.transmissionLimit = max(0, transmissionLimit)
        self.negotiationLimit = max(1, negotiationLimit)
    }

    /// Whether the listener should accept another connection now.
    var acceptsConnections: Bool { notTransmitting < self.negotiationLimit }

    /// Whether no connection is known.
    var isEmpty: Bool { stages.isEmpty }

    /// The stage of a connection, or nil if it is not known (never admitted, or removed).
    func stage(of id: ObjectIdentifier) -> Stage? { stages[id] }

    /// Records an accepted connection as negotiating. The caller accepts only while
    /// ``acceptsConnections``; a connection accepted past the limit is still counted (the listener's pause
    /// is what enforces the limit), so the count is never wrong.
    mutating func admit(_ id: ObjectIdentifier) {
        guard stages[id] == nil else { return }
        stages[id] = .negotiating
        notTransmitting += 1
    }

    /// A negotiating connection asks for a transmission slot.
    /// - Returns: true if it got one now; false if it waits (then `grant` comes back from a later
    ///   ``remove(_:)``), or if the connection is not negotiating (unknown, or asked twice).
    mutating func requestTransmission(_ id: ObjectIdentifier, grant: Grant) -> Bool {
        guard stages[id] == .negotiating else { return false }
        if waiters.isEmpty && hasFreeSlot {
            stages[id] = .transmitting
            notTransmitting -= 1
            transmitting += 1
            return true
        }
        stages[id] = .waiting
        waiters.append((id, grant))
        return false
    }

    /// Forgets a closed connection.
    /// - Returns: The grants of waiting connections that got the slots it freed, in order; the caller
    ///   must deliver them (those connections already count as transmitting).
    mutating func remove(_ id: ObjectIdentifier) -> [Grant] {
        guard let stage = stages.removeValue(forKey: id) else { return [] }
        switch stage {
        case .negotiating:
            notTransmitting -= 1
            return []
        case .waiting:
            notTransmitting -= 1
            waiters.removeAll { $0.id == id }
            return []
        case .transmitting:
            transmitting -= 1
            var granted: [Grant] = []
            while hasFreeSlot, !waiters.isEmpty {
                let next = waiters.removeFirst()
                stages[next.id] = .transmitting
                notTransmitting -= 1
                transmitting += 1
                granted.append(next.grant)
            }
            return granted
        }
    }

    private var hasFreeSlot: Bool { self.transmissionLimit == 0 || transmitting < self.transmissionLimit }
}

extension NBDAdmission: Sendable where Grant: Sendable {}
