import Foundation
import QED
import TestSupport
import Testing

// Power cuts on journaled images (docs/journal.md §2): the crash workload of CrashTests on images
// created with a journal, where the check on open must recover from the journal and leave, besides
// zero corruptions and every flushed byte, zero leaked clusters.

extension CrashConfig {
    /// Cuts per journaled configuration (two of them); `QED_JOURNAL_CUTS` overrides.
    static var journalCutsPerConfig: Int {
        ProcessInfo.processInfo.environment["QED_JOURNAL_CUTS"].flatMap { Int($0) } ?? 1000
    }

    /// 4 KiB clusters, 2-cluster tables, a 16 KiB journal (4 journal clusters: 606 tables a period).
    static let smallJournaled: CrashConfig = {
        var config = CrashConfig.small(backing: false)
        config.journalSize = 16 << 10
        config.cuts = journalCutsPerConfig
        return config
    }()

    /// 64 KiB clusters, 4-cluster tables, a 256 KiB journal.
    static let largeJournaled: CrashConfig = {
        var config = CrashConfig.large(backing: false)
        config.journalSize = 256 << 10
        config.cuts = journalCutsPerConfig
        return config
    }()
}

@Suite("Journaled image crashes")
struct JournaledImageCrashTests {
    @Test(
        "power cuts on journaled images: recovery from the journal, no corruption, no leak",
        arguments: [CrashConfig.smallJournaled, .largeJournaled])
    func randomCuts(config: CrashConfig) throws {
        let base = ModelRNG.seed(0x10_5A00 &+ UInt64(config.clusterSize), salt: 11)
        var rng = ModelRNG(seed: base)
        let setup = try CrashSetup(config, directoryName: "journal-crash", rng: &rng)
        defer { setup.directory.remove() }
        var failed = 0
        var (inside, interrupted, lost, journal, leaksFixed) = (0, 0, 0, 0, 0)
        for i in 0..<config.cuts {
            let seed = base &+ UInt64(i)
            var outcome: CutOutcome
            do {
                outcome = try runCrashCut(config: config, backingPath: nil, backing: [], seed: seed)
            } catch {
                outcome = CutOutcome(failures: ["threw \(error) [seed \(seed) \(config)]"])
            }
            if outcome.cutInsideOperation { inside += 1 }
            if outcome.interruptedRecovery { interrupted += 1 }
            if outcome.lostSomething { lost += 1 }
            if outcome.recoveredFromJournal { journal += 1 }
            if outcome.leaksFixedOnOpen { leaksFixed += 1 }
            if !outcome.failures.isEmpty {
                failed += 1
                if failed <= 3 { Issue.record("cut \(i): \(outcome.failures.joined(separator: "\n"))") }
            }
        }
        print(
            "journal crash \(config): \(config.cuts) cuts, \(inside) inside an operation, \(interrupted) with a cut recovery, \(lost) lost unflushed data, \(journal) recovered from the journal, \(leaksFixed) gave leaks back, \(failed) failed"
        )
        #expect(failed == 0, "\(failed) of \(config.cuts) cuts failed (base seed \(base))")
        #expect(
            inside > config.cuts / 4 && lost > config.cuts / 10 && interrupted > config.cuts / 10,
            "too few interesting cuts: \(inside) inside, \(lost) lossy, \(interrupted) interrupted recoveries")
        // Recovery must actually use the journal, and must have had leaks to give back.
        if config.cuts >= 100 {
            #expect(journal > config.cuts / 4, "only \(journal) recoveries used the journal")
            #expect(leaksFixed > 0, "no recovery gave back a leaked cluster")
        }
    }

    @Test("power cuts during concurrent workloads on a journaled image")
    func concurrentCuts() throws {
        let config = CrashConfig.smallJournaled
        let base = ModelRNG.seed(0x10_C0C7, salt: 12)
        let rounds = 150
        var (failed, lost, journal) = (0, 0, 0)
        for i in 0..<rounds {
            let seed = base &+ UInt64(i)
            var outcome: CutOutcome
            do {
                outcome = try runConcurrentCut(config: config, backingPath: nil, backing: [], seed: seed)
            } catch {
                outcome = CutOutcome(failures: ["threw \(error) [seed \(seed) \(config)]"])
            }
            if outcome.lostSomething { lost += 1 }
            if outcome.recoveredFromJournal { journal += 1 }
            if !outcome.failures.isEmpty {
                failed += 1
                if failed <= 3 { Issue.record("round \(i): \(outcome.failures.joined(separator: "\n"))") }
            }
        }
        print(
            "journal concurrent crash \(config): \(rounds) cuts, \(lost) lost unflushed data, \(journal) recovered from the journal, \(failed) failed"
        )
        #expect(failed == 0, "\(failed) of \(rounds) concurrent cuts failed (base seed \(base); interleaving varies)")
        #expect(
            lost > rounds / 10 && journal > rounds / 4,
            "too few interesting cuts: \(lost) lossy, \(journal) from the journal")
    }
}
