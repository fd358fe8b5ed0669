import Foundation

/// Byte-level file helpers: read, patch and size files the tests craft or inspect.
public enum Files {
    /// The whole content of `path`.
    public static func read(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// `count` bytes at `offset` of `path` (zeroes past its end).
    public static func read(_ path: String, at offset: UInt64, count: Int) throws -> [UInt8] {
        let h = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? h.close() }
        try h.seek(toOffset: offset)
        var out = [UInt8](try h.read(upToCount: count) ?? Data())
        if out.count < count { out += [UInt8](repeating: 0, count: count - out.count) }
        return out
    }

    /// Writes `bytes` at `offset` of the existing file `path`.
    public static func write(_ path: String, _ bytes: [UInt8], at offset: UInt64) throws {
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? h.close() }
        try h.seek(toOffset: offset)
        try h.write(contentsOf: Data(bytes))
    }

    /// Creates `path` (empty) and sets its length (a sparse file).
    public static func createSparse(_ path: String, length: UInt64) throws {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        try truncate(path, length)
    }

    /// Sets the length of `path`.
    public static func truncate(_ path: String, _ length: UInt64) throws {
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? h.close() }
        try h.truncate(atOffset: length)
    }

    /// The length of `path` in bytes.
    public static func size(_ path: String) throws -> UInt64 {
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        return (attrs[.size] as? NSNumber)?.uint64Value ?? 0
    }

    /// Little-endian u64 at `offset` of `path`.
    public static func readU64(_ path: String, at offset: UInt64) throws -> UInt64 {
        let b = try read(path, at: offset, count: 8)
        return b.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    /// Writes `value` as a little-endian u64 at `offset` of `path`.
    public static func writeU64(_ path: String, _ value: UInt64, at offset: UInt64) throws {
        try write(path, le64(value), at: offset)
    }

    /// `value` as eight little-endian bytes.
    public static func le64(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
    }
}
