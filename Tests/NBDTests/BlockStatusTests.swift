import NBD
import NIOCore
import Testing

@Suite("NBDBlockStatus")
struct BlockStatusTests {
    private typealias Run = (length: UInt64, flags: UInt32)

    @Test func mergesEqualNeighboursAndSkipsEmptyRuns() {
        let runs: [Run] = [(4096, 0), (0, 3), (4096, 0), (8192, 3), (4096, 3), (4096, 0)]
        let extents = NBDBlockStatus.extents(from: runs, requestLength: 1 << 20, requestOne: false)
        #expect(
            extents == [
                NBDExtent(length: 8192, flags: 0), NBDExtent(length: 12288, flags: 3),
                NBDExtent(length: 4096, flags: 0),
            ]
        )
    }

    @Test func totalIsClippedToTheRequestLength() {
        let runs: [Run] = [(4096, 0), (UInt64(1) << 40, 3), (4096, 0)]
        let extents = NBDBlockStatus.extents(from: runs, requestLength: 10000, requestOne: false)
        #expect(extents == [NBDExtent(length: 4096, flags: 0), NBDExtent(length: 5904, flags: 3)])
        #expect(extents.reduce(0) { $0 + UInt64($1.length) } == 10000)
    }

    @Test func hugeRunsNeverOverflowUInt32() {
        let runs: [Run] = [(.max, 0), (.max, 0)]
        #expect(
            NBDBlockStatus.extents(from: runs, requestLength: .max, requestOne: false) == [
                NBDExtent(length: .max, flags: 0)
            ]
        )
    }

    @Test func requestOneGivesExactlyOneExtentClippedToTheRequest() {
        let runs: [Run] = [(512, 3), (512, 3), (4096, 0)]
        #expect(
            NBDBlockStatus.extents(from: runs, requestLength: 1 << 20, requestOne: true) == [
                NBDExtent(length: 1024, flags: 3)
            ]
        )
        #expect(
            NBDBlockStatus.extents(from: [(UInt64(1) << 30, 3)] as [Run], requestLength: 4096, requestOne: true) == [
                NBDExtent(length: 4096, flags: 3)
            ]
        )
    }

    @Test func extentCountIsCapped() {
        let runs: [Run] = (0..<100).map { (512, UInt32($0 % 2)) }
        let extents = NBDBlockStatus.extents(
            from: runs,
            requestLength: 1 << 20,
            requestOne: false,
            maximumExtentCount: 10
        )
        #expect(extents.count == 10 && extents.allSatisfy { $0.length == 512 })
        #expect(NBDBlockStatus.extents(from: runs, requestLength: 1 << 20, requestOne: false).count == 100)
    }

    @Test func chunkEncodingAndEmptyInput() throws {
        let chunk = try #require(
            NBDBlockStatus.chunk(
                cookie: 2,
                contextID: 1,
                runs: [(4096, 1), (4096, 1)] as [Run],
                requestLength: 4096,
                requestOne: false,
                isFinal: true
            )
        )
        #expect(
            encoded(.structuredReply(chunk))
                == hex("668e33ef 0001 0005 0000000000000002 0000000c | 00000001 | 00001000 00000001")
        )
        let notFinal = try #require(
            NBDBlockStatus.chunk(
                cookie: 2,
                contextID: 0,
                runs: [(1, 0)] as [Run],
                requestLength: 1,
                requestOne: false,
                isFinal: false
            )
        )
        #expect(notFinal.flags.isEmpty)
        #expect(
            NBDBlockStatus.chunk(
                cookie: 2,
                contextID: 0,
                runs: [(0, 0)] as [Run],
                requestLength: 10,
                requestOne: false,
                isFinal: true
            ) == nil
        )
    }
}
