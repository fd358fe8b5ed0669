import Foundation
import Synchronization
import Testing

@testable import QED

/// ``NeedCheckTimer`` on its own, with a `setBit` closure that records its calls.
@Suite("NEED_CHECK timer")
struct NeedCheckTimerTests {
    /// Records the values `setBit` was called with; optionally fails them.
    final class BitLog: Sendable {
        let calls = Mutex<[Bool]>([])
        let failing: Bool
        init(failing: Bool = false) { self.failing = failing }
        func set(_ value: Bool) throws {
            calls.withLock { $0.append(value) }
            if failing { throw QEDError(.io, "injected header write failure", errno: 5) }
        }
        var values: [Bool] { calls.withLock { $0 } }
    }

    static func timer(_ log: BitLog, dirty: Bool = false, delay: Double) -> NeedCheckTimer {
        NeedCheckTimer(dirty: dirty, managesBit: true, readOnly: false, delay: delay) { try log.set($0) }
    }

    @Test("the bit is set before the first allocation and cleared once the timer fires")
    func setsThenClears() throws {
        let log = BitLog()
        let timer = Self.timer(log, delay: 0.01)
        try timer.beginAllocation()
        try timer.beginAllocation()
        #expect(log.values == [true] && timer.isDirty)
        timer.endAllocation()
        timer.endAllocation()  // now idle: armed
        #expect(waitUntil { timer.pendingHandlers == 0 })
        #expect(log.values == [true, false] && !timer.isDirty)
    }

    @Test("a stopped timer's handler never calls setBit")
    func stoppedTimerDoesNothing() throws {
        let log = BitLog()
        let timer = Self.timer(log, delay: 0.05)
        try timer.beginAllocation()
        timer.endAllocation()  // armed
        try timer.stop(clear: false)
        #expect(waitUntil { timer.pendingHandlers == 0 })
        #expect(log.values == [true], "only the set before the allocation")
        #expect(timer.isDirty && timer.isStopped)
    }

    @Test("stop(clear:) stops the timer even when clearing fails")
    func stopWhenClearingFails() throws {
        let log = BitLog(failing: true)
        let timer = Self.timer(log, dirty: true, delay: 0.01)
        timer.armIfDirty()
        #expect(throws: QEDError.self) { try timer.stop(clear: true) }
        #expect(timer.isStopped && timer.isDirty, "memory keeps the bit the failed write did not clear")
        let callsAtStop = log.values.count
        #expect(waitUntil { timer.pendingHandlers == 0 })
        #expect(log.values.count == callsAtStop)
    }

    @Test("a failed set leaves the bit clear and the allocation not counted")
    func failedSet() throws {
        let log = BitLog(failing: true)
        let timer = Self.timer(log, delay: 3600)
        #expect(throws: QEDError.self) { try timer.beginAllocation() }
        #expect(!timer.isDirty)
        #expect(timer.pendingHandlers == 0, "no timer armed")
    }
}
