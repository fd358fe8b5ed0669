import Foundation
import QED
import TestSupport
import Testing

/// Runs the real QEMU tools (qemu-img, qemu-io) for the interop tests.
///
/// A missing tool is an error, not a skip: the test command installs qemu-utils, so a test that
/// needs `qemu-img` and cannot find it fails with a message saying what to install.
enum QEMU {
    /// What a finished tool run produced.
    struct Result: CustomStringConvertible {
        var command: [String]
        var status: Int32
        var stdout: String
        var stderr: String

        var description: String {
            "$ \(command.joined(separator: " "))\nexit \(status)\nstdout: \(stdout)\nstderr: \(stderr)"
        }
    }

    struct ToolMissing: Error, CustomStringConvertible {
        var tool: String
        var description: String {
            "\(tool) was not found in PATH. The interop tests run the real QEMU tools: install qemu-utils (apt-get install qemu-utils)."
        }
    }

    struct ToolFailed: Error, CustomStringConvertible {
        var result: Result
        var description: String { "tool failed:\n\(result)" }
    }

    /// The absolute path of `tool` found in PATH (plus the usual system directories).
    static func locate(_ tool: String) throws -> String {
        guard let path = ChildProcess.locate(tool) else { throw ToolMissing(tool: tool) }
        return path
    }

    /// Runs `tool args...` in `cwd` and captures stdout, stderr and the exit status (through
    /// ``ChildProcess/run(_:_:in:environment:timeout:)``, so large outputs never block the child).
    /// Without a `cwd` it runs in a scratch directory of its own: callers then pass absolute paths.
    @discardableResult
    static func run(_ tool: String, _ args: [String], cwd: String? = nil) throws -> Result {
        let executable = try locate(tool)
        let outcome: ChildOutcome
        if let cwd {
            outcome = try ChildProcess.run(executable, args, in: cwd)
        } else {
            let scratch = try TemporaryDirectory(prefix: "qemu-run")
            outcome = try withExtendedLifetime(scratch) { try ChildProcess.run(executable, args, in: scratch.path) }
        }
        return Result(command: [tool] + args, status: outcome.status, stdout: outcome.stdout, stderr: outcome.stderr)
    }

    /// `qemu-img args...`.
    @discardableResult
    static func img(_ args: String..., cwd: String? = nil) throws -> Result { try run("qemu-img", args, cwd: cwd) }

    /// `qemu-io args...`.
    @discardableResult
    static func io(_ args: [String], cwd: String? = nil) throws -> Result { try run("qemu-io", args, cwd: cwd) }

    /// Runs `qemu-img args...` and throws unless it exits 0.
    @discardableResult
    static func imgOK(_ args: String..., cwd: String? = nil) throws -> Result {
        let r = try run("qemu-img", args, cwd: cwd)
        guard r.status == 0 else { throw ToolFailed(result: r) }
        return r
    }

    /// Runs `qemu-io` with one `-c` per command on `image` and throws unless it exits 0 and
    /// printed no error (qemu-io exits 0 even when a command fails).
    @discardableResult
    static func ioOK(_ image: String, _ commands: [String], extra: [String] = [], cwd: String? = nil) throws -> Result {
        let r = try run("qemu-io", extra + commands.flatMap { ["-c", $0] } + [image], cwd: cwd)
        guard r.status == 0, !r.stdout.contains("failed"), !r.stderr.contains("failed"), r.stderr.isEmpty else {
            throw ToolFailed(result: r)
        }
        return r
    }

    // MARK: JSON outputs

    /// `qemu-img check --output=json` counts (absent keys are 0, as QEMU omits zero counts).
    struct Check: Equatable, CustomStringConvertible {
        var status: Int32
        var checkErrors = 0, corruptions = 0, leaks = 0, corruptionsFixed = 0
        var totalClusters = 0, allocatedClusters = 0, fragmentedClusters = 0
        var description: String {
            "rc \(status) check-errors \(checkErrors) corruptions \(corruptions) leaks \(leaks) fixed \(corruptionsFixed) total \(totalClusters) allocated \(allocatedClusters) fragmented \(fragmentedClusters)"
        }
    }

    /// Runs `qemu-img check --output=json [extra] image`.
    static func check(_ image: String, extra: [String] = []) throws -> Check {
        let r = try run("qemu-img", ["check", "--output=json"] + extra + [image])
        guard let data = r.stdout.data(using: .utf8),
            let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            throw ToolFailed(result: r)
        }
        func n(_ key: String) -> Int { (obj[key] as? NSNumber)?.intValue ?? 0 }
        return Check(
            status: r.status, checkErrors: n("check-errors"), corruptions: n("corruptions"), leaks: n("leaks"),
            corruptionsFixed: n("corruptions-fixed"), totalClusters: n("total-clusters"),
            allocatedClusters: n("allocated-clusters"), fragmentedClusters: n("fragmented-clusters"))
    }

    /// One entry of `qemu-img map --output=json`.
    struct MapEntry: Equatable, CustomStringConvertible {
        var start: UInt64, length: UInt64, depth: Int
        var present: Bool, zero: Bool, data: Bool
        var offset: UInt64?
        var description: String {
            "{\(start)+\(length) d\(depth) \(present ? "P" : "-")\(zero ? "Z" : "-")\(data ? "D" : "-") \(offset.map { "@\($0)" } ?? "")}"
        }
    }

    /// Runs `qemu-img map --output=json image`.
    static func map(_ image: String, extra: [String] = []) throws -> [MapEntry] {
        let r = try run("qemu-img", ["map", "--output=json"] + extra + [image])
        guard r.status == 0, let data = r.stdout.data(using: .utf8),
            let array = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]]
        else {
            throw ToolFailed(result: r)
        }
        return array.map { o in
            MapEntry(
                start: (o["start"] as? NSNumber)?.uint64Value ?? 0,
                length: (o["length"] as? NSNumber)?.uint64Value ?? 0,
                depth: (o["depth"] as? NSNumber)?.intValue ?? -1,
                present: (o["present"] as? Bool) ?? false, zero: (o["zero"] as? Bool) ?? false,
                data: (o["data"] as? Bool) ?? false, offset: (o["offset"] as? NSNumber)?.uint64Value)
        }
    }
}
