import Foundation
import Testing

@testable import QED

/// Group commit and failure delivery of ``FlushCoordinator``, driven by a file whose first sync
/// is held until the test has every other caller waiting.
@Suite("Flush coordinator")
struct FlushCoordinatorTests {
    static let waiters = 12

    /// Starts caller A (it runs sync 1, which the file holds), then `waiters` more callers, and
    /// waits until all of those are parked in the coordinator. Returns A and the others.
    static func park(
        _ coordinator: FlushCoordinator, _ file: ScriptedSyncFile
    )
        -> (first: BackgroundThread<Void>, others: [BackgroundThread<Void>])
    {
        let first = BackgroundThread { try coordinator.sync(file) }
        #expect(waitUntil { file.syncCount == 1 }, "caller A never started its sync")
        let others = (0..<waiters).map { _ in BackgroundThread { try coordinator.sync(file) } }
        #expect(waitUntil { coordinator.waiterCount == waiters }, "only \(coordinator.waiterCount) callers parked")
        return (first, others)
    }

    @Test("many callers arriving during a sync share one more sync")
    func groupCommit() throws {
        let file = ScriptedSyncFile(holdFirst: true)
        let coordinator = FlushCoordinator()
        let (first, others) = Self.park(coordinator, file)
        file.releaseFirstSync()
        for caller in [first] + others {
            let result = try #require(caller.join())
            #expect(throws: Never.self) { try result.get() }
        }
        // Sync 1 started before the others called, so they need one that starts later: exactly
        // one more, shared by all of them (one caller per sync, as before, would make 13).
        #expect(file.syncCount == 2)
        // Sequential callers each need their own sync.
        try coordinator.sync(file)
        try coordinator.sync(file)
        #expect(file.syncCount == 4)
    }

    @Test("a failed sync fails every caller it covered, and every later one without a new sync")
    func failureReachesCoveredAndLaterCallers() throws {
        // Sync 1 (held) succeeds; sync 2, shared by the parked callers, fails.
        let file = ScriptedSyncFile(holdFirst: true, failing: [2])
        let coordinator = FlushCoordinator()
        let (first, others) = Self.park(coordinator, file)
        file.releaseFirstSync()
        let a = try #require(first.join())
        #expect(throws: Never.self, "A's writes were covered by the successful sync 1") { try a.get() }
        for caller in others {
            let result = try #require(caller.join())
            let error = try #require(expectQEDError(.io) { try result.get() })
            #expect(error.message == "sync 2: injected failure" && error.errno == 5, "\(error)")
        }
        #expect(file.syncCount == 2)
        // Later callers: the failure is sticky and names the first failure; no sync is issued,
        // since a later successful fdatasync could not vouch for pages the kernel dropped.
        for _ in 0..<20 {
            let error = try #require(expectQEDError(.io) { try coordinator.sync(file) })
            #expect(error.code == .io && error.errno == 5)
            #expect(
                error.message.contains("failed earlier") && error.message.contains("sync 2: injected failure"),
                "\(error.message)")
        }
        #expect(file.syncCount == 2)
    }

    @Test("callers waiting behind a failing sync get the failure too, without another sync")
    func waitersBehindFailingSync() throws {
        let file = ScriptedSyncFile(holdFirst: true, failing: [1])
        let coordinator = FlushCoordinator()
        let (first, others) = Self.park(coordinator, file)
        file.releaseFirstSync()
        let a = try #require(first.join())
        let original = try #require(expectQEDError(.io) { try a.get() })
        #expect(original.message == "sync 1: injected failure")
        for caller in others {
            let result = try #require(caller.join())
            let error = try #require(expectQEDError(.io) { try result.get() })
            #expect(
                error.message.contains("failed earlier") && error.message.contains("sync 1: injected failure"),
                "\(error.message)")
        }
        #expect(file.syncCount == 1)
    }

    @Test("every sequential flush after a failure throws, however many there are", arguments: [1, 16, 17, 100])
    func sequentialFailures(count: Int) throws {
        // Every sync would fail; the old coordinator forgot failures after 16 and reported success.
        let file = ScriptedSyncFile(failing: Set(1...200))
        let coordinator = FlushCoordinator()
        for i in 1...count {
            let error = try #require(expectQEDError(.io, "flush \(i) reported success") { try coordinator.sync(file) })
            #expect(error.errno == 5)
        }
        #expect(coordinator.failure.isFailed)
        #expect(file.syncCount == 1)
    }

    @Test("a failure recorded elsewhere (a metadata write) fails later flushes")
    func externalFailure() throws {
        let file = ScriptedSyncFile()
        let coordinator = FlushCoordinator()
        try coordinator.sync(file)
        coordinator.failure.record(QEDError(.io, "L2 write: injected", errno: 28))
        let error = try #require(expectQEDError(.io) { try coordinator.sync(file) })
        #expect(error.errno == 28 && error.message.contains("L2 write: injected"))
        #expect(file.syncCount == 1)
    }
}
