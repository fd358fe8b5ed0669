import Foundation
import QED
import TestSupport
import Testing

@testable import QEDTools

/// The convert planner reads the same bytes and decides the same writes whether it maps its
/// sources (in small windows here, so extents cross window boundaries) or reads them.
@Suite("Convert planner") struct ConvertPlanTests {
    /// A raw file of `size` bytes with `runs` of data (offset, length, seed; seed 0 = real zeroes).
    private func makeRaw(_ path: String, size: Int, _ runs: [(Int, Int, UInt8)]) throws {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let h = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? h.close() }
        for (offset, length, seed) in runs {
            try h.seek(toOffset: UInt64(offset))
            try h.write(
                contentsOf: Data((0..<length).map { seed == 0 ? 0 : seed &+ UInt8(truncatingIfNeeded: $0 &* 7 / 3) }))
        }
        try h.truncate(atOffset: UInt64(size))
    }

    /// Every write of every chunk, with its bytes.
    private func writes(_ planner: ConvertPlanner) throws -> [(UInt64, UInt64, Bool, [UInt8])] {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(planner.chunkSize), alignment: 4096)
        let spare = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 8)
        defer {
            buffer.deallocate()
            spare.deallocate()
        }
        var out: [(UInt64, UInt64, Bool, [UInt8])] = []
        for index in 0..<planner.chunkCount {
            let plan = try planner.plan(chunk: index, buffer: buffer, backingBuffer: spare)
            withExtendedLifetime(plan) {
                for a in plan.actions {
                    let bytes = a.bytes.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(a.length))) } ?? []
                    out.append((a.offset, a.length, a.zero, bytes))
                }
            }
        }
        return out
    }

    @Test func mappedWindowsAndReadsAgree() throws {
        let scratch = try TemporaryDirectory(prefix: "qed-plan")
        defer { scratch.remove() }
        let dir = scratch.path
        // a.raw's size is a sector but not a page multiple, so b.raw's blocks straddle its windows.
        try makeRaw(
            dir + "/a.raw", size: 3 << 20 | 512,
            [
                (0, 300_000, 1), (400_000, 8192, 0), (500_000, 1_000_000, 2),
                (2_000_000, 1_145_000, 3),
            ])
        try makeRaw(dir + "/b.raw", size: 2 << 20, [(4096, 200_000, 4), (1 << 20, 65536, 0), (1_500_000, 597_152, 5)])
        let a = try RawImage(path: dir + "/a.raw", options: OpenOptions(readOnly: true))
        let b = try RawImage(path: dir + "/b.raw", options: OpenOptions(readOnly: true))
        defer {
            try? a.close()
            try? b.close()
        }
        let source = try ConcatenatedSource([a, b])
        for sparse: UInt64 in [512, 4096, 65536] {
            let mapped = ConvertPlanner(
                source: source, sparseSize: sparse, targetIsZero: true, backing: nil,
                clusterSize: 65536, windowSize: 64 << 10)
            let read = ConvertPlanner(
                source: source, sparseSize: sparse, targetIsZero: true, backing: nil,
                clusterSize: 65536, mapSources: false)
            let m = try writes(mapped), r = try writes(read)
            // Actions may be split differently (at window ends); compare the bytes they write
            // (-1: not written).
            func flatten(_ w: [(UInt64, UInt64, Bool, [UInt8])]) -> [Int16] {
                var image = [Int16](repeating: -1, count: Int(source.size))
                for (offset, _, zero, bytes) in w where !zero {
                    for (i, byte) in bytes.enumerated() { image[Int(offset) + i] = Int16(byte) }
                }
                return image
            }
            #expect(m.count >= r.count, "-S \(sparse)")
            #expect(flatten(m) == flatten(r), "-S \(sparse)")
            #expect(m.map { $0.1 }.reduce(0, +) == r.map { $0.1 }.reduce(0, +), "-S \(sparse)")
        }
    }
}
