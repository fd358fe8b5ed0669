import Foundation
import QED
import Synchronization
import TestSupport
import Testing

@testable import QEDTools

#if canImport(Glibc)
import Glibc
#endif

/// A source disk whose reads fail (EIO) wherever they touch `bad`; everything else is `inner`'s.
private final class FailingReads: Disk {
    let inner: any Disk
    /// Guest bytes that cannot be read.
    let bad: Range<UInt64>

    init(_ inner: any Disk, bad: Range<UInt64>) {
        self.inner = inner
        self.bad = bad
    }

    var format: DiskFormat { inner.format }
    var path: String { inner.path }
    var isReadOnly: Bool { inner.isReadOnly }
    var virtualSize: UInt64 { inner.virtualSize }
    var backing: (any Disk)? { inner.backing }
    var clusterSize: UInt64? { inner.clusterSize }
    var isDirty: Bool { inner.isDirty }
    var backingFile: BackingFileReference? { inner.backingFile }
    func check(repair: Bool) throws -> CheckReport { try inner.check(repair: repair) }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        if (offset..<offset + UInt64(buffer.count)).overlaps(bad) {
            throw QEDError(.io, "injected read error", value: offset, errno: EIO, syscall: "pread")
        }
        try inner.read(into: buffer, at: offset)
    }
    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> Bool { false }
    func extents(at offset: UInt64, length: UInt64) throws -> [Extent] {
        try inner.extents(at: offset, length: length)
    }
    func allocatedBytes() -> UInt64? { inner.allocatedBytes() }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws { try inner.write(bytes, at: offset) }
    func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws {
        try inner.writeZeroes(at: offset, length: length, unmap: unmap)
    }
    func discard(at offset: UInt64, length: UInt64) throws { try inner.discard(at: offset, length: length) }
    func flush() throws { try inner.flush() }
    func resize(to newSize: UInt64) throws { try inner.resize(to: newSize) }
    func close() throws { try inner.close() }
}

/// `convert --salvage`: unreadable sectors become zeroes with qemu-img's warning, the rest is copied.
@Suite struct ConvertSalvageTests {
    @Test func unreadableSectorsBecomeZeroesAndAreReported() throws {
        let dir = try TemporaryDirectory(prefix: "salvage")
        let size = 256 << 10
        let content = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) | 1 }
        try Data(content).write(to: URL(fileURLWithPath: dir.file("src.raw")))
        let bad: Range<UInt64> = 66048..<67072  // two sectors inside the second 64 KiB
        let source = FailingReads(
            try RawImage(path: dir.file("src.raw"), options: OpenOptions(readOnly: true)), bad: bad)
        defer { try? source.close() }

        // Without --salvage the read error stops the copy.
        #expect(throws: QEDError.self) {
            try QEDTools.Convert.run(sources: [source], target: dir.file("plain.qed"), options: .init())
        }

        let warnings = Mutex([String]())
        var options = QEDTools.Convert.Options()
        options.salvage = true
        options.warning = { line in warnings.withLock { $0.append(line) } }
        try QEDTools.Convert.run(sources: [source], target: dir.file("out.qed"), options: options)
        #expect(
            warnings.withLock { $0.sorted() } == [
                "error while reading offset 66048: Input/output error",
                "error while reading offset 66560: Input/output error",
            ])
        let out = try DiskOpener.open(path: dir.file("out.qed"), format: .qed, options: OpenOptions(readOnly: true))
        defer { try? out.close() }
        var expected = content
        for i in Int(bad.lowerBound)..<Int(bad.upperBound) { expected[i] = 0 }
        #expect(try out.readBytes(at: 0, count: size) == expected)
        let report = try out.check(repair: false)
        #expect(report.corruptions == 0 && report.leaks == 0)
    }
}
