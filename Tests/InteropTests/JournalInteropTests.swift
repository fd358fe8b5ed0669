import Foundation
import QED
import TestSupport
import Testing

/// Journaled images (docs/journal.md §2) against the real QEMU tools: QEMU opens and checks them,
/// a QEMU write turns the journal off (and swift-qed then runs the full check after a crash), and
/// a backing file name long enough to reach the journal region turns it off without corrupting it.
@Suite("Interop: journaled images")
struct JournalInteropTests {
    /// The image file's bytes as they are now: what survives a crash of the process writing it
    /// (the page cache keeps every write; nothing is lost but the process).
    static func crashCopy(of path: String, to copy: String) throws {
        try Data(contentsOf: URL(fileURLWithPath: path)).write(to: URL(fileURLWithPath: copy))
    }

    /// Options whose NEED_CHECK timer never fires on its own (the test decides when it is clean).
    static var quiet: OpenOptions {
        var options = OpenOptions()
        options.needCheckDelay = 1e6
        return options
    }

    @Test("qemu-img check is clean on journaled images, after writes and after a crash recovered from the journal")
    func qemuChecksJournaledImages() throws {
        let dir = try TemporaryDirectory()
        var rng = SplitMix64(seed: 0x10_1A01)
        for (cs, journal) in [(UInt32(4096), UInt64(64 << 10)), (65536, JournalArea.defaultSize)] {
            let path = dir.file("j\(cs).qed")
            var create = CreateOptions(size: 64 << 20, clusterSize: cs, tableSize: 2)
            create.journalSize = journal
            try Image.create(path: path, options: create)
            #expect(try QEMU.check(path) == QEMU.Check(status: 0, totalClusters: Int((64 << 20) / UInt64(cs))))
            var expected = ExpectedDisk(size: 64 << 20, clusterSize: UInt64(cs))
            let image = try Image.open(path: path, options: Self.quiet)
            for _ in 0..<40 {
                let at = UInt64.random(in: 0..<((64 << 20) - 70_000), using: &rng)
                let data = (0..<Int.random(in: 1...70_000, using: &rng)).map { _ in
                    UInt8.random(in: 0...255, using: &rng)
                }
                try image.write(data, at: at)
                expected.write(data, at: at)
            }
            #expect(image.isDirty)
            // A crash now: the copy is dirty, and its journal names every table the writes touched.
            let crashed = dir.file("j\(cs)-crashed.qed")
            try Self.crashCopy(of: path, to: crashed)
            try image.close()
            let qemuClean = try QEMU.check(path)
            #expect(qemuClean.status == 0 && qemuClean.leaks == 0 && qemuClean.corruptions == 0, "\(qemuClean)")

            let recovered = try Image.open(path: crashed, options: Self.quiet)
            let report = try #require(recovered.checkOnOpen)
            #expect(report.method == .journal && report.corruptions == 0, "\(report)")
            #expect(!recovered.isDirty && recovered.isJournalValid)
            #expect(try recovered.read(at: 0, count: 64 << 20) == expected.read(at: 0, count: 64 << 20))
            try recovered.close()
            let afterRecovery = try QEMU.check(crashed)
            #expect(afterRecovery.status == 0 && afterRecovery.leaks == 0, "\(afterRecovery)")
        }
    }

    @Test("a QEMU write clears the journal bit; a crash after it gets the full check, which repairs")
    func qemuWriteTurnsTheJournalOff() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("q.qed")
        var create = CreateOptions(size: 16 << 20, clusterSize: 4096, tableSize: 2)
        create.journalSize = 32 << 10
        try Image.create(path: path, options: create)
        let before = try Image.open(path: path, options: OpenOptions(readOnly: true))
        #expect(before.isJournalValid)
        try before.close()

        // QEMU writes and crashes (abort): its open cleared the bit, its allocation set NEED_CHECK.
        let r = try QEMU.io(["-c", "write -P 0x11 0 64k", "-c", "write -P 0x22 9M 8k", "-c", "abort", path])
        #expect(r.status != 0, "qemu-io abort should end the process abnormally: \(r)")
        let header = try Header(decoding: Data(contentsOf: URL(fileURLWithPath: path)).prefix(64))
        #expect(header.autoclearFeatures & JournalArea.validBit == 0, "QEMU must have cleared the journal bit")

