import Foundation
import QED
import TestSupport
import Testing

/// A backing name stored in an image is a plain local file name (relative names against the
/// image's directory), never a protocol or an option string: an image from elsewhere must not make
/// us read another file, or connect anywhere, by a name such as `json:{…}` or `nbd://…` (the
/// CVE-2024-4467 class). Each name below is one QEMU would interpret.
@Suite struct BackingNameTests {
    /// A stored name and what QEMU would make of it.
    struct Case: CustomStringConvertible, Sendable {
        var label: String
        /// The name, given the test's directory (some forms point QEMU at a file there).
        var name: @Sendable (String) -> String
        var description: String { label }
    }

    static let cases: [Case] = [
        Case(label: "json: options naming another file") { #"json:{"driver":"file","filename":"\#($0)/secret.raw"}"# },
        Case(label: "nbd:// URI") { _ in "nbd://127.0.0.1:1/x" },
        Case(label: "nbd+unix URI with a socket") { "nbd+unix:///?socket=\($0)/s.sock" },
        Case(label: "file: protocol, absolute") { "file:\($0)/secret.raw" },
        Case(label: "file: protocol, relative") { _ in "file:secret.raw" },
    ]

    /// Content of the files a protocol reading of the name would open.
    static let secret = [UInt8](repeating: 0x5A, count: 65536)
    /// Content of the local file the name denotes as a path.
    static let local = [UInt8](repeating: 0xA5, count: 65536)

    /// A directory with `secret.raw` and a listening `s.sock` (what the names point QEMU at) and an
    /// overlay `o.qed` storing `name` as its raw backing file. Short base path: the socket's must fit.
    static func makeOverlay(storing name: (String) -> String) throws -> (TemporaryDirectory, String, Int32) {
        let dir = try TemporaryDirectory(prefix: "qbn", in: "/tmp")
        try Data(secret).write(to: URL(fileURLWithPath: dir.file("secret.raw")))
        let listener = try listen(at: dir.file("s.sock"))
        let stored = name(dir.path)
        try Image.create(
            path: dir.file("o.qed"),
            options: CreateOptions(
                size: 65536, clusterSize: 4096,
                backingFile: stored, backingFormat: .raw))
        return (dir, stored, listener)
    }

    /// A non-blocking Unix socket listening at `path`.
    static func listen(at path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        try #require(bytes.count < MemoryLayout.size(ofValue: address.sun_path))
        withUnsafeMutableBytes(of: &address.sun_path) { raw in raw.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        try #require(
            bound == 0 && Glibc.listen(fd, 4) == 0, "cannot listen at \(path): \(String(cString: strerror(errno)))")
        return fd
    }

    /// Whether a client connected to the listening socket (a connect to a Unix socket is queued
    /// before `connect` returns, so this needs no waiting).
    static func someoneConnected(_ listener: Int32) -> Bool {
        let client = accept(listener, nil, nil)
        if client >= 0 { close(client) }
        return client >= 0
    }

    @Test(arguments: cases) func theNameIsALocalPathRelativeToTheImage(_ form: Case) throws {
        let (dir, stored, listener) = try Self.makeOverlay(storing: form.name)
        defer { close(listener) }
        // The file the name denotes as a path: its slashes are directory separators below dir.
        let path = dir.file(stored)
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true)
        try Data(Self.local).write(to: URL(fileURLWithPath: path))
        let image = try openImage(dir.file("o.qed"), OpenOptions(readOnly: true))
        defer { try? image.close() }
        #expect(image.backingName == stored)
        #expect(image.backingPath == path)
        #expect(try image.read(at: 0, count: 65536) == Self.local, "\(form): read something else than the local file")
        #expect(!Self.someoneConnected(listener), "\(form): connected to a socket")
    }

    @Test(arguments: cases) func withoutTheLocalFileTheOpenFailsNamingThePath(_ form: Case) throws {
        let (dir, stored, listener) = try Self.makeOverlay(storing: form.name)
        defer { close(listener) }
        // No lock bytes: this is not about locks, and a lock left by the create (held by a child
        // another test is spawning until it execs) must not stand in for the expected error.
        var readOnly = OpenOptions(readOnly: true), readWrite = OpenOptions()
        readOnly.locking = false
        readWrite.locking = false
        for options in [readOnly, readWrite] {
            do {
                let image = try Image.open(path: dir.file("o.qed"), options: options)
                try? image.close()
                Issue.record("\(form): opened with backing name \(stored)")
            } catch let error as QEDError {
                #expect(error.code == .backingFile, "\(form): \(error)")
                #expect(
                    error.message
                        == "Could not open backing file: Could not open '\(dir.file(stored))': No such file or directory",
                    "\(form): \(error)")
            }
        }
        #expect(!Self.someoneConnected(listener), "\(form): connected to a socket")
        // Opening without the backing file needs none of it.
        var bare = readOnly
        bare.openBacking = false
        let image = try Image.open(path: dir.file("o.qed"), options: bare)
        #expect(image.backingName == stored && image.backing == nil)
        try image.close()
    }
}
