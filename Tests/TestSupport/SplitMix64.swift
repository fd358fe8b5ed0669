import Foundation

/// SplitMix64: a tiny, fast, seedable generator, so every randomized test can be replayed from
/// its seed. Shared by the engine, NBD and interop tests.
///
/// Seeds come from ``seed(_:salt:)``: a fixed default per test (CI stays reproducible), or
/// `QED_TEST_SEED` from the environment to explore other seeds. Failure messages name the seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator whose whole sequence is determined by `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `QED_TEST_SEED` (decimal or 0x-hex) mixed with `salt`, else `fallback`.
    public static func seed(_ fallback: UInt64, salt: UInt64 = 0) -> UInt64 {
        guard let text = ProcessInfo.processInfo.environment["QED_TEST_SEED"] else { return fallback }
        let parsed = text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
        guard let base = parsed else { return fallback }
        var mixer = SplitMix64(seed: base ^ (salt &* 0x9E37_79B9_7F4A_7C15))
        return mixer.next()
    }

    /// Whether a coin with probability `p` of heads came up heads.
    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }

    /// `count` random bytes (zero bytes included).
    public mutating func bytes(_ count: Int) -> [UInt8] { fill(count, mask: 0) }

    /// `count` random bytes, none of them zero (so written data never looks like a hole).
    public mutating func nonZeroBytes(_ count: Int) -> [UInt8] { fill(count, mask: 0x0101_0101_0101_0101) }

    private mutating func fill(_ count: Int, mask: UInt64) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            var i = 0
            while i < count {
                var word = next() | mask
                let n = min(8, count - i)
                withUnsafeBytes(of: &word) { w in
                    UnsafeMutableRawBufferPointer(rebasing: raw[i..<i + n])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: w[0..<n]))
                }
                i += n
            }
            initialized = count
        }
    }
}
