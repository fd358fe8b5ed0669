import NBD
import NIOCore
import Testing

@testable import NBDServer

/// The handshake limit (`--handshake-limit`) on an `EmbeddedEventLoop`, whose clock moves only when
/// the test moves it; and a connection that finished negotiating while every `-e` slot is taken.
@Suite struct HandshakeLimitTests {
    static func options(limit: Double) -> NBDServerOptions {
        var options = NBDServerOptions()
        options.handshakeLimit = limit
        return options
    }

    @Test func anIdleConnectionIsClosedWhenTheLimitPasses() throws {
        let connection = try ConnectionUnderTest(options: Self.options(limit: 10))
        try connection.connect()
        #expect(try connection.written() == [.greeting([.fixedNewstyle, .noZeroes])])
        #expect(connection.handler.handshakeTimerPending)

        connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(9_999))
        #expect(connection.channel.isActive, "open until the limit")
        connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!connection.channel.isActive, "closed at 10 s")
        #expect(!connection.handler.handshakeTimerPending)
    }

    @Test func negotiatingWithoutFinishingDoesNotRestartTheLimit() throws {
        let connection = try ConnectionUnderTest(options: Self.options(limit: 2))
        try connection.connect()
        connection.channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        // Options that do not end negotiation: the limit keeps counting from the greeting.
        try connection.send(Wire.clientFlags, Wire.option(.list))
        #expect(connection.channel.isActive)
        connection.channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!connection.channel.isActive)
    }

    @Test func finishingNegotiationStopsTheLimit() throws {
        let connection = try ConnectionUnderTest(options: Self.options(limit: 10))
        connection.channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        try connection.negotiate()
        #expect(!connection.handler.handshakeTimerPending)
        connection.channel.embeddedEventLoop.advanceTime(by: .seconds(3600))
        #expect(connection.channel.isActive)
        // Still serving.
        try connection.send(Wire.request(.flush, cookie: 7))
        connection.completeRequests()
        #expect(try connection.written() == [.simpleReply(.init(cookie: 7))])
    }

    @Test func zeroMeansNoLimit() throws {
        let connection = try ConnectionUnderTest(options: Self.options(limit: 0))
        try connection.connect()
        #expect(!connection.handler.handshakeTimerPending)
        connection.channel.embeddedEventLoop.advanceTime(by: .seconds(86_400))
        #expect(connection.channel.isActive)
    }

    @Test func closingCancelsTheTimer() throws {
        let connection = try ConnectionUnderTest(options: Self.options(limit: 10))
        try connection.connect()
        #expect(connection.handler.handshakeTimerPending)
        // The client gives up (here: sends garbage instead of its flags and option magic).
        try connection.send(Wire.clientFlags, ByteBuffer(repeating: 0xEE, count: 16))
        #expect(!connection.channel.isActive)
        #expect(!connection.handler.handshakeTimerPending, "no timer outlives its connection")
    }

    // MARK: - Waiting for a slot (-e)

    @Test func aClientWaitsForASlotWithItsGOReplyHeldBack() throws {
        let connection = try ConnectionUnderTest(options: Self.options(limit: 10), grantsSlots: false)
        try connection.connect()
        _ = try connection.written()
        try connection.send(Wire.clientFlags, Wire.go())
        #expect(connection.slots.requests == 1)
        #expect(try connection.written().isEmpty, "no reply until a slot is granted")
        #expect(!connection.handler.handshakeTimerPending, "waiting for a slot is not negotiating")

        // Waiting does not count against the handshake limit, and reading pauses meanwhile.
        connection.channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(connection.channel.isActive)
        let before = connection.reads.reads
        connection.askToRead()
        #expect(connection.reads.reads == before)

        connection.slots.grantHeld()
        connection.channel.embeddedEventLoop.run()
        let replies = try connection.written()
        #expect(replies.last == .optionReply(NBDOptionReply(option: .go, body: .ack)), "\(replies)")
        #expect(connection.reads.reads == before + 1, "reading resumes in transmission")

        try connection.send(Wire.request(.flush, cookie: 1))
        connection.completeRequests()
        #expect(try connection.written() == [.simpleReply(.init(cookie: 1))])
    }

    @Test func inputBeforeTheHeldGOReplyClosesTheConnection() throws {
        let connection = try ConnectionUnderTest(grantsSlots: false)
        try connection.connect()
        _ = try connection.written()
        // A request pipelined behind GO: the client cannot know the export yet.
        try connection.send(Wire.clientFlags, Wire.go(), Wire.request(.flush, cookie: 1))
        #expect(!connection.channel.isActive)
        #expect(try connection.written().isEmpty)
        // A grant arriving after the close changes nothing.
        connection.slots.grantHeld()
        connection.channel.embeddedEventLoop.run()
        #expect(try connection.written().isEmpty)
    }

    @Test func shutdownClosesAConnectionWaitingForASlot() throws {
        let connection = try ConnectionUnderTest(grantsSlots: false)
        try connection.connect()
        try connection.send(Wire.clientFlags, Wire.go())
        connection.channel.pipeline.fireUserInboundEventTriggered(NBDServerShutdownEvent())
        #expect(!connection.channel.isActive)
    }
}
