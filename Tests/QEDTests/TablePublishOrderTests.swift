import Foundation
import TestSupport
import Testing

@testable import QED

// A table entry must not be visible to lock-free lookups before its sector write has been issued.
// Otherwise another request can act on the entry, complete, and be "flushed" by a sync that ran
// before the entry's sector reached the file: its data is then unreachable after a crash. That is
// how `CrashTests.concurrentCuts` once lost a flushed write (64K/4 raw-backing, seed 3234989063):
//
//   worker 0: first allocation in the image: allocates the L2 table, syncs, stores the L1 link in
//             memory … (preempted before writing the L1 sector)
//   worker 1: sees the link, allocates cluster 2 in that table, writes f3 4c… at 171971, syncs,
//             writes its L2 sector, returns
//   any:      flush() starts after that and syncs — the L1 sector is still not written
//   worker 0: writes the L1 sector; the power cut loses it (it was never synced)
//   recovery: L1 has no link, cluster 2 reads the backing file's 6f 61… — a flushed write is lost.
//
// These tests freeze the first request exactly at its table sector write (a GatedFile) and check
// that the second request's flushed data survives a crash that loses everything unsynced.

/// A ``BlockFile`` over a `MemoryFile` that calls `onWrite` with each write's offset before doing it.
private final class WriteObserverFile: BlockFile, @unchecked Sendable {
    let base = MemoryFile()
    var path: String { base.path }
    let isWritable = true
    /// Set once before the observed calls (single-threaded test).
    var onWrite: (UInt64) -> Void = { _ in }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        onWrite(offset)
        try base.write(bytes, at: offset)
    }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        try base.read(into: buffer, at: offset)
    }
    func sync() throws { try base.sync() }
    func length() throws -> UInt64 { try base.length() }
    func setLength(_ length: UInt64) throws { try base.setLength(length) }
    func punchHole(at offset: UInt64, length: UInt64) throws { try base.punchHole(at: offset, length: length) }
}

@Suite("Table publish order")
struct TablePublishOrderTests {
    @Test("Table.update writes the sector before lookups can see the new entries")
    func entriesArePublishedAfterTheirWrite() throws {
        let table = try Table(fileOffset: 4096, count: 256)
        let file = WriteObserverFile()
        try file.setLength(4096 + 256 * 8)
        try table.update(at: 65, values: [0x11_0000], file: file)
        var seenDuringWrite: [UInt64] = []
        file.onWrite = { _ in seenDuringWrite.append(table.entry(70)) }
        try table.update(at: 70, values: [0x22_0000, 0x23_0000], file: file)
        #expect(seenDuringWrite == [TableEntry.unallocated], "entry 70 was visible before its sector was written")
        #expect(table.entry(70) == 0x22_0000 && table.entry(71) == 0x23_0000)
        // The sector (entries 64–127) holds the new entries and keeps the neighbour written before.
        let sector = try file.base.readBytes(count: 512, at: 4096 + 64 * 8)
        func onDisk(_ i: Int) -> UInt64 {
            (0..<8).reduce(UInt64(0)) { $0 | UInt64(sector[(i - 64) * 8 + $1]) << (8 * UInt64($1)) }
        }
        #expect(onDisk(65) == 0x11_0000 && onDisk(70) == 0x22_0000 && onDisk(71) == 0x23_0000)
    }

    @Test("a failed table sector write leaves the entries in memory unchanged")
    func failedWritePublishesNothing() throws {
        let table = try Table(fileOffset: 0, count: 64)
        let file = FaultInjectingFile([UInt8](repeating: 0, count: 512))
        file.failMutation(after: 0)
        #expect(throws: QEDError.self) { try table.update(at: 3, values: [0x9000], file: file) }
        #expect(table.entry(3) == TableEntry.unallocated)
        try table.update(at: 3, values: [0x9000], file: file)
        #expect(table.entry(3) == 0x9000)
    }

