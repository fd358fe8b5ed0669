import Foundation
import NBD
import NIOCore
import NIOSSL
import TestSupport
import Testing

@testable import NBDServer

/// `NBD_OPT_STARTTLS` with TLS required: bytes sent behind it in the same packet (before the client
/// could have seen the ACK) would be read as if they came through TLS, so the connection is closed
/// without an ACK; a STARTTLS on its own is acknowledged in clear text and TLS goes in front.
@Suite struct StartTLSTests {
    /// PSK credentials from a throwaway key file.
    static func credentials() throws -> NBDServerTLS {
        let directory = try TemporaryDirectory(prefix: "nbd-tls")
        let file = directory.file("keys.psk")
        try "alice:00112233445566778899aabbccddeeff\n".write(toFile: file, atomically: true, encoding: .utf8)
        return try NBDServerTLS.preSharedKeys(file: file)
    }

    @Test func bytesBehindStartTLSCloseTheConnectionWithoutAnACK() throws {
        let connection = try ConnectionUnderTest(tls: try Self.credentials())
        try connection.connect()
        #expect(try connection.written() == [.greeting([.fixedNewstyle, .noZeroes])])

        // STARTTLS and, in the same packet, a GO an attacker slipped in behind it.
        try connection.send(Wire.clientFlags, Wire.option(.startTLS), Wire.go())
        #expect(try connection.written().isEmpty, "no ACK: the STARTTLS is not accepted")
        #expect(!connection.channel.isActive)
        #expect((try? connection.channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)) == nil)
        #expect(connection.slots.requests == 0, "the GO behind it was never acted on")
    }

    @Test func startTLSAloneIsAcknowledgedAndTLSGoesInFront() throws {
        let connection = try ConnectionUnderTest(tls: try Self.credentials())
        try connection.connect()
        _ = try connection.written()

        try connection.send(Wire.clientFlags, Wire.option(.startTLS))
        #expect(try connection.written() == [.optionReply(NBDOptionReply(option: .startTLS, body: .ack))])
        #expect(connection.channel.isActive)
        #expect((try? connection.channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)) != nil)
        _ = try? connection.channel.finish(acceptAlreadyClosed: true)
    }

    @Test func optionsBeforeTLSAreRefused() throws {
        let connection = try ConnectionUnderTest(tls: try Self.credentials())
        try connection.connect()
        _ = try connection.written()
        try connection.send(Wire.clientFlags, Wire.go())
        let replies = try connection.written()
        guard case .optionReply(let reply)? = replies.first, case .error(let type, _) = reply.body else {
            Issue.record("expected an error reply: \(replies)")
            return
        }
        #expect(type == .errorTLSRequired)
        #expect(connection.slots.requests == 0)
    }
}
