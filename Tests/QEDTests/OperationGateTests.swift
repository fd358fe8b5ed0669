import Foundation
import Synchronization
import Testing

@testable import QED

/// ``OperationGate``: exclusive operations wait for running requests and keep new ones out;
/// nested calls never deadlock; and the image's exclusive calls really go through it.
@Suite("Operation gate")
struct OperationGateTests {
    @Test("an exclusive operation waits for the running request, then runs alone")
    func exclusiveWaitsForRequest() throws {
        let gate = OperationGate()
        let release = DispatchSemaphore(value: 0)
        let request = BackgroundThread { gate.request { release.wait() } }
        #expect(waitUntil { gate.requestCount == 1 }, "the request did not start")
        let exclusive = BackgroundThread { gate.exclusive { gate.requestCount } }
        #expect(waitUntil { gate.exclusiveWaiting }, "the exclusive operation did not wait for the request")
        #expect(!exclusive.isFinished, "the exclusive operation ran beside a request")
        release.signal()
        #expect(try #require(request.join()).get() == ())
        let runningBeside = try #require(exclusive.join(), "the exclusive operation was never let in").get()
        #expect(runningBeside == 0, "requests were running during the exclusive operation")
        #expect(!gate.exclusiveWaiting && gate.requestCount == 0)
    }

    @Test("a request waits while an exclusive operation runs")
    func requestWaitsForExclusive() throws {
        let gate = OperationGate()
        let release = DispatchSemaphore(value: 0)
        let insideExclusive = Atomic<Bool>(false)
        let exclusive = BackgroundThread {
            gate.exclusive {
                insideExclusive.store(true, ordering: .releasing)
                release.wait()
                insideExclusive.store(false, ordering: .releasing)
            }
        }
        #expect(waitUntil { insideExclusive.load(ordering: .acquiring) })
        #expect(gate.requestIfFree { true } == nil, "requestIfFree entered during an exclusive operation")
        let request = BackgroundThread { gate.request { insideExclusive.load(ordering: .acquiring) } }
        #expect(waitUntil { gate.requestsWaiting == 1 }, "the request did not wait")
        release.signal()
        #expect(try #require(exclusive.join()).get() == ())
        let sawExclusive = try #require(request.join(), "the request was never let in").get()
        #expect(!sawExclusive, "the request ran during the exclusive operation")
        #expect(gate.requestIfFree { true } == true)
    }

    @Test("a request nested in a request passes while an exclusive operation waits")
    func nestedRequestDoesNotDeadlock() throws {
        let gate = OperationGate()
        let proceed = DispatchSemaphore(value: 0)
        let outer = BackgroundThread { () -> Int in
            gate.request {
                proceed.wait()
                return gate.request { 7 }  // nested, with the exclusive operation already waiting
            }
        }
        #expect(waitUntil { gate.requestCount == 1 })
        let exclusive = BackgroundThread { gate.exclusive { gate.requestCount } }
        #expect(waitUntil { gate.exclusiveWaiting })
        proceed.signal()
        #expect(try #require(outer.join(), "the nested request deadlocked").get() == 7)
        #expect(try #require(exclusive.join()).get() == 0)
    }

    @Test("the exclusive operation's own requests and nested exclusive calls pass through")
    func ownerPassesThrough() throws {
        let gate = OperationGate()
        let result = BackgroundThread { () -> [UInt64] in
            gate.exclusive {
                let inRequest = gate.request { gate.requestCount }
                let nested = gate.exclusive { gate.request { gate.requestCount } }
                return [inRequest, nested, gate.requestCount]
            }
        }
        #expect(try #require(result.join(), "the owner deadlocked on itself").get() == [1, 1, 0])
        // The gate is open again for others.
        #expect(gate.requestIfFree { gate.requestCount } == 1)
    }

    @Test("exclusive operations run one at a time")
    func exclusivesSerialise() throws {
        let gate = OperationGate()
        let inside = Atomic<Int>(0)
        let overlaps = Atomic<Int>(0)
        let threads = (0..<4).map { _ in
            BackgroundThread {
                for _ in 0..<200 {
                    gate.exclusive {
                        if inside.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue != 1 {
                            overlaps.wrappingAdd(1, ordering: .relaxed)
                        }
                        _ = gate.request { 0 }
                        inside.wrappingSubtract(1, ordering: .acquiringAndReleasing)
                    }
                    gate.request {
                        if inside.load(ordering: .acquiring) != 0 { overlaps.wrappingAdd(1, ordering: .relaxed) }
                    }
                }
            }
        }
        for t in threads { #expect(try #require(t.join(seconds: 120), "deadlock").get() == ()) }
        #expect(overlaps.load(ordering: .relaxed) == 0)
        #expect(gate.requestCount == 0 && !gate.exclusiveWaiting)
    }

    @Test("close waits for a read in flight before it closes the file")
    func closeWaitsForRead() throws {
        let file = GatedFile(MemoryFile(path: "held-read"))
        try Image.create(on: file, options: CreateOptions(size: 1 << 20, clusterSize: 4096, tableSize: 2))
        let image = try Image.open(file: file)
        try image.write([UInt8](repeating: 0xAB, count: 4096), at: 8192)
        file.arm(.readAtOrAfter(5 * 4096))  // past the header (1 cluster), L1 and L2 (2 each)
        let read = BackgroundThread { try image.read(at: 8192, count: 4096) }
        #expect(waitUntil { file.isHolding }, "the read did not reach the file")
        let close = BackgroundThread { try image.close() }
        #expect(waitUntil { image.gate.exclusiveWaiting }, "close did not wait for the read")
        #expect(file.closeCount == 0, "close closed the file under a running read")
        file.release()
        #expect(try #require(read.join()).get() == [UInt8](repeating: 0xAB, count: 4096))
        #expect(try #require(close.join()).get() == ())
        #expect(file.closeCount == 1)
        #expect(throws: QEDError.self) { try image.read(at: 0, count: 512) }
    }
}
