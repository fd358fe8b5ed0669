import Foundation
import QED
import TestSupport
import Testing

/// Ranged durability (`BlockFile.writeDurably`): the fault-injecting file's model of it, the
/// engine's use of it for new L2 tables, and `PosixFile`'s `RWF_DSYNC` write.
@Suite("Durable writes")
struct DurableWriteTests {
    @Test("fault-injecting file: a durable write leaves other pending writes pending")
    func modelKeepsOthersPending() throws {
        var rng = ModelRNG(seed: 21)
        let file = FaultInjectingFile([UInt8](repeating: 0, count: 8))
        try file.writeBytes([0xA1, 0xA2], at: 0)
        try file.setLength(16)
        // An older pending write that overlaps the durable one: the newer bytes must win.
        try file.writeBytes([0xC1, 0xC2], at: 11)
        try durable(file, [0xB1, 0xB2], at: 12)
        #expect(file.durableWriteCount == 1 && file.syncCount == 0)
        var lost = [UInt8](repeating: 0, count: 16)
        lost[12] = 0xB1
        lost[13] = 0xB2
        #expect(file.durableBytes == lost, "only the durable write and the new length are durable")
        #expect(file.crash(mode: .loseAll, rng: &rng) == lost)
        var kept = lost
        kept[0] = 0xA1
        kept[1] = 0xA2
        kept[11] = 0xC1
        #expect(file.crash(mode: .keepAll, rng: &rng) == kept)
        #expect(file.volatileBytes == kept)
    }

    @Test("fault-injecting file: a pending shrink is settled before a durable write")
    func modelSettlesShrinks() throws {
        var rng = ModelRNG(seed: 22)
        let file = FaultInjectingFile([UInt8](repeating: 1, count: 16))
        try file.setLength(4)
        try durable(file, [9, 9], at: 8)
        // The shrink zeroed bytes 4..<8 before the file grew again; a crash cannot bring them back.
        let want: [UInt8] = [1, 1, 1, 1, 0, 0, 0, 0, 9, 9]
        #expect(file.crash(mode: .loseAll, rng: &rng) == want)
        #expect(file.crash(mode: .keepAll, rng: &rng) == want)
    }

    @Test("fault-injecting file: a durable write fails like a sync while syncs fail")
    func modelFailsLikeSync() throws {
        let file = FaultInjectingFile([UInt8](repeating: 0, count: 4))
        try file.writeBytes([5], at: 0)
        file.failSyncs(1)
        #expect(throws: QEDError.self) { try durable(file, [7], at: 2) }
        #expect(file.volatileBytes == [0, 0, 0, 0] && file.pendingCount == 0)
    }

    @Test("a new L2 table is made durable alone: guest data written before it stays pending")
    func newTableSyncsOnlyItself() throws {
        let file = FaultInjectingFile()
        // 4 KiB clusters, two-cluster tables: an L2 table covers 4 MiB of guest data.
        let (image, options) = try createAndOpenWithoutTimer(
            on: file, CreateOptions(size: 32 << 20, clusterSize: 4096, tableSize: 2))
        let first = [UInt8](repeating: 0x11, count: 4096)
        let second = [UInt8](repeating: 0x22, count: 4096)
        try image.write(first, at: 0)
        let syncs = file.syncCount
        try image.write(second, at: 8 << 20)
        #expect(file.durableWriteCount == 2, "one durable write per new table")
        #expect(file.syncCount == syncs, "creating a table must not sync the whole file")
        let stillPending = file.pendingOperations.contains {
            if case .write(_, let bytes) = $0 { bytes == first } else { false }
        }
        #expect(stillPending, "the first write's data must not have been made durable by the second table")

        var rng = ModelRNG(seed: 23)
        for mode in [FaultInjectingFile.CrashMode.loseAll, .keepAll, .keepSubset(0.5), .torn(0.5)] {
            let survivor = FaultInjectingFile(
                FaultInjectingFile.survivor(
                    durable: file.durableBytes, pending: file.pendingOperations, mode: mode, rng: &rng))
            let recovered = try Image.open(file: survivor, options: options)
            let report = try recovered.check()
            #expect(report.corruptions == 0 && report.checkErrors == 0, "\(mode): \(report)")
            let head = try recovered.read(at: 0, count: 4096)
            #expect(head == first || head == [UInt8](repeating: 0, count: 4096), "\(mode)")
            if mode == .keepAll { #expect(try recovered.read(at: 8 << 20, count: 4096) == second) }
            try recovered.close()
        }
        try image.close()
    }

    @Test("with a journal, a new table still syncs the file (the journal record rides on it)")
    func journalKeepsWholeFileSync() throws {
        let file = FaultInjectingFile()
        var create = CreateOptions(size: 32 << 20, clusterSize: 4096, tableSize: 2)
        create.journalSize = 16 << 10
        let (image, _) = try createAndOpenWithoutTimer(on: file, create)
        try image.write([UInt8](repeating: 0x33, count: 4096), at: 0)
        let syncs = file.syncCount
        try image.write([UInt8](repeating: 0x44, count: 4096), at: 8 << 20)
        #expect(file.durableWriteCount == 0)
        #expect(file.syncCount > syncs)
        try image.close()
    }

    @Test("PosixFile: a durable write lands, grows the file, and is refused once closed")
    func posixDurableWrite() throws {
        let dir = try TemporaryDirectory(prefix: "qed-durable")
        defer { dir.remove() }
        for ignoringFlushes in [false, true] {
            let path = dir.path + "/f\(ignoringFlushes)"
            try PosixFile.create(path: path).close()
            let file = try PosixFile(path: path, writable: true, ignoringFlushes: ignoringFlushes)
            let bytes = [UInt8](repeating: 0x5A, count: 512)
            try bytes.withUnsafeBytes { try file.writeDurably($0, at: 1 << 20) }
            #expect(try file.length() == (1 << 20) + 512)
            #expect(try file.readBytes(count: 512, at: 1 << 20) == bytes)
            #expect(try file.readBytes(count: 512, at: 0) == [UInt8](repeating: 0, count: 512))
            file.close()
            let closed = try #require(
                expectQEDError(.closed) { try bytes.withUnsafeBytes { try file.writeDurably($0, at: 0) } })
            #expect(closed.path == path)
        }
    }
}

/// Writes `bytes` at `offset` of `file` with ``FaultInjectingFile/writeDurably(_:at:)``.
private func durable(_ file: FaultInjectingFile, _ bytes: [UInt8], at offset: UInt64) throws {
    try bytes.withUnsafeBytes { try file.writeDurably($0, at: offset) }
}
