import Foundation
import QED
import TestSupport
import Testing

/// Helpers to craft images byte by byte and to expect specific engine errors.
enum Craft {
    /// A valid header: `cs`-byte clusters, `ts`-cluster tables, L1 right after a one-cluster header.
    static func header(cs: UInt32 = 4096, ts: UInt32 = 4, size: UInt64 = 8 << 20) -> Header {
        Header(clusterSize: cs, tableSize: ts, l1TableOffset: UInt64(cs), imageSize: size)
    }

    /// A memory file holding `header` followed by zeroes up to `length` bytes (default: header
    /// area plus an L1 table), with `extra` byte runs written on top.
    static func file(
        _ header: Header, length: UInt64? = nil, extra: [(UInt64, [UInt8])] = [],
        writable: Bool = true
    ) -> MemoryFile {
        let cs = UInt64(header.clusterSize)
        let len = length ?? (UInt64(header.headerSize) + UInt64(header.tableSize)) * cs
        var bytes = [UInt8](repeating: 0, count: Int(len))
        let enc = header.encoded()
        bytes.replaceSubrange(0..<min(64, bytes.count), with: enc.prefix(bytes.count))
        for (off, run) in extra {
            let end = Int(off) + run.count
            if bytes.count < end { bytes += [UInt8](repeating: 0, count: end - bytes.count) }
            bytes.replaceSubrange(Int(off)..<end, with: run)
        }
        return MemoryFile(bytes, path: "crafted.qed", writable: writable)
    }

    static func readLE64(_ file: MemoryFile, at offset: UInt64) -> UInt64 {
        let c = file.contents
        return (0..<8).reduce(0) { $0 | UInt64(c[Int(offset) + $1]) << (8 * UInt64($1)) }
    }

    static func writeLE64(_ file: MemoryFile, _ v: UInt64, at offset: UInt64) throws {
        try file.writeBytes(Files.le64(v), at: offset)
    }
}

/// Creates an image on `file` and opens it with the NEED_CHECK timer held off, so the file's syncs
/// and pending writes change only through what the test does. Returns the image and the options
/// (for reopening).
func createAndOpenWithoutTimer(on file: any BlockFile, _ create: CreateOptions) throws -> (Image, OpenOptions) {
    try Image.create(on: file, options: create)
    var options = OpenOptions()
    options.needCheckDelay = 1e6
    return (try Image.open(file: file, options: options), options)
}

/// Runs `body` and expects it to throw a ``QEDError`` with `code`; returns the error.
@discardableResult
func expectQEDError<T>(
    _ code: QEDError.Code, _ comment: String = "", sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> T
) -> QEDError? {
    do {
        _ = try body()
        Issue.record("expected QEDError.\(code) but it succeeded. \(comment)", sourceLocation: sourceLocation)
    } catch let error as QEDError {
        #expect(error.code == code, "\(comment) got \(error.code): \(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected QEDError.\(code), got \(error). \(comment)", sourceLocation: sourceLocation)
    }
    return nil
}

/// File helpers for the engine tests' scratch directories.
extension TemporaryDirectory {
    /// Bytes of the file `name` in this directory.
    func read(_ name: String) throws -> [UInt8] { try Files.read(file(name)) }

    /// Writes `bytes` at `offset` of the existing file `name`.
    func patch(_ name: String, _ bytes: [UInt8], at offset: UInt64) throws {
        try Files.write(file(name), bytes, at: offset)
    }

    /// Creates the file `name` holding `bytes`.
    func create(_ name: String, _ bytes: [UInt8]) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: file(name)))
    }
}

extension OpenOptions {
    /// Options whose NEED_CHECK timer (an hour) never fires during a test, so the engine does not
    /// rewrite the header behind the test's back.
    static func quiet(readOnly: Bool = false) -> OpenOptions {
        var options = OpenOptions(readOnly: readOnly)
        options.needCheckDelay = 3600
        return options
    }
}

/// `count` bytes of `value`.
func bytes(_ value: UInt8, _ count: Int) -> [UInt8] { [UInt8](repeating: value, count: count) }
