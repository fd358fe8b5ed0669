import NBD
import NBDServer
import NIOCore
import Testing

/// An independent model of a disk's allocation: the operations applied, in order; the state of a byte
/// is that of the last operation covering it (hole where none does).
struct AllocationModel {
    var operations: [(start: UInt64, end: UInt64, state: SparseState)] = []

    mutating func apply(_ start: UInt64, length: UInt64, _ state: SparseState) {
        self.operations.append((start, start + length, state))
    }

    func state(at byte: UInt64) -> SparseState {
        self.operations.last { $0.start <= byte && byte < $0.end }?.state ?? .hole
    }

    /// The extents a server must report for `[offset, offset + length)`: split where any operation starts
    /// or ends, neighbours with equal `base:allocation` status merged.
    func extents(at offset: UInt64, length: UInt64) -> [(length: UInt64, flags: UInt64)] {
        let end = offset + length
        var cuts: Set<UInt64> = [offset, end]
        for operation in self.operations {
            for cut in [operation.start, operation.end] where cut > offset && cut < end { cuts.insert(cut) }
        }
        let sorted = cuts.sorted()
        var extents: [(length: UInt64, flags: UInt64)] = []
        for (start, stop) in zip(sorted, sorted.dropFirst()) {
            let flags = self.state(at: start).allocationFlags
            if let last = extents.last, last.flags == flags {
                extents[extents.count - 1].length += stop - start
            } else {
                extents.append((stop - start, flags))
            }
        }
        return extents
    }
}

/// Lengths around 4 GiB (2³² − 1, 2³², 2³² + 1) and ranges across the 4 GiB line, where real servers broke
/// (32-bit truncation, off-by-one at the maximum): WRITE_ZEROES, TRIM and BLOCK_STATUS through the
/// connection handler on a 16 GiB sparse disk, in both header forms, compared extent by extent with a model.
/// With compact headers a client cannot say 2³² or more, so it splits (as libnbd and qemu do) and asks
/// again for what a reply did not cover.
@Suite struct LargeLengthTests {
    static let gib: UInt64 = 1 << 30
    static let four: UInt64 = 1 << 32
    static let compactMaximum = UInt64(UInt32.max)

    /// A negotiated connection (contexts selected; discard on, so zeroing without NO_HOLE punches holes).
    static func connect(extended: Bool) throws -> (ConnectionUnderTest, SparseDisk) {
        var options = NBDServerOptions()
        options.discard = .unmap
        let disk = SparseDisk(size: 16 * gib)
        let connection = try ConnectionUnderTest(options: options, serving: disk)
        var negotiation = [Wire.option(.structuredReply)]
        if extended { negotiation.append(Wire.option(.extendedHeaders)) }
        negotiation.append(Wire.setMetaContext(["base:allocation"]))
        _ = try connection.negotiate(options: negotiation)
        return (connection, disk)
    }

    /// Sends a command covering `[offset, offset + length)`, split into compact-sized pieces when needed;
    /// returns how many requests it took.
    @discardableResult
    static func command(
        _ command: NBDCommand, flags: NBDCommandFlags = [], offset: UInt64, length: UInt64,
        on connection: ConnectionUnderTest, extended: Bool, cookie: inout UInt64
    ) throws -> Int {
        var done: UInt64 = 0
        var requests = 0
        while done < length {
            let piece = extended ? length - done : min(length - done, Self.compactMaximum)
            cookie += 1
            let at = offset + done
            let bytes =
                extended
                ? Wire.extendedRequest(command, flags: flags, cookie: cookie, offset: at, length: piece)
                : Self.compact(command, flags: flags, cookie: cookie, offset: at, length: piece)
            let reply = try connection.roundTrip(bytes, offset: at)
            requests += 1
            #expect(reply.error == nil && reply.done, "\(command) of \(piece) at \(at): \(reply.error as Any)")
            guard reply.error == nil else { return requests }
            done += piece
        }
        return requests
    }

