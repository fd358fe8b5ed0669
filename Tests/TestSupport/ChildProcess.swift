import Foundation

/// What a child process printed and how it ended.
public struct ChildOutcome: CustomStringConvertible, Sendable {
    /// Everything it wrote to standard output.
    public var stdout: String
    /// Everything it wrote to standard error.
    public var stderr: String
    /// Its exit status (or the signal number when killed).
    public var status: Int32

    public init(stdout: String, stderr: String, status: Int32) {
        self.stdout = stdout
        self.stderr = stderr
        self.status = status
    }

    public var description: String { "status \(status)\n--- stdout\n\(stdout)--- stderr\n\(stderr)" }
    /// Standard output split at newlines (the last element is what follows the final newline).
    public var lines: [String] { stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) }
}

/// Runs child processes for the tests.
public enum ChildProcess {
    /// Runs the program at `path` with `arguments` in `directory`, with standard input empty and the
    /// output collected through files (no pipe can fill up and block the child). With a `timeout`
    /// (seconds) the child is killed with SIGKILL when it runs longer.
    public static func run(
        _ path: String, _ arguments: [String], in directory: String,
        environment: [String: String] = [:], timeout: Double? = nil
    ) throws -> ChildOutcome {
        let stamp = UUID().uuidString
        let outPath = directory + "/.out-\(stamp)", errPath = directory + "/.err-\(stamp)"
        defer {
            unlink(outPath)
            unlink(errPath)
        }
        let out = try SpawnedProcess.outputFile(outPath)
        defer { close(out) }
        let err = try SpawnedProcess.outputFile(errPath)
        defer { close(err) }
        let child = try SpawnedProcess(
            path, arguments, in: directory, environment: environment, stdout: out, stderr: err)
        // A hung child is killed with what it started, so nothing outlives the test.
        if let timeout, child.wait(timeout: timeout) == nil { child.killAndReap() }
        let status = child.wait()
        let outData = (try? Data(contentsOf: URL(fileURLWithPath: outPath))) ?? Data()
        let errData = (try? Data(contentsOf: URL(fileURLWithPath: errPath))) ?? Data()
        return ChildOutcome(
            stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self), status: status)
    }
}

// MARK: Finding programs

extension ChildProcess {
    /// Where Debian installs the tools the tests drive.
    public static let systemDirectories = ["/usr/bin", "/usr/sbin", "/sbin", "/bin", "/usr/local/bin"]

    /// The directories in PATH, then ``systemDirectories``.
    public static var searchPath: [String] {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        return path.split(separator: ":").map(String.init) + systemDirectories
    }

    /// `name` itself when it is a path; else the first executable `dir/name` for `dir` in
    /// `directories`; nil when there is none.
    public static func locate(_ name: String, in directories: [String] = searchPath) -> String? {
        if name.hasPrefix("/") { return name }
        for dir in directories where !dir.isEmpty {
            let candidate = dir + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// `name` as a system tool: found in ``systemDirectories`` only (not PATH, where a shim such as
    /// pyenv's could stand in for Debian's program), else `/usr/bin/name`.
    public static func systemTool(_ name: String) -> String {
        locate(name, in: systemDirectories) ?? "/usr/bin/" + name
    }

    /// The path of this package's built executable `name` (`qed-img`, `qed-nbd`): the environment
    /// variable `variable` when set; else the first `name` next to the test bundle or up to three
    /// directories above it; else `.build/debug/name` in the package.
    public static func builtProduct(_ name: String, override variable: String) -> String {
        if let path = ProcessInfo.processInfo.environment[variable] { return path }
        var candidates: [String] = []
        var dir = URL(fileURLWithPath: CommandLine.arguments.first ?? "").standardizedFileURL
            .deletingLastPathComponent()
        for _ in 0..<4 {
            candidates.append(dir.appendingPathComponent(name).path)
            dir = dir.deletingLastPathComponent()
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        candidates.append(root.appendingPathComponent(".build/debug/" + name).path)
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
    }
}
