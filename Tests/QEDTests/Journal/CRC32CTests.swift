import Testing

@testable import QED

/// ``CRC32C``: the published check values (iSCSI, RFC 3720 appendix B.4) and the continuation
/// rule, against a bit-at-a-time reference.
@Suite("CRC-32C")
struct CRC32CTests {
    private func crc(_ bytes: [UInt8], continuing previous: UInt32 = 0) -> UInt32 {
        CRC32C.checksum(bytes[...], continuing: previous)
    }

    /// One bit at a time, straight from the definition: the reference the tables must match.
    private func reference(_ bytes: [UInt8]) -> UInt32 {
        var value: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            value ^= UInt32(byte)
            for _ in 0..<8 { value = value & 1 == 1 ? (value >> 1) ^ 0x82F6_3B78 : value >> 1 }
        }
        return ~value
    }

    @Test("known vectors")
    func vectors() {
        #expect(crc(Array("123456789".utf8)) == 0xE306_9283)
        #expect(crc([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(crc([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(crc((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(crc((0..<32).reversed().map { UInt8($0) }) == 0x113F_DB5C)
        #expect(crc([]) == 0)
    }

    @Test("every length 0...200 and every split matches the bitwise reference")
    func continuation() {
        var rng = ModelRNG(seed: ModelRNG.seed(0xC4C3_2C01))
        for length in 0...200 {
            let bytes = rng.bytes(length)
            let whole = crc(bytes)
            #expect(whole == reference(bytes), "length \(length)")
            let split = length == 0 ? 0 : Int(rng.next() % UInt64(length + 1))
            let continued = crc(Array(bytes[split...]), continuing: crc(Array(bytes[..<split])))
            #expect(continued == whole, "length \(length) split at \(split)")
        }
    }
}
