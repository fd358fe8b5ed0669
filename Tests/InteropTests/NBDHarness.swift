import Foundation
import QED
import TestSupport
import Testing

/// What a finished command printed and returned.
typealias NBDOutcome = ChildOutcome

/// A scratch directory for one test, with helpers to run the built `qed-nbd` and the Debian NBD clients.
/// Every server it starts is killed when the sandbox goes away.
final class NBDSandbox: @unchecked Sendable {
    // @unchecked: `servers` is only touched by the test that owns the sandbox (one thread at a time);
    // everything else is immutable.
    /// The scratch directory. Stored properties are released after `deinit` runs, so the servers are
    /// killed before it is removed.
    private let scratch: TemporaryDirectory
    var dir: String { scratch.path }
    private var servers: [NBDServerProcess] = []

    init(_ name: String = #function) throws {
        let clean = name.filter { $0.isLetter || $0.isNumber }.prefix(40)
        // Short paths: Unix socket paths are limited to 107 bytes.
        scratch = try TemporaryDirectory(prefix: "qnbd-\(clean)", in: "/tmp")
    }

    deinit {
        for server in servers { server.kill() }
    }

    func path(_ name: String) -> String { scratch.file(name) }

    /// The built `qed-nbd` (or `QED_NBD`).
    static let qedNBD = ChildProcess.builtProduct("qed-nbd", override: "QED_NBD")

    /// Runs `executable` (a path, or a name under /usr/bin, /usr/sbin, /sbin) with `arguments` in the
    /// sandbox; output goes to files so no pipe can fill up. Kills it after `timeout` seconds.
    @discardableResult
    func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        timeout: Double = 120
    ) throws -> NBDOutcome {
        try ChildProcess.run(
            ChildProcess.systemTool(executable), arguments, in: dir, environment: environment, timeout: timeout)
    }

    @discardableResult
    func run(_ executable: String, _ arguments: String...) throws -> NBDOutcome { try run(executable, arguments) }

    /// Runs a command that must succeed; records an issue with its output otherwise.
    @discardableResult
    func must(
        _ executable: String, _ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation
    )
        throws -> NBDOutcome
    {
        let outcome = try run(executable, arguments)
        #expect(outcome.status == 0, "\(executable) \(arguments): \(outcome)", sourceLocation: sourceLocation)
        return outcome
    }

    /// Starts `qed-nbd ARGS FILE` on the Unix socket `socket` and waits until it listens (its pid file
    /// appears, which it writes after binding).
    func startServer(
        _ arguments: [String], image: String, socket: String = "s.sock",
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> NBDServerProcess {
        let pidFile = path("\(socket).pid")
        try? FileManager.default.removeItem(atPath: pidFile)
        let server = try NBDServerProcess(
            arguments: ["-k", path(socket), "--pid-file", pidFile] + arguments + [path(image)],
            socket: path(socket), logPath: path("\(socket).log"), directory: dir)
        servers.append(server)
        // (The deadline only bounds a hung server; a failing one ends the wait by exiting.)
        let deadline = Date().addingTimeInterval(300)
        while !FileManager.default.fileExists(atPath: pidFile) && server.isRunning && Date() < deadline {
            usleep(5_000)
        }
        #expect(
            FileManager.default.fileExists(atPath: pidFile), "qed-nbd did not start: \(server.log)",
            sourceLocation: sourceLocation)
        return server
    }

    /// Writes `text` to `name` in the sandbox and returns its path.
    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        try text.write(toFile: path(name), atomically: true, encoding: .utf8)
        return path(name)
    }

    /// Runs a Python script with Debian's interpreter (which has libnbd's `nbd` module).
    func python(_ script: String, _ arguments: [String], timeout: Double = 120) throws -> NBDOutcome {
        let file = try write("script-\(UUID().uuidString).py", script)
        return try run("/usr/bin/python3", [file] + arguments, timeout: timeout)
    }

    /// A QED image of `size` bytes, made by qemu-img.
    func makeQED(
        _ name: String, size: String, options: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let outcome = try run("qemu-img", ["create", "-q", "-f", "qed"] + options + [path(name), size])
        #expect(outcome.status == 0, "qemu-img create: \(outcome)", sourceLocation: sourceLocation)
    }

    /// Bytes of a file.
    func bytes(_ name: String) throws -> [UInt8] { try Files.read(path(name)) }
}

/// A running `qed-nbd`.
final class NBDServerProcess: Sendable {
    let process: SpawnedProcess
    let socket: String
    let logPath: String

    init(arguments: [String], socket: String, logPath: String, directory: String) throws {
        let log = try SpawnedProcess.outputFile(logPath)
        defer { close(log) }
        process = try SpawnedProcess(NBDSandbox.qedNBD, arguments, in: directory, stdout: log, stderr: log)
        self.socket = socket
        self.logPath = logPath
    }

    var pid: Int32 { process.pid }
    var isRunning: Bool { process.isRunning }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// `nbd+unix:///NAME?socket=PATH`.
    func uri(export: String = "") -> String { "nbd+unix:///\(export)?socket=\(socket)" }

    /// Sends SIGTERM and waits (up to `timeout` seconds) for the exit status; nil if it did not exit.
    @discardableResult
    func terminate(timeout: Double = 30) -> Int32? {
        process.signal(SIGTERM)
        return waitForExit(timeout: timeout)
    }

    /// Waits up to `timeout` seconds for the server to exit on its own; its status, or nil.
    func waitForExit(timeout: Double) -> Int32? { process.wait(timeout: timeout) }

    /// SIGKILL, then reap.
    func kill() { process.killAndReap() }
}

/// Reads guest bytes of an image through the engine (read-only, shared), for checking what a client wrote.
func nbdReadImage(_ path: String, at offset: UInt64, count: Int) throws -> [UInt8] {
    let disk = try DiskOpener.open(path: path, format: nil, options: OpenOptions(readOnly: true, forceShare: true))
    defer { try? disk.close() }
    return try disk.readBytes(at: offset, count: count)
}

/// Whether the image's NEED_CHECK (dirty) bit is set on disk.
func nbdImageIsDirty(_ path: String) throws -> Bool {
    var options = OpenOptions(readOnly: true, forceShare: true)
    options.openBacking = false
    let image = try Image.open(path: path, options: options)
    defer { try? image.close() }
    return image.isDirty
}
