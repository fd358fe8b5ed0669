import Foundation
import TestSupport
import Testing

@testable import QED

/// ``RawImage`` over any ``BlockFile``: the same class serves real files, memory files and the
/// fault-injecting file, so raw targets can be tested with injected failures.
@Suite("RawImage over any BlockFile")
struct RawImageTests {
    /// A model of the disk kept next to the raw image; every read is compared with it.
    static func expectMatches(
        _ disk: RawImage, _ model: [UInt8], sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        #expect(disk.virtualSize == UInt64(model.count), sourceLocation: sourceLocation)
        #expect(try disk.readBytes(at: 0, count: model.count) == model, sourceLocation: sourceLocation)
    }

    @Test("reads, writes, zeroes and discards match a model (memory file)")
    func memoryFileModel() throws {
        var model = (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let disk = try RawImage(file: MemoryFile(model, path: "raw-model"))
        #expect(disk.format == .raw && disk.backing == nil && !disk.isReadOnly)
        try Self.expectMatches(disk, model)

        try bytes(0xC3, 5000).withUnsafeBytes { try disk.write($0, at: 1000) }
        model.replaceSubrange(1000..<6000, with: bytes(0xC3, 5000))
        try disk.writeZeroes(at: 8192, length: 4096, unmap: false)
        model.replaceSubrange(8192..<12288, with: bytes(0, 4096))
        try disk.writeZeroes(at: 20000, length: 3000, unmap: true)
        model.replaceSubrange(20000..<23000, with: bytes(0, 3000))
        try disk.discard(at: 40000, length: 100)  // may or may not zero: the model takes the disk's answer
        model.replaceSubrange(40000..<40100, with: try disk.readBytes(at: 40000, count: 100))
        try Self.expectMatches(disk, model)

        // Reads past the end throw; they never zero-fill.
        expectQEDError(.outOfRange) { try disk.readBytes(at: 65536 - 10, count: 11) }
        expectQEDError(.outOfRange) { try disk.extents(at: 65536, length: 1) }
        expectQEDError(.outOfRange) { try bytes(1, 1).withUnsafeBytes { try disk.write($0, at: UInt64.max) } }
        #expect(try disk.readZeroFillingPastEnd(count: 20, at: 65536 - 10) == Array(model[65526...]) + bytes(0, 10))

        try disk.resize(to: 70000)
        model += bytes(0, 70000 - 65536)
        try Self.expectMatches(disk, model)
        try disk.close()
        expectQEDError(.closed) { try disk.readBytes(at: 0, count: 1) }
    }

    @Test("zero writes without a cheap zero range write zeroes (fault-injecting file)")
    func zeroesOnFaultInjectingFile() throws {
        let file = FaultInjectingFile(bytes(0xEE, 16384), path: "/raw/zeroes.raw")
        let disk = try RawImage(file: file)
        try disk.writeZeroes(at: 4096, length: 4096, unmap: false)
        let pending = file.pendingOperations
        #expect(pending.count == 1)
        if case .write(let offset, let data)? = pending.first {
            #expect(offset == 4096 && data == bytes(0, 4096))
        } else {
            Issue.record("expected one write of zeroes, got \(pending)")
        }
        try disk.flush()
        #expect(file.durableBytes == bytes(0xEE, 4096) + bytes(0, 4096) + bytes(0xEE, 8192))
    }

    @Test("a failed flush is sticky: later writes and flushes throw until reopened")
    func flushFailureSticky() throws {
        let file = FaultInjectingFile(bytes(0, 8192), path: "/raw/sticky.raw")
        let disk = try RawImage(file: file)
        try bytes(0x11, 512).withUnsafeBytes { try disk.write($0, at: 0) }
        file.failSyncs(1)
        let first = expectQEDError(.io) { try disk.flush() }
        #expect(first?.errno == 5)
        let syncs = file.syncCount
        // The next sync would succeed, but the disk does not try: the lost write is not forgotten.
        for what in ["flush", "write", "writeZeroes", "resize"] {
            let error = expectQEDError(.io, what) {
                switch what {
                case "flush": try disk.flush()
                case "write": try bytes(0x22, 512).withUnsafeBytes { try disk.write($0, at: 0) }
                case "writeZeroes": try disk.writeZeroes(at: 0, length: 512, unmap: false)
                default: try disk.resize(to: 4096)
                }
            }
            #expect(error?.message.contains("failed earlier") == true, "\(what): \(String(describing: error))")
        }
        #expect(file.syncCount == syncs, "no sync after the failure")
        // Reads keep working, from what the file holds (the failed sync dropped the write).
        #expect(try disk.readBytes(at: 0, count: 512) == bytes(0, 512))
        expectQEDError(.io) { try disk.close() }
        // A new disk over the same file starts healthy.
        let reopened = try RawImage(file: file)
        try bytes(0x33, 512).withUnsafeBytes { try reopened.write($0, at: 0) }
        try reopened.flush()
        #expect(Array(file.durableBytes[0..<512]) == bytes(0x33, 512))
    }

    @Test("read-only: over a read-only file or when asked; writes refused, nothing written")
    func readOnly() throws {
        let file = MemoryFile(bytes(9, 4096), path: "ro.raw", writable: false)
        let disk = try RawImage(file: file)
        #expect(disk.isReadOnly)
        expectQEDError(.readOnly) { try bytes(1, 1).withUnsafeBytes { try disk.write($0, at: 0) } }
        let asked = try RawImage(file: MemoryFile(bytes(9, 4096)), readOnly: true)
        expectQEDError(.readOnly) { try asked.writeZeroes(at: 0, length: 1, unmap: true) }
        try disk.flush()
        #expect(file.syncCount == 0 && file.contents == bytes(9, 4096))
    }
}

extension Disk {
    /// ``readZeroFillingPastEnd(into:at:)`` into a new array.
    func readZeroFillingPastEnd(count: Int, at offset: UInt64) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xFF, count: count)
        try out.withUnsafeMutableBytes { try readZeroFillingPastEnd(into: $0, at: offset) }
        return out
    }
}
