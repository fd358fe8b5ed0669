import Foundation
import QED
import TestSupport

/// The images the fuzzer mutates, made by QEMU's own tools in a scratch directory: a few
/// geometries, data, zero clusters, a raw and a QED backing file, and a table_size=1 image
/// (created by qemu-img; QEMU cannot open it, so our engine writes its data).
///
/// The backing files stay in the directory and are never mutated; mutated images are opened from
/// memory under the name ``imagePath`` (which does not exist on disk), so their relative backing
/// names resolve inside the directory.
final class FuzzSeeds {
    /// One seed image.
    struct Seed {
        var name: String
        var bytes: [UInt8]
    }

    let dir: TemporaryDirectory
    private(set) var seeds: [Seed] = []

    /// Where mutated images claim to live (never created: a backing name naming it fails to open).
    var imagePath: String { dir.file("fuzz.qed") }
    /// A real file for the read-only-open-changes-nothing check.
    var readOnlyCopyPath: String { dir.file("ro.qed") }
    /// Backing names worth trying: the real backing files, missing ones, the image itself, the
    /// read-only copy, directories and odd spellings.
    let backingNames = [
        "base.raw", "plain4k.qed", "raw-backed.qed", "missing.qed", "fuzz.qed", "ro.qed", "..", "/",
        ".", "./base.raw", "sub/../base.raw", "base.raw/", String(repeating: "x", count: 300),
    ]

    init() throws {
        dir = try TemporaryDirectory(prefix: "qed-fuzz")
        try qemuImg("create", "-f", "raw", "base.raw", "1M")
        try qemuIO("-f", "raw", "-c", "write -P 0xb0 0 1M", "-c", "write -P 0xb1 4k 4k", "base.raw")

        try qemuImg("create", "-f", "qed", "-o", "cluster_size=4k,table_size=4", "plain4k.qed", "1M")
        try qemuIO(
            "-c", "write -P 0x11 0 64k", "-c", "write -P 0x22 300k 8k", "-c", "write -z 600k 12k",
            "-c", "write -P 0x33 1020k 4k", "-c", "write -P 0x44 512k 1k", "plain4k.qed")

        try qemuImg("create", "-f", "qed", "-o", "cluster_size=64k,table_size=2", "wide64k.qed", "2M")
        try qemuIO(
            "-c", "write -P 0x55 0 128k", "-c", "write -P 0x66 1049088 1k", "-c", "write -P 0x77 1984k 64k",
            "wide64k.qed")

        try qemuImg(
            "create", "-f", "qed", "-o", "cluster_size=4k,table_size=2", "-b", "base.raw", "-F", "raw",
            "raw-backed.qed", "1280K")
        try qemuIO(
            "-c", "write -P 0x88 2k 5k", "-c", "write -P 0x99 1040k 8k", "-c", "write -z 64k 8k",
            "raw-backed.qed")

        try qemuImg(
            "create", "-f", "qed", "-o", "cluster_size=8k,table_size=4", "-b", "plain4k.qed", "-F", "qed",
            "qed-backed.qed", "1M")
        try qemuIO("-c", "write -P 0xaa 12k 20k", "-c", "write -P 0xbb 900k 8k", "qed-backed.qed")

        try qemuImg("create", "-f", "qed", "-o", "cluster_size=4k,table_size=1", "one.qed", "1M")
        var options = OpenOptions()
        options.needCheckDelay = 3600
        let one = try openImage(dir.file("one.qed"), options)
        try one.write([UInt8](repeating: 0xcc, count: 12 << 10), at: 4 << 10)
        try one.write([UInt8](repeating: 0xcd, count: 4 << 10), at: 1020 << 10)
        try one.close()

        for name in ["plain4k.qed", "wide64k.qed", "raw-backed.qed", "qed-backed.qed", "one.qed"] {
            seeds.append(Seed(name: name, bytes: try dir.read(name)))
        }
    }

    private func qemuImg(_ arguments: String...) throws { try run("qemu-img", arguments) }
    private func qemuIO(_ arguments: String...) throws { try run("qemu-io", arguments) }

    private func run(_ tool: String, _ arguments: [String]) throws {
        let outcome = try ChildProcess.run(ChildProcess.systemTool(tool), arguments, in: dir.path, timeout: 120)
        guard outcome.status == 0 else { throw SeedFailure(command: [tool] + arguments, outcome: outcome) }
    }

    struct SeedFailure: Error, CustomStringConvertible {
        var command: [String]
        var outcome: ChildOutcome
        var description: String {
            "making a fuzz seed failed (the fuzzer needs qemu-img and qemu-io: apt-get install qemu-utils): \(command.joined(separator: " ")) → \(outcome)"
        }
    }
}