        // swift-qed opens it: no journal, so the full check, which finds it consistent.
        let opened = try Image.open(path: path, options: Self.quiet)
        let qemuReport = try #require(opened.checkOnOpen, "QEMU's crash must have left NEED_CHECK set")
        #expect(qemuReport.method == .scan && qemuReport.corruptions == 0, "\(qemuReport)")
        #expect(!opened.isJournalValid)
        #expect(try opened.read(at: 0, count: 65536) == [UInt8](repeating: 0x11, count: 65536))
        // Our own crash on the unjournaled image: the reopen scans every table again.
        try opened.write([UInt8](repeating: 0x33, count: 12288), at: 5 << 20)
        let crashed = dir.file("q-crashed.qed")
        try Self.crashCopy(of: path, to: crashed)
        try opened.close()
        let recovered = try Image.open(path: crashed, options: Self.quiet)
        let report = try #require(recovered.checkOnOpen, "the crashed copy must be dirty")
        #expect(report.method == .scan && report.corruptions == 0, "\(report)")
        #expect(try recovered.read(at: 9 << 20, count: 8192) == [UInt8](repeating: 0x22, count: 8192))
        #expect(try recovered.read(at: 5 << 20, count: 12288) == [UInt8](repeating: 0x33, count: 12288))
        try recovered.close()
        #expect(try QEMU.check(crashed).status == 0)

        // amend re-arms it; QEMU still checks the image clean.
        let rearm = try Image.open(path: path)
        try rearm.setJournal(enabled: true)
        #expect(rearm.isJournalValid)
        try rearm.close()
        #expect(try QEMU.check(path).status == 0)
        let reread = try Image.open(path: path, options: OpenOptions(readOnly: true))
        #expect(reread.isJournalValid)
        try reread.close()
    }

    /// A relative backing name of `length` bytes naming `base.raw` in the image's directory.
    static func longName(_ length: Int) -> String {
        let tail = "base.raw"
        return String(repeating: "./", count: (length - tail.count) / 2) + (length % 2 == 0 ? "" : "/") + tail
    }

    @Test("a backing name reaching the journal region turns the journal off, ours and qemu-img's rebase")
    func longBackingNameTurnsTheJournalOff() throws {
        let dir = try TemporaryDirectory()
        let basePath = dir.file("base.raw")
        let base = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try Data(base).write(to: URL(fileURLWithPath: basePath))
        let name = Self.longName(4050)  // 64 + 4050 > 4096: the name spills into cluster 1
        #expect(name.utf8.count == 4050)

        for tool in ["ours", "qemu-img"] {
            let path = dir.file("\(tool).qed")
            var create = CreateOptions(size: 1 << 20, clusterSize: 4096, tableSize: 2)
            create.journalSize = 16 << 10
            create.backingFile = "base.raw"
            create.backingFormat = .raw
            try Image.create(path: path, options: create)
            if tool == "ours" {
                let image = try Image.open(path: path)
                try image.setBacking(name: name, format: .raw)
                #expect(!image.isJournalValid, "our rebase must turn the journal off")
                try image.close()
            } else {
                try QEMU.imgOK("rebase", "-u", "-f", "qed", "-b", name, "-F", "raw", path)
            }
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            let header = try Header(decoding: bytes.prefix(64))
            #expect(header.autoclearFeatures & JournalArea.validBit == 0, "\(tool): the journal bit must be clear")
            #expect(Array(bytes[64..<(64 + 4050)]) == Array(name.utf8), "\(tool): the name is stored whole")

            // Our read-write opens and writes never touch the region now.
            let image = try Image.open(path: path, options: Self.quiet)
            #expect(!image.isJournalValid)
            try image.write([UInt8](repeating: 0x5A, count: 5000), at: 70_000)
            try image.close()
            let after = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            #expect(Array(after[64..<(64 + 4050)]) == Array(name.utf8), "\(tool): the name was overwritten")
            #expect(try QEMU.check(path).status == 0)
            let reread = try Image.open(path: path, options: OpenOptions(readOnly: true))
            var expected = Array(base)
            expected.replaceSubrange(70_000..<75_000, with: repeatElement(0x5A, count: 5000))
            #expect(try reread.read(at: 0, count: 1 << 20) == expected, "\(tool): data through the long name")
            try reread.close()

            // amend cannot re-arm it while the name reaches the region.
            let rearm = try Image.open(path: path)
            #expect(throws: QEDError.self) { try rearm.setJournal(enabled: true) }
            try rearm.close()
        }
    }
}
