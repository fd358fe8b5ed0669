import Foundation
import Testing

/// `create -o journal=on`, `info`'s journal fields, `amend -o journal=on|off` and `check` saying
/// how it looked at a journaled image (docs/journal.md §2).
@Suite struct JournalCLITests {
    @Test func createInfoAmendAndCheckSpeakOfTheJournal() throws {
        let box = try Sandbox()
        let created = try box.ours(
            "create", "-f", "qed", "-o", "cluster_size=4096,table_size=2,journal=on,journal_size=20k", "j.qed", "8M")
        #expect(created.status == 0, "\(created)")
        #expect(created.stdout.contains("journal=on journal_size=20480"), "\(created.stdout)")
        // 20 KiB round up to 5 clusters: header_size 6, L1 right after the region.
        #expect(try box.peek64("j.qed", at: 32) == 1, "autoclear bit 0 marks the journal valid")
        #expect(try box.peek64("j.qed", at: 40) == 6 * 4096, "the L1 table follows the header area")
        #expect(try box.qemuCheckStatus("j.qed") == 0)

        let info = try box.ours("info", "j.qed")
        #expect(info.stdout.contains("    journal-size: 20480\n    journal-valid: true\n"), "\(info.stdout)")
        let json = try box.ours("info", "--output=json", "j.qed")
        #expect(json.stdout.contains("\"journal-size\": 20480") && json.stdout.contains("\"journal-valid\": true"))

        // A clean image is checked by a scan, and says so; non-journaled images keep qemu-img's words.
        let check = try box.ours("check", "j.qed")
        #expect(check.status == 0 && check.stdout.hasSuffix("Checked by a full scan of every table.\n"), "\(check)")
        try box.mustOurs("create", "-q", "-f", "qed", "plain.qed", "1M")
        #expect(try box.ours("check", "plain.qed").stdout == "No errors were found on the image.\n")
        #expect(!(try box.ours("check", "--output=json", "plain.qed").stdout.contains("check-method")))
        #expect(!(try box.ours("info", "plain.qed").stdout.contains("journal")))

        // A crash with the journal on: check -r recovers from the journal and says so.
        let crashed = try box.ours(
            "io", "-c", "write -P 0x11 0 64k", "-c", "write -P 0x12 5M 8k", "-c", "abort", "j.qed")
        #expect(crashed.status != 0)
        try box.copy("j.qed", "k.qed")
        let recovered = try box.ours("check", "-r", "all", "j.qed")
        #expect(recovered.status == 0, "\(recovered)")
        #expect(
            recovered.stdout.contains("Recovered from the journal (3 records since the last checkpoint)"),
            "\(recovered)")
        let recoveredJSON = try box.ours("check", "--output=json", "-r", "all", "k.qed")
        #expect(recoveredJSON.stdout.contains("\"check-method\": \"journal\""), "\(recoveredJSON)")
        #expect(try box.qemuCheckStatus("j.qed") == 0 && box.qemuCheckStatus("k.qed") == 0)
        try box.qemuIO("-c", "read -P 0x11 0 64k", "-c", "read -P 0x12 5M 8k", "j.qed")

        // amend: off clears the bit (the region stays), on sets it again.
        try box.mustOurs("amend", "-o", "journal=off", "j.qed")
        #expect(try box.peek64("j.qed", at: 32) == 0)
        #expect(try box.ours("info", "j.qed").stdout.contains("journal-valid: false"))
        try box.mustOurs("amend", "-o", "journal=on", "j.qed")
        #expect(try box.peek64("j.qed", at: 32) == 1)
        #expect(try box.qemuCheckStatus("j.qed") == 0)

        // Refusals: no region to arm, a size that cannot change, an unknown value.
        let noRegion = try box.ours("amend", "-o", "journal=on", "plain.qed")
        #expect(noRegion.status == 1 && noRegion.stderr.contains("reserves no journal region"), "\(noRegion)")
        #expect(try box.ours("amend", "-o", "journal_size=1M", "j.qed").status == 1)
        #expect(try box.ours("amend", "-o", "journal=maybe", "j.qed").status == 1)
        #expect(try box.ours("create", "-f", "raw", "-o", "journal=on", "r.raw", "1M").status == 1)
        #expect(try box.ours("create", "-f", "qed", "-o", "journal=off,journal_size=1M", "n.qed", "1M").status == 1)
    }
}