    static func compact(
        _ command: NBDCommand, flags: NBDCommandFlags, cookie: UInt64, offset: UInt64, length: UInt64
    ) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeNBDRequestHeader(
            NBDRequestHeader(command: command, flags: flags, cookie: cookie, offset: offset, length: length))
        return buffer
    }

    /// Block status of `[offset, offset + length)` as a client collects it: ask, take the prefix the reply
    /// covers, ask again for the rest; neighbours with equal status merged. Records an issue for a
    /// zero-length extent or a reply that covers more than asked.
    static func blockStatus(
        offset: UInt64, length: UInt64, on connection: ConnectionUnderTest, extended: Bool, cookie: inout UInt64
    ) throws -> (extents: [(length: UInt64, flags: UInt64)], requests: Int) {
        var collected: [(length: UInt64, flags: UInt64)] = []
        var done: UInt64 = 0
        var requests = 0
        while done < length, requests < 64 {
            let piece = extended ? length - done : min(length - done, Self.compactMaximum)
            cookie += 1
            let at = offset + done
            let bytes =
                extended
                ? Wire.extendedRequest(.blockStatus, cookie: cookie, offset: at, length: piece)
                : Self.compact(.blockStatus, flags: [], cookie: cookie, offset: at, length: piece)
            let reply = try connection.roundTrip(bytes, offset: at)
            requests += 1
            #expect(reply.forms == [extended ? "extended" : "structured"] && reply.done && reply.error == nil)
            let covered = reply.extents.reduce(UInt64(0)) { $0 + $1.length }
            #expect(covered > 0 && covered <= piece, "a reply covers a non-empty prefix of its request")
            #expect(reply.extents.allSatisfy { $0.length > 0 }, "no empty extents")
            guard covered > 0, covered <= piece else { break }
            for extent in reply.extents {
                if let last = collected.last, last.flags == extent.flags {
                    collected[collected.count - 1].length += extent.length
                } else {
                    collected.append(extent)
                }
            }
            done += covered
        }
        return (collected, requests)
    }

    @Test(arguments: [false, true])
    func zeroesTrimsAndBlockStatusAround4GiBMatchTheModel(_ extended: Bool) throws {
        let (connection, disk) = try Self.connect(extended: extended)
        var model = AllocationModel()
        var cookie: UInt64 = 0
        let gib = Self.gib
        let four = Self.four

        // Zeroing and trimming of the lengths around 2³², starting at odd places so they cross 4 GiB; then data
        // on both sides of the line and far beyond it.
        let changes:
            [(command: NBDCommand, flags: NBDCommandFlags, offset: UInt64, length: UInt64, state: SparseState)] = [
                (.writeZeroes, .noHole, gib + 1, four - 1, .zero),
                (.writeZeroes, [], 3 * gib + 7, four + 1, .hole),
                (.writeZeroes, .noHole, 9 * gib, four, .zero),
                (.trim, [], 12 * gib - 3, four + 1, .hole),
                (.writeZeroes, .noHole, four - 1, 2, .zero),
            ]
        for change in changes.prefix(4) {
            let requests = try Self.command(
                change.command, flags: change.flags, offset: change.offset, length: change.length,
                on: connection, extended: extended, cookie: &cookie)
            #expect(requests == (extended ? 1 : Int((change.length + Self.compactMaximum - 1) / Self.compactMaximum)))
            model.apply(change.offset, length: change.length, change.state)
        }

        // Data on both sides of the 4 GiB line and far beyond it.
        let writes: [(offset: UInt64, length: Int, byte: UInt8)] = [
            (four - 32768, 65536, 0xaa), (2 * gib, 4096, 0xbb), (10 * gib - 4096, 8192, 0xcc), (15 * gib, 512, 0xdd),
        ]
        for write in writes {
            cookie += 1
            let payload = ByteBuffer(repeating: write.byte, count: write.length)
            let bytes =
                extended
                ? Wire.extendedRequest(.write, cookie: cookie, offset: write.offset, payload: payload)
                : Wire.request(
                    .write, cookie: cookie, offset: write.offset, length: UInt64(write.length),
                    payload: Array(repeating: write.byte, count: write.length))
            let reply = try connection.roundTrip(bytes, offset: write.offset)
            #expect(reply.error == nil)
            model.apply(write.offset, length: UInt64(write.length), .data(write.byte))
        }
        // Last, 2 bytes of allocated zeroes across the line in the middle of the data.
        for change in changes.suffix(1) {
            let requests = try Self.command(
                change.command, flags: change.flags, offset: change.offset, length: change.length,
                on: connection, extended: extended, cookie: &cookie)
            #expect(requests == (extended ? 1 : Int((change.length + Self.compactMaximum - 1) / Self.compactMaximum)))
            model.apply(change.offset, length: change.length, change.state)
        }

        // Block status of the same lengths at offsets on and around the line, and of the whole disk.
        var queries: [(offset: UInt64, length: UInt64)] = []
        for offset in [0, gib + 1, four - 1, four, 3 * gib + 7, 9 * gib - 1] {
            for length in [four - 1, four, four + 1] { queries.append((offset, length)) }
        }
        queries.append((0, 16 * gib))
        queries.append((four - 32768, 65536))
        var mismatches = 0
        for query in queries {
            let (extents, requests) = try Self.blockStatus(
                offset: query.offset, length: query.length, on: connection, extended: extended, cookie: &cookie)
            let expected = model.extents(at: query.offset, length: query.length)
            let same =
                extents.count == expected.count
                && zip(extents, expected).allSatisfy { $0.length == $1.length && $0.flags == $1.flags }
            if !same {
                mismatches += 1
                Issue.record("BLOCK_STATUS \(query.length) at \(query.offset): got \(extents), model \(expected)")
            }
            if extended { #expect(requests == 1, "one extended request covers \(query.length) bytes") }
        }
        #expect(mismatches == 0, "\(mismatches) of \(queries.count) block status answers differ from the model")

        // The sparse disk agrees with the model too (it is what the server read).
        let runs = disk.runs(at: 0, length: 16 * gib)
        for run in runs {
            #expect(model.state(at: run.start) == run.state && model.state(at: run.end - 1) == run.state)
        }

        // Data across the line reads back.
        cookie += 1
        let readAt = four - 32768
        let read = try connection.roundTrip(
            extended
                ? Wire.extendedRequest(.read, cookie: cookie, offset: readAt, length: 65536)
                : Wire.request(.read, cookie: cookie, offset: readAt, length: 65536),
            offset: readAt, length: 65536)
        let expectedData = (0..<UInt64(65536)).map { index -> UInt8 in
            if case .data(let byte) = model.state(at: readAt + index) { return byte }
            return 0
        }
        #expect(expectedData.filter { $0 == 0 }.count == 2, "the 2-byte zeroing at 4 GiB − 1 is inside the data")
        #expect(read.error == nil && read.data == expectedData)
    }
}
