import NBD
import NIOCore
import Testing

@Suite("NBDSession reply helpers")
struct SessionReplyTests {
    let export = NBDExport(name: "", size: 1 << 20, flags: [.sendFlush])
    let read = NBDRequestHeader(command: .read, cookie: 0x11, offset: 0x200, length: 2)

    @Test func withStructuredReplies() {
        let session = NBDSession(export: self.export, structuredReplies: true)
        #expect(
            encoded(session.errorReply(to: self.read, .invalid, message: "x"))
                == hex("668e33ef 0001 8001 0000000000000011 00000007 00000016 0001 78")
        )
        #expect(
            encoded(session.readReply(to: self.read, data: ByteBuffer(bytes: [9, 8])))
                == hex("668e33ef 0001 0001 0000000000000011 0000000a 0000000000000200 0908")
        )
        #expect(
            encoded(session.readReply(to: self.read, data: ByteBuffer()))
                == hex("668e33ef 0001 0000 0000000000000011 00000000")
        )
        #expect(encoded(session.successReply(to: self.read)) == hex("67446698 00000000 0000000000000011"))
    }

    @Test func withSimpleReplies() {
        let session = NBDSession(export: self.export, structuredReplies: false)
        #expect(
            encoded(session.errorReply(to: self.read, .io, message: "x")) == hex("67446698 00000005 0000000000000011")
        )
        #expect(
            encoded(session.readReply(to: self.read, data: ByteBuffer(bytes: [9, 8])))
                == hex("67446698 00000000 0000000000000011 0908")
        )
    }
}
