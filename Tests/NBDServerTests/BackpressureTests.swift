import NBD
import NBDServer
import NIOCore
import Testing

/// Reading from a client pauses while too much of its work is outstanding, and resumes once it is not:
/// requests in flight, WRITE bytes in flight, and replies backed up in the socket (the channel is not
/// writable above its high water mark, writable again below the low one).
@Suite struct BackpressureTests {
    @Test func readingPausesAtTheRequestLimitAndResumesWhenRequestsComplete() throws {
        var options = NBDServerOptions()
        options.maximumRequestsInFlight = 2
        let connection = try ConnectionUnderTest(options: options)
        connection.disk.fill(0x5A, at: 4096, count: 4096)
        try connection.negotiate()

        try connection.send(Wire.request(.read, cookie: 1, offset: 4096, length: 4096))
        let before = connection.reads.reads
        connection.askToRead()
        #expect(connection.reads.reads == before + 1, "one request in flight of 2: reading goes on")

        try connection.send(Wire.request(.read, cookie: 2, offset: 0, length: 512))
        connection.askToRead()
        #expect(connection.reads.reads == before + 1, "two requests in flight: reading pauses")
        #expect(try connection.written().isEmpty)

        connection.completeRequests()
        #expect(connection.reads.reads == before + 2, "the pending read is issued once requests complete")
        let replies = try connection.written()
        #expect(
            Set(replies) == [
                .simpleReply(NBDSimpleReply(cookie: 1, data: ByteBuffer(repeating: 0x5A, count: 4096))),
                .simpleReply(NBDSimpleReply(cookie: 2, data: ByteBuffer(repeating: 0, count: 512))),
            ],
            "\(replies)"
        )
    }

    @Test func readingPausesAtTheWriteByteLimit() throws {
        var options = NBDServerOptions()
        options.maximumBytesInFlight = 8192
        let connection = try ConnectionUnderTest(options: options)
        try connection.negotiate()

        let ones = [UInt8](repeating: 1, count: 4096)
        try connection.send(Wire.request(.write, cookie: 1, offset: 0, length: 4096, payload: ones))
        let before = connection.reads.reads
        connection.askToRead()
        #expect(connection.reads.reads == before + 1, "4 KiB of 8 KiB in flight: reading goes on")

        let twos = [UInt8](repeating: 2, count: 4096)
        try connection.send(Wire.request(.write, cookie: 2, offset: 4096, length: 4096, payload: twos))
        connection.askToRead()
        #expect(connection.reads.reads == before + 1, "8 KiB in flight: reading pauses")

        connection.completeRequests()
        #expect(connection.reads.reads == before + 2)
        #expect(Set(try connection.written()) == [.simpleReply(.init(cookie: 1)), .simpleReply(.init(cookie: 2))])
        #expect(connection.disk.contents(at: 4095, count: 2) == [1, 2])
    }

    @Test func readingPausesWhileRepliesBackUpAndResumesWhenTheyDrain() throws {
        let connection = try ConnectionUnderTest()
        try connection.negotiate()
        let before = connection.reads.reads

        // Past the high water mark NIO makes the channel unwritable; below the low one writable again.
        connection.channel.isWritable = false
        connection.channel.pipeline.fireChannelWritabilityChanged()
        connection.askToRead()
        #expect(connection.reads.reads == before, "replies backed up: reading pauses")

        // Completing requests is not enough while the socket is still backed up.
        try connection.send(Wire.request(.read, cookie: 1, offset: 0, length: 512))
        connection.completeRequests()
        #expect(connection.reads.reads == before)

        connection.channel.isWritable = true
        connection.channel.pipeline.fireChannelWritabilityChanged()
        #expect(connection.reads.reads == before + 1, "the pending read is issued once writable")
        #expect(
            try connection.written() == [.simpleReply(.init(cookie: 1, data: ByteBuffer(repeating: 0, count: 512)))])
    }
}
