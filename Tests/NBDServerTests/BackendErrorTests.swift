import NBD
import NBDServer
import NIOCore
import QED
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How ``NBDDiskBackend`` turns engine failures into NBD error values, and that requests carry them.
@Suite struct BackendErrorTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var error: QEDError
        var expected: NBDError
        var testDescription: String {
            "\(self.error.code)\(self.error.errno.map { " errno \($0)" } ?? "") → \(self.expected)"
        }
    }

    static let cases: [Case] = [
        Case(error: QEDError(.noSpace, "full"), expected: .noSpace),
        Case(error: QEDError(.readOnly, "read-only"), expected: .permissionDenied),
        Case(error: QEDError(.closed, "closed"), expected: .shutdown),
        Case(error: QEDError(.unsupported, "unsupported"), expected: .notSupported),
        Case(error: QEDError(.outOfRange, "past the end", value: 1 << 40), expected: .invalid),
        Case(error: QEDError(.invalidArgument, "bad"), expected: .invalid),
        Case(error: QEDError(.corrupt, "bad table"), expected: .io),
        Case(error: QEDError(.truncatedFile, "short"), expected: .io),
        Case(error: QEDError(.io, "pwrite", errno: EIO), expected: .io),
        Case(error: QEDError(.io, "pwrite", errno: ENOSPC), expected: .noSpace),
        Case(error: QEDError(.io, "pwrite", errno: EDQUOT), expected: .noSpace),
        Case(error: QEDError(.io, "pwrite", errno: EROFS), expected: .permissionDenied),
        Case(error: QEDError(.io, "pwrite", errno: ENOMEM), expected: .outOfMemory),
        // errno values the protocol does not name would be EINVAL; an I/O failure stays EIO.
        Case(error: QEDError(.io, "pwrite", errno: EBADF), expected: .io),
        Case(error: QEDError(.io, "pwrite"), expected: .io),
    ]

    @Test(arguments: Self.cases)
    func engineErrorsMapToNBDErrors(_ test: Case) {
        let (code, message) = NBDDiskBackend.nbdError(for: test.error)
        #expect(code == test.expected)
        #expect(message == test.error.message)
    }

    @Test func otherErrorsAreEIO() {
        struct Other: Error {}
        #expect(NBDDiskBackend.nbdError(for: Other()).0 == .io)
    }

    static let session = NBDSession(
        export: NBDExport(name: "", size: 1 << 20, flags: [.hasFlags, .sendFlush, .sendFUA]),
        structuredReplies: false
    )

    @Test(arguments: [NBDCommand.read, .write, .flush, .writeZeroes, .blockStatus])
    func aFailingRequestGetsTheMappedErrorInItsReply(_ command: NBDCommand) {
        let disk = MemoryDisk(size: 1 << 20)
        disk.fail(with: QEDError(.noSpace, "no space left on the host"))
        let backend = NBDDiskBackend(disk: disk, options: NBDServerOptions())
        let length: UInt64 = command == .flush ? 0 : 4096
        let header = NBDRequestHeader(
            command: command, cookie: 42, offset: command == .flush ? 0 : 8192, length: length)
        let payload: NBDRequestPayload = command == .write ? .data(ByteBuffer(repeating: 1, count: 4096)) : .none
        var session = Self.session
        session.structuredReplies = command == .blockStatus
        if command == .blockStatus { session.metaContexts = [.baseAllocation] }
        let reply = backend.execute(NBDRequest(header: header, payload: payload), session: session)
        switch reply {
        case .one(.simpleReply(let simple)):
            #expect(simple.cookie == 42 && simple.error == .noSpace, "\(simple)")
        case .one(.structuredReply(let chunk)):
            guard case .error(let error, let message) = chunk.content else {
                Issue.record("not an error chunk: \(chunk)")
                return
            }
            #expect(chunk.cookie == 42 && error == .noSpace)
            #expect(message.contains("no space left on the host"), "\(message)")
        default:
            Issue.record("unexpected reply \(reply)")
        }
    }

    @Test func theSameRequestSucceedsOnceTheDiskDoes() {
        let disk = MemoryDisk(size: 1 << 20)
        let backend = NBDDiskBackend(disk: disk, options: NBDServerOptions())
        let header = NBDRequestHeader(command: .write, cookie: 1, offset: 0, length: 4)
        let request = NBDRequest(header: header, payload: .data(ByteBuffer(bytes: [1, 2, 3, 4])))
        disk.fail(with: QEDError(.io, "pwrite", errno: EIO))
        guard case .one(.simpleReply(let failed)) = backend.execute(request, session: Self.session) else {
            Issue.record("expected a simple reply")
            return
        }
        #expect(failed.error == .io)
        #expect(disk.contents(at: 0, count: 4) == [0, 0, 0, 0])
        disk.fail(with: nil)
        guard case .one(.simpleReply(let succeeded)) = backend.execute(request, session: Self.session) else {
            Issue.record("expected a simple reply")
            return
        }
        #expect(succeeded.error == nil)
        #expect(disk.contents(at: 0, count: 4) == [1, 2, 3, 4])
    }
}
