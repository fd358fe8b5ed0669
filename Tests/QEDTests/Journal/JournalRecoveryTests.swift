import Foundation
import Testing

@testable import QED

/// Journal recovery's decisions, one case each (docs/journal.md §2, "Recovery"): when it may use
/// the log and when the full check must run, and the slide-down that leaves no leak, including a
/// table parked at the end because it would overlap itself.
@Suite("Journal recovery")
struct JournalRecoveryTests {
    /// 4 KiB clusters, 2-cluster tables (one L2 table maps 4 MiB of guest space), an 8 MiB disk.
    static func journaled(journalSize: UInt64 = 16 << 10) throws -> (FaultInjectingFile, OpenOptions) {
        let file = FaultInjectingFile(path: "/journal-recovery/disk.qed")
        var create = CreateOptions(size: 8 << 20, clusterSize: 4096, tableSize: 2)
        create.journalSize = journalSize
        try Image.create(on: file, options: create)
        var options = OpenOptions()
        options.needCheckDelay = 1e6
        return (file, options)
    }

    static func pattern(_ byte: UInt8, _ count: Int = 4096) -> [UInt8] { [UInt8](repeating: byte, count: count) }

    /// Reopens `bytes` (a crash's survivor) and returns the image with its check on open.
    static func reopen(_ bytes: [UInt8], options: OpenOptions) throws -> (Image, CheckReport) {
        let image = try Image.open(
            file: FaultInjectingFile(bytes, path: "/journal-recovery/disk.qed"), options: options)
        let report = try #require(image.checkOnOpen, "the survivor must be dirty")
        return (image, report)
    }

    @Test("a crash after writes is recovered from the journal: its tables only, no leak")
    func recoversFromTheJournal() throws {
        let (file, options) = try Self.journaled()
        let image = try Image.open(file: file, options: options)
        try image.write(Self.pattern(0x11), at: 0)
        try image.write(Self.pattern(0x22), at: 5 << 20)
        let (recovered, report) = try Self.reopen(file.volatileBytes, options: options)
        #expect(report.method == .journal && report.journalRecords == 3, "\(report)")  // CHECKPOINT + 2 indices
        #expect(try recovered.read(at: 0, count: 4096) == Self.pattern(0x11))
        #expect(try recovered.read(at: 5 << 20, count: 4096) == Self.pattern(0x22))
        let check = try recovered.check()
        #expect(check.isClean, "\(check)")
        try recovered.close()
        try image.close()
    }

    @Test("an L2 update lost below a new table: the table is parked, slides down, and nothing leaks")
    func tableOverlappingItselfIsParked() throws {
        let (file, options) = try Self.journaled()
        let setup = try Image.open(file: file, options: options)
        try setup.write(Self.pattern(0x01), at: 0)  // table 0 exists before the period
        try setup.close()
        let image = try Image.open(file: file, options: options)
        let highWater = image.fileSize
        try image.write(Self.pattern(0x33), at: 8192)  // data D at H, entry in table 0
        try image.write(Self.pattern(0x44), at: 5 << 20)  // table 1 at H+1 (2 clusters), data at H+3
        #expect(image.fileSize == highWater + 4 * 4096)
        // The crash loses D's L2 entry (its TOUCHED record stays): D is a leak below table 1.
        var bytes = file.volatileBytes
        let table0 = image.l1.entry(0)
        bytes.replaceSubrange(Int(table0) + 2 * 8..<Int(table0) + 3 * 8, with: [UInt8](repeating: 0, count: 8))
        try image.close()

        let (recovered, report) = try Self.reopen(bytes, options: options)
        #expect(report.method == .journal && report.leaksFixed == 1, "\(report)")
        #expect(recovered.fileSize == highWater + 3 * 4096, "the file ends after the slid units")
        #expect(recovered.l1.entry(1) == highWater, "table 1 slid down over the leaked cluster")
        #expect(try recovered.read(at: 8192, count: 4096) == Self.pattern(0), "the lost write reads its old value")
        #expect(try recovered.read(at: 5 << 20, count: 4096) == Self.pattern(0x44))
        #expect(try recovered.read(at: 0, count: 4096) == Self.pattern(0x01))
        let check = try recovered.check()
        #expect(check.isClean, "\(check)")
        try recovered.close()
    }

    @Test("a journal too small to name a table overflows: the full check runs")
    func overflowRunsTheFullCheck() throws {
        let (file, options) = try Self.journaled(journalSize: 4096)  // one journal cluster: no room
        let image = try Image.open(file: file, options: options)
        try image.write(Self.pattern(0x55), at: 1 << 20)
        let (recovered, report) = try Self.reopen(file.volatileBytes, options: options)
        #expect(report.method == .scan && report.corruptions == 0, "\(report)")
        #expect(recovered.isJournalValid && !recovered.isDirty)
        #expect(try recovered.read(at: 1 << 20, count: 4096) == Self.pattern(0x55))
        try recovered.close()
        try image.close()
    }

