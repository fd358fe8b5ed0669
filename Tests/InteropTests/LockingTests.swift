import Foundation
import QED
import TestSupport
import Testing

/// QEMU-compatible image locks: QEMU and we exclude each other as QEMU processes do.
/// Serialized: the tests run long-lived qemu-io children.
@Suite("Interop: image locking", .serialized)
struct LockingTests {
    static func makeImage(_ dir: TemporaryDirectory) throws -> String {
        let img = dir.file("locked.qed")
        try Image.create(path: img, options: CreateOptions(size: 1 << 20, clusterSize: 4096))
        let image = try openImage(img)
        try image.write([UInt8](repeating: 0x42, count: 4096), at: 0)
        try image.closeReleasingLocks()  // qemu-io opens it next
        return img
    }

    func expectLocked(_ body: () throws -> Image, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let image = try body()
            try? image.close()
            Issue.record("\(what): opened although it should be locked", sourceLocation: sourceLocation)
        } catch let error as QEDError {
            #expect(error.code == .locked, "\(what): \(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("\(what): unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func qemuWriterExcludesOurWriterAndReader() throws {
        let dir = try TemporaryDirectory()
        let img = try Self.makeImage(dir)
        let holder = try QEMUIOHolder(image: img)
        defer { holder.stop() }
        expectLocked({ try Image.open(path: img) }, "read-write open")
        expectLocked({ try Image.open(path: img, options: OpenOptions(readOnly: true)) }, "read-only open")
        // Force-share reads along.
        let shared = try openImage(img, OpenOptions(readOnly: true, forceShare: true))
        #expect(try shared.read(at: 0, count: 16) == [UInt8](repeating: 0x42, count: 16))
        try shared.close()
        holder.stop()
        // Once qemu-io is gone, we may write again.
        let rw = try openImage(img)
        try rw.close()
    }

    @Test func qemuReaderExcludesOurWriterOnly() throws {
        let dir = try TemporaryDirectory()
        let img = try Self.makeImage(dir)
        let holder = try QEMUIOHolder(image: img, extra: ["-r"])
        defer { holder.stop() }
        expectLocked({ try Image.open(path: img) }, "read-write open next to a QEMU reader")
        let ro = try openImage(img, OpenOptions(readOnly: true))
        #expect(try ro.read(at: 0, count: 4) == [0x42, 0x42, 0x42, 0x42])
        try ro.close()
    }

    @Test func ourWriterExcludesQEMU() throws {
        let dir = try TemporaryDirectory()
        let img = try Self.makeImage(dir)
        let image = try openImage(img)
        let info = try QEMU.img("info", img)
        #expect(info.status == 1 && info.stderr.contains("Failed to get shared \"write\" lock"), "\(info)")
        let infoU = try QEMU.img("info", "-U", img)
        #expect(infoU.status == 0 && infoU.stdout.contains("file format: qed"), "\(infoU)")
        let reader = try QEMU.io(["-r", "-c", "read 0 512", img])
        #expect(reader.stderr.contains("lock"), "qemu-io -r opened an image we hold read-write: \(reader)")
        try image.close()
        // Every lock byte goes with the close (once a child another test may be spawning, which holds
        // a copy of the descriptor until it execs, has exec'd).
        #expect(ProcLocks.waitUntilUnlocked(img), "locks left after close: \(ProcLocks.lockedRanges(img) ?? [])")
        let after = try QEMU.img("info", img)
        #expect(after.status == 0, "\(after)")
    }

    @Test func ourReaderLetsQEMUReadButNotWrite() throws {
        let dir = try TemporaryDirectory()
        let img = try Self.makeImage(dir)
        let image = try openImage(img, OpenOptions(readOnly: true))
        defer { try? image.close() }
        let info = try QEMU.img("info", img)
        #expect(info.status == 0, "\(info)")
        let writer = try QEMU.io(["-c", "write 0 512", img])
        #expect(writer.stderr.contains("Failed to get \"write\" lock"), "qemu-io wrote while we read: \(writer)")
        #expect(try image.read(at: 0, count: 4) == [0x42, 0x42, 0x42, 0x42])
    }

    @Test func twoOfOurOpensInOneProcessConflict() throws {
        let dir = try TemporaryDirectory()
        let img = try Self.makeImage(dir)
        let first = try openImage(img)
        expectLocked({ try Image.open(path: img) }, "second read-write open")
        expectLocked(
            { try Image.open(path: img, options: OpenOptions(readOnly: true)) }, "read-only open next to our writer")
        let shared = try openImage(img, OpenOptions(readOnly: true, forceShare: true))
        try shared.close()
        try first.close()
        let second = try openImage(img)
        try second.close()
    }
}