    @Test("a write through a new L1 link, then flush, survives a crash while the link's creator is stalled")
    func flushedWriteThroughNewL2TableSurvives() throws {
        let dir = try TemporaryDirectory(prefix: "qed-publish-l1")
        defer { dir.remove() }
        let backing = (0..<(64 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        try dir.create("base.raw", backing)
        let disk = FaultInjectingFile(path: dir.file("disk.qed"))
        var create = CreateOptions(size: 1 << 20, clusterSize: 4096, tableSize: 2)
        create.backingFile = dir.file("base.raw")
        create.backingFormat = .raw
        try Image.create(on: disk, options: create)
        let gate = GatedFile(disk)
        let image = try Image.open(file: gate, options: .quiet())
        #expect(image.l1.entry(0) == TableEntry.unallocated)

        // Request A: the image's first allocation; it creates the L2 table and stops at the L1 write.
        gate.arm(holdingWriteAt: image.l1.fileOffset)
        let a = BackgroundThread { try image.write(bytes(0xAA, 4096), at: 0) }
        #expect(waitUntil { gate.isHolding }, "request A never reached its L1 sector write")

        // Request B: another cluster of the same L2 table, then a flush; what survives a crash now?
        let dataB = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) }
        let b = BackgroundThread { () throws -> [UInt8] in
            try image.write(dataB, at: 2 * 4096 + 100)
            try image.flush()
            return disk.durableBytes
        }
        // B either completes (it used a link whose sector A has not written) or waits for A's table.
        #expect(waitUntil { b.isFinished || image.tableCreationCallers.load(ordering: .relaxed) >= 2 })
        gate.release()
        try #require(a.join()).get()
        let durable = try #require(b.join()).get()
        try image.close()

        let recovered = try Image.open(file: FaultInjectingFile(durable, path: dir.file("disk.qed")), options: .quiet())
        defer { try? recovered.close() }
        #expect(
            try recovered.read(at: 2 * 4096 + 100, count: dataB.count) == dataB,
            "B's write completed before its flush started, so the flush must have made it durable")
    }

    @Test(
        "an in-place write into a cluster being allocated, then flush, survives a crash while the allocation is stalled"
    )
    func flushedWriteIntoClusterBeingAllocatedSurvives() throws {
        let disk = FaultInjectingFile(path: "/publish-order/l2.qed")
        try Image.create(on: disk, options: CreateOptions(size: 1 << 20, clusterSize: 4096, tableSize: 2))
        let gate = GatedFile(disk)
        let image = try Image.open(file: gate, options: .quiet())
        // An L2 table that is already linked and durable, so only its sector write is at stake.
        try image.write(bytes(0x55, 512), at: 5 * 4096)
        try image.flush()
        let l2 = image.l1.entry(0)

        // Request A allocates cluster 0 and stops at the write of the L2 sector holding its entry.
        gate.arm(holdingWriteAt: l2)
        let a = BackgroundThread { try image.write(bytes(0xAA, 4096), at: 0) }
        #expect(waitUntil { gate.isHolding }, "request A never reached its L2 sector write")

        // Request B writes inside the same cluster, then flushes.
        let dataB = bytes(0xBB, 512)
        let b = BackgroundThread { () throws -> [UInt8] in
            try image.write(dataB, at: 1024)
            try image.flush()
            return disk.durableBytes
        }
        // B either completes (it wrote in place through an entry whose sector is not written) or
        // waits for A's allocation to finish.
        #expect(waitUntil { b.isFinished || image.inflight.waiterCount > 0 })
        gate.release()
        try #require(a.join()).get()
        let durable = try #require(b.join()).get()
        try image.close()

        let recovered = try Image.open(
            file: FaultInjectingFile(durable, path: "/publish-order/l2.qed"), options: .quiet())
        defer { try? recovered.close() }
        #expect(
            try recovered.read(at: 1024, count: 512) == dataB,
            "B's write completed before its flush started, so the flush must have made it durable")
        #expect(try recovered.read(at: 5 * 4096, count: 512) == bytes(0x55, 512))
    }
}
