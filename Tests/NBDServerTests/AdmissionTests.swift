import Testing

@testable import NBDServer

/// `-e` slots and the cap on connections still negotiating, as ``NBDAdmission`` counts them.
@Suite struct AdmissionTests {
    /// A fake connection: only its identity matters.
    final class Connection {
        var id: ObjectIdentifier { ObjectIdentifier(self) }
    }

    /// The admission under test, by reference so `#expect` can call its mutating methods; grants are
    /// plain names.
    final class Server {
        var admission: NBDAdmission<String>

        init(limit: Int, negotiating: Int = 16) {
            self.admission = NBDAdmission(transmissionLimit: limit, negotiationLimit: negotiating)
        }

        func admit(_ connections: Connection...) {
            for connection in connections { self.admission.admit(connection.id) }
        }

        func request(_ connection: Connection, _ name: String) -> Bool {
            self.admission.requestTransmission(connection.id, grant: name)
        }

        func remove(_ connection: Connection) -> [String] { self.admission.remove(connection.id) }

        func stage(_ connection: Connection) -> NBDAdmission<String>.Stage? { self.admission.stage(of: connection.id) }
    }

    @Test func idleConnectionsTakeNoSlot() {
        let server = Server(limit: 2)
        let (idle1, idle2, client) = (Connection(), Connection(), Connection())
        server.admit(idle1, idle2, client)
        #expect(server.request(client, "client"))
        #expect(server.stage(client) == .transmitting)
        #expect(server.admission.transmitting == 1 && server.admission.notTransmitting == 2)
    }

    /// One `-e 1` slot taken by `a`, with `b` then `c` waiting for it.
    func oneServedTwoWaiting(
        sourceLocation: SourceLocation = #_sourceLocation
    )
        -> (server: Server, a: Connection, b: Connection, c: Connection)
    {
        let server = Server(limit: 1)
        let (a, b, c) = (Connection(), Connection(), Connection())
        server.admit(a, b, c)
        #expect(server.request(a, "a"), sourceLocation: sourceLocation)
        #expect(!server.request(b, "b"), sourceLocation: sourceLocation)
        #expect(!server.request(c, "c"), sourceLocation: sourceLocation)
        #expect(server.stage(b) == .waiting && server.stage(c) == .waiting, sourceLocation: sourceLocation)
        return (server, a, b, c)
    }

    @Test func clientsPastTheLimitWaitAndAreGrantedInArrivalOrder() {
        let (server, a, b, c) = oneServedTwoWaiting()
        #expect(server.remove(a) == ["b"])
        #expect(server.stage(b) == .transmitting)
        #expect(server.stage(c) == .waiting)
        #expect(server.remove(b) == ["c"])
        #expect(server.remove(c) == [])
        #expect(server.admission.isEmpty)
        #expect(server.admission.transmitting == 0 && server.admission.notTransmitting == 0)
    }

    @Test func aWaiterThatLeavesIsSkipped() {
        let (server, a, b, _) = oneServedTwoWaiting()
        #expect(server.remove(b) == [])
        #expect(server.remove(a) == ["c"])
        #expect(server.admission.notTransmitting == 0 && server.admission.transmitting == 1)
    }

    @Test func aNewcomerDoesNotOvertakeWaiters() {
        let server = Server(limit: 2)
        let (a, b, c, d) = (Connection(), Connection(), Connection(), Connection())
        server.admit(a, b, c, d)
        #expect(server.request(a, "a") && server.request(b, "b"))
        #expect(!server.request(c, "c"))
        #expect(server.remove(a) == ["c"])
        #expect(!server.request(d, "d"), "both slots are taken again")
    }

    @Test func theNegotiationCapCountsOnlyConnectionsNotTransmitting() {
        let server = Server(limit: 0, negotiating: 2)
        let (a, b) = (Connection(), Connection())
        server.admit(a)
        #expect(server.admission.acceptsConnections)
        server.admit(b)
        #expect(!server.admission.acceptsConnections, "two negotiating: the listener pauses")
        #expect(server.request(a, "a"), "no -e limit")
        #expect(server.admission.acceptsConnections, "a transmitting connection frees its negotiation place")
        #expect(server.remove(b) == [])
        #expect(server.admission.notTransmitting == 0)
    }

    @Test func waitersCountAgainstTheNegotiationCap() {
        let server = Server(limit: 1, negotiating: 2)
        let (a, b, c) = (Connection(), Connection(), Connection())
        server.admit(a, b, c)
        #expect(server.request(a, "a"))
        #expect(!server.request(b, "b"))
        #expect(!server.admission.acceptsConnections, "b waiting and c negotiating fill the two places")
    }

    @Test func unknownOrRepeatedRequestsChangeNothing() {
        let server = Server(limit: 1, negotiating: 4)
        let (a, stranger) = (Connection(), Connection())
        server.admit(a, a)
        #expect(server.admission.notTransmitting == 1, "admitting twice counts once")
        #expect(!server.request(stranger, "x"))
        #expect(server.request(a, "a"))
        #expect(!server.request(a, "a"), "already transmitting")
        #expect(server.admission.transmitting == 1)
        #expect(server.remove(stranger) == [])
        #expect(server.remove(a) == [])
        #expect(server.admission.isEmpty)
    }
}
