import Foundation
import QED
import TestSupport
import Testing

/// Our ``Image/check(repair:)`` counts what `qemu-img check` counts, on images QEMU made and
/// then damaged on purpose.
@Suite("Interop: check counts agree with qemu-img check")
struct CheckAgreementTests {
    struct Damage: Sendable, CustomTestStringConvertible {
        var name: String
        /// Expected (corruptions, leaks) as QEMU reports them without repair.
        var corruptions: Int
        var leaks: Int
        /// Corruptions a repair fixes.
        var fixable: Int
        var apply: @Sendable (String, QEDLayout) throws -> Void
        var testDescription: String { name }
    }

    static let damages: [Damage] = [
        Damage(name: "none", corruptions: 0, leaks: 0, fixable: 0) { _, _ in },
        Damage(name: "one leaked cluster at the end", corruptions: 0, leaks: 1, fixable: 0) { path, l in
            try Files.truncate(path, try Files.size(path) + l.clusterSize)
        },
        Damage(name: "partial cluster at the end is not a leak", corruptions: 0, leaks: 0, fixable: 0) { path, _ in
            try Files.truncate(path, try Files.size(path) + 512)
        },
        Damage(name: "L2 entry past EOF", corruptions: 1, leaks: 1, fixable: 1) { path, l in
            try Files.writeU64(path, 1 << 40, at: try l.l2EntryOffset(guest: 4096))
        },
        Damage(name: "L2 entry misaligned", corruptions: 1, leaks: 1, fixable: 1) { path, l in
            let e = try l.l2Entry(guest: 4096)
            try Files.writeU64(path, e + 512, at: try l.l2EntryOffset(guest: 4096))
        },
        Damage(name: "two L2 entries share a cluster", corruptions: 1, leaks: 1, fixable: 0) { path, l in
            let e = try l.l2Entry(guest: 0)
            try Files.writeU64(path, e, at: try l.l2EntryOffset(guest: 4096))
        },
        Damage(name: "L1 entry past EOF", corruptions: 1, leaks: 4, fixable: 1) { path, l in
            try Files.writeU64(path, 1 << 40, at: l.l1EntryOffset(guest: 4 << 20))
        },
        Damage(name: "L1 entry 1 (no zero marker at L1)", corruptions: 1, leaks: 4, fixable: 1) { path, l in
            try Files.writeU64(path, 1, at: l.l1EntryOffset(guest: 4 << 20))
        },
    ]

    /// A 4 KiB-cluster, table_size 2 image (L2 covers 4 MiB) with fragmentation inside a table,
    /// across tables and around zero clusters.
    static func makeImage(_ dir: TemporaryDirectory) throws -> String {
        let img = dir.file("c.qed")
        try QEMU.imgOK("create", "-f", "qed", "-o", "cluster_size=4096,table_size=2", img, "12M")
        try QEMU.ioOK(
            img,
            [
                "write -P 1 0 4k", "write -P 2 8k 4k", "write -P 3 4k 4k", "write -z 12k 4k",
                "write -P 4 16k 8k", "write -P 5 4M 4k", "write -P 6 4100k 4k", "write -P 7 8M 12k",
                "write -P 8 24k 4k",
            ])
        return img
    }

    @Test(arguments: damages)
    func countsAgree(_ damage: Damage) throws {
        let dir = try TemporaryDirectory()
        let img = try Self.makeImage(dir)
        try damage.apply(img, try QEDLayout(path: img))
        let theirs = try QEMU.check(img)
        #expect(theirs.corruptions == damage.corruptions && theirs.leaks == damage.leaks, "qemu: \(theirs)")

        let image = try openImage(img, OpenOptions(readOnly: true))
        let ours = try image.check()
        try image.closeReleasingLocks()
        #expect(CheckCounts(ours) == CheckCounts(theirs), "ours \(CheckCounts(ours)) qemu \(CheckCounts(theirs))")

        // Repair: the same corruptions fixed, the same left over.
        let copy = dir.file("copy.qed")
        try FileManager.default.copyItem(atPath: img, toPath: copy)
        let repairedByQEMU = try QEMU.check(img, extra: ["-r", "all"])
        let rw = try openImage(copy)
        let repaired = try rw.check(repair: true)
        try rw.closeReleasingLocks()
        #expect(repaired.corruptionsFixed == damage.fixable, "\(repaired)")
        #expect(repaired.corruptionsFixed == repairedByQEMU.corruptionsFixed, "ours \(repaired) qemu \(repairedByQEMU)")
        #expect(repaired.corruptions == repairedByQEMU.corruptions)
        let after = try QEMU.check(copy)
        #expect(after.corruptions == damage.corruptions - damage.fixable, "\(after)")
    }

    /// Counting rules found by experiment with QEMU 7.2: fragmentation is counted per L2 table
    /// (the first allocated entry of a table never counts) and zero clusters do not break a run.
    @Test func fragmentationCountedPerTable() throws {
        let dir = try TemporaryDirectory()
        let img = try Self.makeImage(dir)
        let l = try QEDLayout(path: img)
        // Table 0: clusters 0,1,2,(zero),4,5,6; table 1: 1024, 1025; table 2: 2048..2050.
        let t0 = try [0, 1, 2, 4, 5, 6].map { try l.l2Entry(guest: UInt64($0) * 4096) }
        let t1 = try [1024, 1025].map { try l.l2Entry(guest: UInt64($0) * 4096) }
        let t2 = try [2048, 2049, 2050].map { try l.l2Entry(guest: UInt64($0) * 4096) }
        #expect(try l.l2Entry(guest: 3 * 4096) == 1)
        func fragments(_ t: [UInt64]) -> Int { zip(t, t.dropFirst()).filter { $0 + 4096 != $1 }.count }
        let perTable = fragments(t0) + fragments(t1) + fragments(t2)
        let global = fragments(t0 + t1 + t2)
        #expect(perTable != global, "the image does not tell the rules apart")
        let theirs = try QEMU.check(img)
        #expect(theirs.fragmentedClusters == perTable, "qemu \(theirs), per table \(perTable), global \(global)")
        let image = try openImage(img, OpenOptions(readOnly: true))
        defer { try? image.close() }
        #expect(try Int(image.check().fragmentedClusters) == perTable)
    }
}
