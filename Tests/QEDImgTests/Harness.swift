import Foundation
import TestSupport
import Testing

/// What a finished command printed and returned.
typealias Outcome = ChildOutcome

/// Runs the built `qed-img` and the real QEMU tools in a scratch directory.
final class Sandbox {
    /// The scratch directory, removed with the sandbox.
    private let scratch: TemporaryDirectory
    var dir: String { scratch.path }

    init(_ name: String = #function) throws {
        let clean = name.filter { $0.isLetter || $0.isNumber }
        scratch = try TemporaryDirectory(prefix: "qedimg-\(clean)")
    }

    func path(_ name: String) -> String { scratch.file(name) }

    /// The built `qed-img` (or `QED_IMG`).
    static let qedImg = ChildProcess.builtProduct("qed-img", override: "QED_IMG")

    /// Runs `executable` (a path, or a system tool's name) with `arguments` in the sandbox directory.
    @discardableResult
    func run(_ executable: String, _ arguments: [String]) throws -> Outcome {
        try ChildProcess.run(ChildProcess.systemTool(executable), arguments, in: dir)
    }

    /// `qed-img ARGS`.
    @discardableResult
    func ours(_ arguments: String...) throws -> Outcome { try run(Sandbox.qedImg, arguments) }
    @discardableResult
    func ours(_ arguments: [String]) throws -> Outcome { try run(Sandbox.qedImg, arguments) }

    /// `qemu-img ARGS`.
    @discardableResult
    func qemu(_ arguments: String...) throws -> Outcome { try run("qemu-img", arguments) }
    @discardableResult
    func qemu(_ arguments: [String]) throws -> Outcome { try run("qemu-img", arguments) }

    /// `qemu-io ARGS` (must succeed).
    func qemuIO(_ arguments: String...) throws {
        let o = try run("qemu-io", arguments)
        #expect(o.status == 0, "qemu-io \(arguments): \(o)")
    }

    /// Runs qemu-img and requires success.
    func mustQemu(_ arguments: String...) throws {
        let o = try run("qemu-img", arguments)
        #expect(o.status == 0, "qemu-img \(arguments): \(o)")
    }

    /// Runs qed-img and requires success.
    func mustOurs(_ arguments: String...) throws {
        let o = try run(Sandbox.qedImg, arguments)
        #expect(o.status == 0, "qed-img \(arguments): \(o)")
    }

    func copy(_ from: String, _ to: String) throws {
        try? FileManager.default.removeItem(atPath: path(to))
        try FileManager.default.copyItem(atPath: path(from), toPath: path(to))
    }

    func bytes(_ name: String) throws -> [UInt8] { try Files.read(path(name)) }

    func fileSize(_ name: String) throws -> UInt64 { try Files.size(path(name)) }

    /// Overwrites `value` as a little-endian u64 at byte `offset` of `name`.
    func poke64(_ name: String, at offset: UInt64, _ value: UInt64) throws {
        try Files.writeU64(path(name), value, at: offset)
    }

    /// Writes `value` little-endian as 4 bytes at byte `offset` of `name`.
    func poke32(_ name: String, at offset: UInt64, _ value: UInt32) throws {
        try Files.write(path(name), (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }, at: offset)
    }

    /// The little-endian u64 at byte `offset` of `name`.
    func peek64(_ name: String, at offset: Int) throws -> UInt64 { try Files.readU64(path(name), at: UInt64(offset)) }

    /// `qemu-img check` status of `name` (0 = clean).
    func qemuCheckStatus(_ name: String) throws -> Int32 { try qemu("check", name).status }

    /// Whether `qemu-img compare` says the two images show the same content.
    func qemuIdentical(_ a: String, _ b: String) throws -> Bool {
        let o = try qemu("compare", a, b)
        return o.status == 0 && o.stdout.contains("Images are identical.")
    }
}

/// Compares two JSON values key by key, value by value; returns the differences.
func jsonDifferences(_ a: Any, _ b: Any, at path: String = "$") -> [String] {
    switch (a, b) {
    case let (x as [String: Any], y as [String: Any]):
        var out: [String] = []
        for key in Set(x.keys).union(y.keys).sorted() {
            guard let xv = x[key] else {
                out.append("\(path).\(key) missing in ours")
                continue
            }
            guard let yv = y[key] else {
                out.append("\(path).\(key) extra in ours")
                continue
            }
            out += jsonDifferences(xv, yv, at: path + "." + key)
        }
        return out
    case let (x as [Any], y as [Any]):
        guard x.count == y.count else { return ["\(path): \(x.count) elements vs \(y.count)"] }
        return zip(x, y).enumerated().flatMap {
            jsonDifferences($0.element.0, $0.element.1, at: "\(path)[\($0.offset)]")
        }
    case let (x as NSNumber, y as NSNumber):
        return x == y ? [] : ["\(path): \(x) vs \(y)"]
    case let (x as String, y as String):
        return x == y ? [] : ["\(path): \(x) vs \(y)"]
    default:
        return ["\(path): \(a) vs \(b)"]
    }
}

/// Asserts that qed-img and qemu-img print the same thing and exit alike for `args`.
func expectSameAsQemu(
    _ box: Sandbox, _ args: [String], json: Bool = false, comment: String = "",
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let ours = try box.ours(args)
    let theirs = try box.qemu(args)
    #expect(
        ours.status == theirs.status, "\(comment) \(args): status ours \(ours) / qemu \(theirs)",
        sourceLocation: sourceLocation)
    #expect(
        ours.lines == theirs.lines, "\(comment) \(args): output ours \(ours) / qemu \(theirs)",
        sourceLocation: sourceLocation)
    if json {
        let a = try parseJSON(ours.stdout), b = try parseJSON(theirs.stdout)
        let diffs = jsonDifferences(a, b)
        #expect(diffs.isEmpty, "\(comment) \(args): JSON differs: \(diffs)", sourceLocation: sourceLocation)
    }
}
