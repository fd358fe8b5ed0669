import Foundation
import TestSupport
import Testing

/// The NBD peers newer than Debian 12's (QEMU 10, libnbd 1.22, nbdkit 1.42), run from the Debian 13 chroot
/// that `scripts/debian13-peers setup` makes. Its wrapper folder holds one script per tool (`qemu-img`,
/// `qemu-io`, `nbdinfo`, `nbdcopy`, `python3`, …); they run the chroot's tool in the caller's directory,
/// with /tmp shared, so the sandboxes (under /tmp) and their Unix sockets are seen on both sides.
enum NewerPeers {
    /// The chroot (`QED_PEERS_ROOT`, as the script reads it).
    static let root = ProcessInfo.processInfo.environment["QED_PEERS_ROOT"] ?? "/opt/debian13-peers"
    /// The wrapper folder.
    static var bin: String { root + ".bin" }

    /// Why the peers cannot be used, or nil when they can.
    static var missing: String? { missing(tools: []) }

    /// Why the peers, with the wrappers `tools` besides the common ones, cannot be used, or nil when they can.
    static func missing(tools extra: [String]) -> String? {
        let tools = ["qemu-img", "qemu-io", "nbdinfo", "nbdcopy", "python3"] + extra
        let absent = tools.filter { !FileManager.default.isExecutableFile(atPath: bin + "/" + $0) }
        var problems: [String] = []
        if !absent.isEmpty { problems.append("no wrapper for \(absent.joined(separator: ", ")) in \(bin)") }
        if !FileManager.default.isExecutableFile(atPath: root + "/usr/bin/nbdinfo") {
            problems.append("no Debian 13 chroot at \(root)")
        }
        if getuid() != 0 { problems.append("not running as root (the wrappers use chroot)") }
        guard !problems.isEmpty else { return nil }
        return "The newer NBD peers (QEMU 10, libnbd 1.22 from Debian 13) are missing: "
            + problems.joined(separator: "; ")
            + ". Make them as root with `scripts/debian13-peers setup` (scripts/test does this when run as root)."
    }

    /// Fails the test (never skips it) when the peers (and the wrappers `tools`) are missing.
    static func require(tools: [String] = [], sourceLocation: SourceLocation = #_sourceLocation) throws {
        if let missing = missing(tools: tools) {
            try #require(Bool(false), Comment(rawValue: missing), sourceLocation: sourceLocation)
        }
    }

    /// Fails the test when FUSE cannot be used here: no /dev/fuse (the `fuse` module not loaded, or a
    /// container without the device) or no fusermount3 (Debian's `fuse3` package) to unmount with.
    static func requireFUSE(sourceLocation: SourceLocation = #_sourceLocation) throws {
        var problems: [String] = []
        if !FileManager.default.fileExists(atPath: "/dev/fuse") {
            problems.append("no /dev/fuse (load the fuse module; a container needs the device passed in)")
        }
        if ChildProcess.locate("fusermount3", in: ChildProcess.systemDirectories) == nil {
            problems.append("no fusermount3 (install Debian's fuse3)")
        }
        if !problems.isEmpty {
            let text = "FUSE is not usable: " + problems.joined(separator: "; ")
            try #require(Bool(false), Comment(rawValue: text), sourceLocation: sourceLocation)
        }
    }

    /// The wrapper for `tool`.
    static func tool(_ tool: String) -> String { bin + "/" + tool }
}

extension NBDSandbox {
    /// Runs a Python script with Debian 13's interpreter and libnbd 1.22's `nbd` module.
    func newerPython(_ script: String, _ arguments: [String], timeout: Double = 300) throws -> NBDOutcome {
        let file = try write("script-\(UUID().uuidString).py", script)
        return try run(NewerPeers.tool("python3"), [file] + arguments, timeout: timeout)
    }

    /// Runs a newer peer that must succeed; records an issue with its output otherwise.
    @discardableResult
    func mustNewer(
        _ tool: String, _ arguments: [String], timeout: Double = 300,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> NBDOutcome {
        let outcome = try run(NewerPeers.tool(tool), arguments, timeout: timeout)
        #expect(outcome.status == 0, "\(tool) \(arguments): \(outcome)", sourceLocation: sourceLocation)
        return outcome
    }
}

extension NBDServerProcess {
    /// Whether a connection of this server (started with `-v`) entered transmission with extended headers.
    var negotiatedExtendedHeaders: Bool { self.log.contains("extended-headers=true") }
    /// Whether one entered transmission with compact headers.
    var negotiatedCompactHeaders: Bool { self.log.contains("extended-headers=false") }
    /// How many BLOCK_STATUS requests the server received (logged one per line with `-v`).
    var blockStatusRequests: Int {
        self.log.split(separator: "\n").filter { $0.hasSuffix("BLOCK_STATUS request") }.count
    }
}
