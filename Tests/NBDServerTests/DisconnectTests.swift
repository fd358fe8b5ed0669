import NBD
import NBDServer
import NIOCore
import Testing

/// `NBD_CMD_DISC`: requests in flight finish and are answered before the connection closes; requests
/// after it are refused.
@Suite struct DisconnectTests {
    @Test func discDrainsRequestsInFlightBeforeClosing() throws {
        let connection = try ConnectionUnderTest()
        connection.disk.fill(0x33, at: 0, count: 512)
        try connection.negotiate()

        // A READ and a WRITE, DISC, then a READ the client should not have sent: all in one packet.
        try connection.send(
            Wire.request(.read, cookie: 1, offset: 0, length: 512),
            Wire.request(.write, cookie: 2, offset: 8192, length: 4, payload: [9, 8, 7, 6]),
            Wire.request(.disconnect, cookie: 3),
            Wire.request(.read, cookie: 4, offset: 0, length: 512)
        )
        #expect(connection.executor.count == 1, "the READ and WRITE before DISC still run")
        #expect(connection.channel.isActive, "not closed while requests are in flight")
        let refused = try connection.written()
        #expect(refused.count == 1)
        if case .simpleReply(let reply)? = refused.first {
            #expect(reply.cookie == 4 && reply.error == .shutdown, "\(reply)")
        } else {
            Issue.record("expected ESHUTDOWN for the request after DISC: \(refused)")
        }
        let before = connection.reads.reads
        connection.askToRead()
        #expect(connection.reads.reads == before, "nothing more is read after DISC")

        connection.completeRequests()
        #expect(
            Set(try connection.written()) == [
                .simpleReply(.init(cookie: 1, data: ByteBuffer(repeating: 0x33, count: 512))),
                .simpleReply(.init(cookie: 2)),
            ]
        )
        #expect(connection.disk.contents(at: 8192, count: 4) == [9, 8, 7, 6])
        #expect(!connection.channel.isActive, "closed once every reply is out")
    }

    @Test func discWithNothingInFlightClosesAtOnce() throws {
        let connection = try ConnectionUnderTest()
        try connection.negotiate()
        try connection.send(Wire.request(.disconnect, cookie: 1))
        #expect(try connection.written().isEmpty, "DISC has no reply")
        #expect(!connection.channel.isActive)
    }
}
