import Foundation
import QED
import TestSupport
import Testing

/// `QEDError` carries the failed system call under it (name and `errno`), and its codes are stable
/// names that tools can print and compare.
@Suite struct ErrorCauseTests {
    /// Runs `body`, which must throw a `QEDError`, and returns it.
    private func failure(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> QEDError? {
        do {
            try body()
            Issue.record("expected a QEDError, but the call succeeded", sourceLocation: sourceLocation)
        } catch let error as QEDError {
            return error
        } catch {
            Issue.record("expected a QEDError, got \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    @Test func aMissingFileNamesOpenAndENOENT() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("missing.qed")
        let error = try #require(failure { _ = try PosixFile(path: path, writable: false) })
        #expect(error.code == .io)
        #expect(error.cause == QEDError.Cause(syscall: "open", errno: ENOENT))
        #expect(error.errno == ENOENT)
        // The message qed-img prints is unchanged: the cause's text is already part of it.
        #expect(error.message == "Could not open '\(path)': No such file or directory")
        #expect(error.cause?.description == "open: No such file or directory")
        #expect(
            String(reflecting: error).hasSuffix("[io; open: No such file or directory (errno \(ENOENT))]"),
            "\(String(reflecting: error))")
    }

    @Test func aWriteThroughAReadOnlyDescriptorNamesPwrite() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("data.bin")
        try Files.createSparse(path, length: 4096)
        let file = try PosixFile(path: path, writable: false)
        defer { file.close() }
        let block = [UInt8](repeating: 1, count: 512)
        let error = try #require(failure { try block.withUnsafeBytes { try file.write($0, at: 0) } })
        #expect(error.code == .io && error.path == path && error.value == 0)
        #expect(error.cause == QEDError.Cause(syscall: "pwrite", errno: EBADF), "\(String(reflecting: error))")
        #expect(error.message.hasSuffix(": \(String(cString: strerror(EBADF)))"))
        let truncate = try #require(failure { try file.setLength(8192) })
        #expect(truncate.cause?.syscall == "ftruncate", "\(String(reflecting: truncate))")
        #expect(truncate.message.hasSuffix(": " + (truncate.cause?.reason ?? "no cause")))
    }

    @Test func aLockConflictIsEAGAINWithoutACall() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("busy.qed")
        try Image.create(path: path, options: CreateOptions(size: 1 << 20))
        let holder = try Image.open(path: path)
        defer { try? holder.close() }
        let error = try #require(failure { _ = try Image.open(path: path) })
        #expect(error.code == .locked)
        // QEMU reports a conflict found by testing the lock bytes as EAGAIN; no call failed.
        #expect(error.cause == QEDError.Cause(syscall: nil, errno: EAGAIN), "\(String(reflecting: error))")
        #expect(error.cause?.description == String(cString: strerror(EAGAIN)))
    }

    @Test func codesAreStableNamesAndErrnoKeepsTheCall() {
        let names: [(QEDError.Code, String)] = [
            (.notQED, "notQED"), (.unsupportedFeatures, "unsupportedFeatures"),
            (.invalidClusterSize, "invalidClusterSize"),
            (.invalidTableSize, "invalidTableSize"), (.invalidImageSize, "invalidImageSize"),
            (.invalidTableOffset, "invalidTableOffset"), (.invalidClusterOffset, "invalidClusterOffset"),
            (.headerSizeTooLarge, "headerSizeTooLarge"), (.invalidBackingName, "invalidBackingName"),
            (.backingFile, "backingFile"), (.truncatedFile, "truncatedFile"), (.outOfRange, "outOfRange"),
            (.readOnly, "readOnly"), (.locked, "locked"), (.notRegularFile, "notRegularFile"),
            (.invalidArgument, "invalidArgument"), (.unsupported, "unsupported"), (.noSpace, "noSpace"),
            (.corrupt, "corrupt"), (.closed, "closed"), (.io, "io"),
        ]
        for (code, name) in names {
            #expect(code.rawValue == name && "\(code)" == name)
            #expect(QEDError.Code(rawValue: name) == code)
        }
        #expect(Set(names.map(\.0)).count == names.count, "two codes share a name")
        var error = QEDError(.io, "fdatasync failed: Input/output error", errno: EIO, syscall: "fdatasync")
        #expect(error.cause == QEDError.Cause(syscall: "fdatasync", errno: EIO))
        error.errno = ENOSPC
        #expect(error.cause == QEDError.Cause(syscall: "fdatasync", errno: ENOSPC))
        error.errno = nil
        #expect(error.cause == nil)
        #expect(QEDError(.io, "no errno", syscall: "pread").cause == nil)
    }
}
