import Foundation
import TestSupport
import Testing

/// The test harness's child-process runner: it must report a child's end even when the child
/// left something running that inherited its descriptors (Foundation's `Process` on Linux does
/// not: it waits for a socket every descendant holds).
@Suite struct SpawnedProcessTests {
    @Test(.timeLimit(.minutes(1)))
    func childEndsWhileItsBackgroundJobRuns() throws {
        let box = try TemporaryDirectory()
        // The shell starts a long sleep in the background, records its pid and exits with 3.
        let outcome = try ChildProcess.run(
            "/bin/sh", ["-c", "sleep 600 & echo $! > bg.pid; echo done; exit 3"], in: box.path)
        let pidText = try String(contentsOfFile: box.file("bg.pid"), encoding: .utf8)
        let background = Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines))
        defer { if let background { kill(background, SIGKILL) } }
        #expect(outcome.status == 3)
        #expect(outcome.stdout == "done\n")
        // The background job is still running: the runner did not wait for it.
        #expect(background.map { kill($0, 0) == 0 } == true)
    }

    @Test func timeoutKillsTheChildAndWhatItStarted() throws {
        let box = try TemporaryDirectory()
        let outcome = try ChildProcess.run(
            "/bin/sh", ["-c", "sleep 600 & echo $! > bg.pid; wait"], in: box.path, timeout: 0.5)
        #expect(outcome.status == SIGKILL)
        let pidText = try String(contentsOfFile: box.file("bg.pid"), encoding: .utf8)
        let background = try #require(Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)))
        // Killed with its parent's group; reaped by init once it is dead, so wait for that.
        if let watch = ProcessWatch(pid: background) {
            #expect(watch.waitForExit(timeout: 60), "the background sleep outlived the timeout")
        }
    }

    @Test func statusIsTheSignalWhenASignalEndsTheChild() throws {
        let child = try SpawnedProcess("/bin/sleep", ["600"])
        #expect(child.isRunning)
        child.signal(SIGTERM)
        #expect(child.wait() == SIGTERM)
        #expect(!child.isRunning)
        #expect(child.status == SIGTERM)
    }

    @Test func aMissingProgramIsAnError() {
        #expect(throws: SpawnedProcess.SpawnFailure.self) {
            _ = try SpawnedProcess("/nonexistent/program", [])
        }
    }
}