    @Test("an allocation on an image opened dirty without its check appends OVERFLOW: the full check runs")
    func allocationBeforeRecoveryForcesTheFullCheck() throws {
        let (file, options) = try Self.journaled()
        let image = try Image.open(file: file, options: options)
        try image.write(Self.pattern(0x66), at: 0)
        let crashed = file.volatileBytes
        try image.close()

        var noCheck = options
        noCheck.autoCheck = false
        let dirtyFile = FaultInjectingFile(crashed, path: "/journal-recovery/disk.qed")
        let dirty = try Image.open(file: dirtyFile, options: noCheck)
        #expect(dirty.isDirty && dirty.checkOnOpen == nil)
        try dirty.write(Self.pattern(0x77), at: 6 << 20)  // not described by the log from before
        let (recovered, report) = try Self.reopen(dirtyFile.volatileBytes, options: options)
        #expect(report.method == .scan, "\(report)")
        #expect(try recovered.read(at: 6 << 20, count: 4096) == Self.pattern(0x77))
        try recovered.close()
        try dirty.close()
    }

    @Test("opened dirty without its check and closed: NEED_CHECK and the log stay for the next open")
    func closeWithoutRecoveryKeepsTheLog() throws {
        let (file, options) = try Self.journaled()
        let image = try Image.open(file: file, options: options)
        try image.write(Self.pattern(0x21), at: 5 << 20)
        let crashed = file.volatileBytes
        try image.close()

        var noCheck = options
        noCheck.autoCheck = false
        let dirtyFile = FaultInjectingFile(crashed, path: "/journal-recovery/disk.qed")
        let dirty = try Image.open(file: dirtyFile, options: noCheck)
        try dirty.close()
        let (recovered, report) = try Self.reopen(dirtyFile.volatileBytes, options: options)
        #expect(report.method == .journal, "the log must survive a close that checked nothing: \(report)")
        #expect(try recovered.read(at: 5 << 20, count: 4096) == Self.pattern(0x21))
        try recovered.close()
    }

    @Test("a dirty image whose journal bit was cleared (a QEMU open) gets the full check")
    func clearedBitRunsTheFullCheck() throws {
        let (file, options) = try Self.journaled()
        let image = try Image.open(file: file, options: options)
        try image.write(Self.pattern(0x12), at: 4096)
        var bytes = file.volatileBytes
        bytes[32] &= ~UInt8(JournalArea.validBit)  // autoclear_features, as QEMU leaves it
        try image.close()
        let (recovered, report) = try Self.reopen(bytes, options: options)
        #expect(report.method == .scan && !recovered.isJournalValid, "\(report)")
        #expect(try recovered.read(at: 4096, count: 4096) == Self.pattern(0x12))
        try recovered.close()
    }

    @Test("plans: records this engine does not know, OVERFLOW, or no CHECKPOINT first mean the full check")
    func plans() throws {
        func scan(_ records: [JournalEntry], continues: Bool = false) -> JournalScan {
            var s = JournalScan()
            s.commits = records.enumerated().map {
                JournalCommit(sequence: UInt64($0.offset + 1), entries: [$0.element])
            }
            s.continuesAfterStop = continues
            return s
        }
        func entry(_ r: JournalRecord) -> JournalEntry {
            JournalEntry(type: r.encoded.type, payload: r.encoded.payload)
        }
        let checkpoint = entry(.checkpoint(highWater: 1 << 20))
        #expect(
            JournalRecovery.plan(
                scan([checkpoint, entry(.touched(l1Index: 3)), entry(.touched(l1Index: 1))]), l1Entries: 8)
                == JournalRecovery.Plan(highWater: 1 << 20, indices: [1, 3]))
        #expect(JournalRecovery.plan(scan([]), l1Entries: 8) == JournalRecovery.Plan(highWater: nil, indices: []))
        #expect(JournalRecovery.plan(scan([entry(.touched(l1Index: 1))]), l1Entries: 8) == nil)
        #expect(JournalRecovery.plan(scan([checkpoint, entry(.overflow)]), l1Entries: 8) == nil)
        #expect(JournalRecovery.plan(scan([checkpoint, entry(.touched(l1Index: 8))]), l1Entries: 8) == nil)
        #expect(JournalRecovery.plan(scan([checkpoint, JournalEntry(type: 0x40, payload: [])]), l1Entries: 8) == nil)
        #expect(JournalRecovery.plan(scan([checkpoint, JournalEntry(type: 0x11, payload: [1])]), l1Entries: 8) == nil)
        #expect(JournalRecovery.plan(scan([checkpoint], continues: true), l1Entries: 8) == nil)
    }
}
