import Foundation
import Synchronization

/// How long the in-process fuzz targets run, from the environment:
/// - `QED_FUZZ_ITERATIONS`: iterations per target (default: the target's CI count, ≥ 10,000);
/// - `QED_FUZZ_FIRST`: the first iteration (default 0). Iterations are independent (each seeds its
///   own generator from the base seed and its number), so `QED_FUZZ_FIRST=n QED_FUZZ_ITERATIONS=1`
///   replays iteration n alone;
/// - `QED_TEST_SEED`: changes the base seed (see ``SplitMix64/seed(_:salt:)``).
public enum FuzzSettings {
    /// The iterations to run: `QED_FUZZ_ITERATIONS` when set, else `ciDefault`.
    public static func iterations(default ciDefault: Int) -> Range<Int> {
        let env = ProcessInfo.processInfo.environment
        let count = env["QED_FUZZ_ITERATIONS"].flatMap { Int($0) }.map { max(0, $0) } ?? ciDefault
        let first = env["QED_FUZZ_FIRST"].flatMap { Int($0) }.map { max(0, $0) } ?? 0
        return first..<(first + count)
    }

    /// The generator of iteration `iteration` of a target whose base seed is `base`.
    public static func generator(base: UInt64, iteration: Int) -> SplitMix64 {
        var mixer = SplitMix64(seed: base ^ (UInt64(iteration) &* 0xD6E8_FEB8_6659_FD93))
        return SplitMix64(seed: mixer.next())
    }
}

/// Detects a hung fuzz iteration: a background thread aborts the process, naming the target and
/// iteration, when ``tick(_:)`` has not been called for `stallSeconds` (default 300, or
/// `QED_FUZZ_STALL_SECONDS`). An iteration takes milliseconds, so the margin is vast: this is a
/// hang detector that reports where to look, not a timing assertion.
public final class StallWatchdog: Sendable {
    /// The iteration last reported.
    private let iteration = Atomic<Int>(-1)
    /// Bumped by every tick; the thread compares it between looks.
    private let ticks = Atomic<UInt64>(0)
    /// Set by ``stop()``; the thread exits at its next look.
    private let stopped = Atomic<Bool>(false)

    /// Starts watching; `label` names the target in the abort message.
    public init(label: String, stallSeconds: Double? = nil) {
        let env = ProcessInfo.processInfo.environment["QED_FUZZ_STALL_SECONDS"].flatMap { Double($0) }
        let limit = stallSeconds ?? env ?? 300
        Thread.detachNewThread { [self] in
            var lastTicks = ticks.load(ordering: .relaxed)
            var quietSince = Date()
            while !stopped.load(ordering: .relaxed) {
                Thread.sleep(forTimeInterval: 0.25)
                let now = ticks.load(ordering: .relaxed)
                if now != lastTicks {
                    lastTicks = now
                    quietSince = Date()
                } else if Date().timeIntervalSince(quietSince) > limit, !stopped.load(ordering: .relaxed) {
                    FileHandle.standardError.write(
                        Data(
                            "\(label): iteration \(iteration.load(ordering: .relaxed)) made no progress for \(limit) s (a hang)\n"
                                .utf8))
                    abort()
                }
            }
        }
    }

    /// Reports that `iteration` started.
    public func tick(_ iteration: Int) {
        self.iteration.store(iteration, ordering: .relaxed)
        ticks.add(1, ordering: .relaxed)
    }

    /// Stops watching.
    public func stop() { stopped.store(true, ordering: .relaxed) }
}
