/// Encoding of L1 and L2 tables: arrays of little-endian 64-bit entries.
public enum TableEntry {
    /// An entry that maps nothing (L1: no L2 table; L2: unallocated, read the backing file).
    public static let unallocated: UInt64 = 0
    /// The L2 marker for a zero cluster: reads as zeroes, hides the backing file, holds no storage.
    public static let zeroCluster: UInt64 = 1

    /// Decodes `count` entries from little-endian `bytes` into `out`.
    @inlinable
    public static func decode(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<UInt64>) {
        let count = min(out.count, bytes.count / 8)
        guard count > 0, let source = bytes.baseAddress, let target = out.baseAddress else { return }
        #if _endian(little)
        // The disk order is the memory order: one copy (a 1 GiB table is one memcpy, not 2^27 loads).
        UnsafeMutableRawPointer(target).copyMemory(from: source, byteCount: count * 8)
        #else
        for i in 0..<count {
            out[i] = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
        }
        #endif
    }

    /// Encodes `entries` as little-endian bytes into `out` (which holds at least 8·count bytes).
    @inlinable
    public static func encode(_ entries: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableRawBufferPointer) {
        for i in 0..<min(entries.count, out.count / 8) {
            out.storeBytes(of: entries[i].littleEndian, toByteOffset: i * 8, as: UInt64.self)
        }
    }
}
