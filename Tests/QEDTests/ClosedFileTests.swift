import Foundation
import QED
import TestSupport
import Testing

/// ``PosixFile`` after ``PosixFile/close()``: every call is refused without a system call.
@Suite("Closed files")
struct ClosedFileTests {
    @Test("every call on a closed file throws .closed, even when its descriptor number is reused")
    func closedFileRefusesCalls() throws {
        let dir = try TemporaryDirectory()
        let pathA = dir.file("a.img")
        let pathB = dir.file("b.img")
        try dir.create("a.img", bytes(1, 8192))
        try dir.create("b.img", bytes(2, 8192))
        let a = try PosixFile(path: pathA, writable: true)
        a.close()
        #expect(a.isClosed)
        // The kernel may hand a's old number to b; a must not write there.
        let b = try PosixFile(path: pathB, writable: true)
        defer { b.close() }
        var buffer = [UInt8](repeating: 0, count: 512)
        expectQEDError(.closed) { try a.writeBytes(bytes(9, 512), at: 0) }
        expectQEDError(.closed) { try buffer.withUnsafeMutableBytes { _ = try a.read(into: $0, at: 0) } }
        #expect(!buffer.withUnsafeMutableBytes { a.readIfCached(into: $0, at: 0) })
        expectQEDError(.closed) { try a.sync() }
        expectQEDError(.closed) { try a.length() }
        expectQEDError(.closed) { try a.allocatedBytes() }
        expectQEDError(.closed) { try a.setLength(0) }
        expectQEDError(.closed) { try a.punchHole(at: 0, length: 4096) }
        expectQEDError(.closed) { try a.allocation(at: 0, limit: 4096) }
        let error = expectQEDError(.closed) { try a.sync() }
        #expect(error?.path == pathA)
        #expect(try b.readBytes(count: 8192, at: 0) == bytes(2, 8192))
        #expect(try Files.read(pathA) == bytes(1, 8192))
        a.close()  // idempotent
    }

    @Test("reads racing with close either complete correctly or are refused")
    func readsRacingClose() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("race.img")
        try dir.create("race.img", bytes(0x33, 65536))
        for round in 0..<20 {
            let file = try PosixFile(path: path, writable: false)
            let failures = FailureLog()
            let readers = (0..<4).map { r in
                BackgroundThread { () -> Void in
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    for i in 0..<200 {
                        do {
                            let n = try buffer.withUnsafeMutableBytes {
                                try file.read(into: $0, at: UInt64((i + r) % 16) * 4096)
                            }
                            if n != 4096 || buffer != bytes(0x33, 4096) {
                                failures.add("round \(round): short or wrong read")
                            }
                        } catch let error as QEDError where error.code == .closed {
                            return  // refused: every later call must be refused too
                        } catch {
                            failures.add("round \(round): \(error)")
                        }
                    }
                }
            }
            file.close()
            for reader in readers { #expect(reader.join() != nil) }
            expectQEDError(.closed) { try file.length() }
            #expect(failures.count == 0, "\(failures.summary)")
        }
    }
}
