import ArgumentParser
import QED
import QEDTools

/// `check`: consistency check (and repair) with qemu-img's report, JSON and exit codes.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check an image for inconsistencies (and repair them with -r).",
        discussion: """
            Exit status: 0 no errors, 1 the check could not complete, 2 corruptions remain, 3 only \
            leaked clusters remain, 63 the format has no check (raw). -r leaks and -r all both clear \
            invalid offsets (as QEMU does) and, unlike QEMU, also give back leaked clusters at the end \
            of the file (reported as leaks-fixed).
            """)

    enum Repair: String, ExpressibleByArgument { case leaks, all }

    @OptionGroup var opening: OpeningOptions

    @OptionGroup var output: OutputOption

    @Option(name: .customShort("r"), help: "Repair: leaks or all.")
    var repair: Repair?

    @OptionGroup var verbosity: QuietOption

    @OptionGroup var sourceCache: IgnoredSourceCacheOption

    /// For bench/journal: prints to stderr how long the open and the first check pass took, so
    /// the dirty reopen can be timed without the process's start-up.
    @Flag(help: .hidden)
    var timing = false

    @Argument(help: "The image file.")
    var file: String

    func run() throws {
        let clock = ContinuousClock()
        let openStart = clock.now
        // Opened with its backing chain, as qemu-img opens it: a missing backing file fails the check.
        let disk = try openDisk(
            file, format: try opening.format.value(), readOnly: repair == nil, forceShare: opening.forceShare,
            autoCheck: false)
        let openTime = clock.now - openStart
        // Journaled QED images say how they were checked (others keep qemu-img's output exactly).
        let journaled = (disk as? Image)?.journalArea != nil
        var options = QEDTools.Check.Options()
        options.repair = repair != nil
        let outcome: QEDTools.Check.Result
        do {
            outcome = try QEDTools.Check.run(disk: disk, options: options)
        } catch let error as QEDError where error.code == .unsupported && error.cause == nil {
            // The format has no check (raw): qemu-img's message and exit status.
            try? disk.close()
            throw CLIError(error.message, exitCode: 63)
        } catch let error as QEDError {
            try? disk.close()
            let reason = error.cause?.reason ?? error.message
            throw CLIError("Check failed: \(reason)")
        }
        try disk.close()
        if timing {
            let millisecond = Duration.milliseconds(1)
            Console.err(
                cFormat(
                    "timing: open %.3f ms, first pass %.3f ms", openTime / millisecond,
                    outcome.firstPass / millisecond)
                    + " (\(outcome.report.method.rawValue))\n")
        }
        if !verbosity.quiet {
            switch output.format {
            case .json:
                Console.out(
                    Check.json(outcome.report, filename: file, format: disk.format, journaled: journaled).pretty()
                        + "\n")
            case .human: Console.out(Check.human(outcome, journaled: journaled))
            }
        }
        if outcome.report.checkErrors > 0 { throw CLIError("Check failed") }
        if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
    }

    /// QEMU's `ImageCheck` as a QDict (fields in QAPI order; zero counts left out).
    /// Journaled images get a `check-method` field: `journal` or `scan`.
    static func json(_ r: CheckReport, filename: String, format: DiskFormat, journaled: Bool = false) -> QemuJSON {
        var pairs: [(String, QemuJSON)] = [
            ("filename", .string(filename)), ("format", .string(format.rawValue)),
            ("check-errors", .int(Int64(r.checkErrors))),
        ]
        let optional: [(String, UInt64)] = [
            ("corruptions", UInt64(r.corruptions)), ("leaks", UInt64(r.leaks)),
            ("corruptions-fixed", UInt64(r.corruptionsFixed)), ("leaks-fixed", UInt64(r.leaksFixed)),
            ("total-clusters", r.totalClusters), ("allocated-clusters", r.allocatedClusters),
            ("fragmented-clusters", r.fragmentedClusters),
        ]
        for (key, value) in optional where value != 0 { pairs.append((key, .uint(value))) }
        if journaled { pairs.append(("check-method", .string(r.method.rawValue))) }
        return .object(pairs)
    }

    /// qemu-img's human report, including the repair preamble; journaled images end with a line
    /// saying whether the journal was used or every table was scanned.
    static func human(_ outcome: QEDTools.Check.Result, journaled: Bool = false) -> String {
        let r = outcome.report
        var out = ""

        if outcome.repairedSomething {
            out += """
                The following inconsistencies were found and repaired:

                    \(r.leaksFixed) leaked clusters
                    \(r.corruptionsFixed) corruptions

                Double checking the fixed image now...

                """
        }
        if r.corruptions == 0 && r.leaks == 0 && r.checkErrors == 0 {
            out += "No errors were found on the image.\n"
        } else {
            if r.corruptions > 0 {
                out +=
                    "\n\(r.corruptions) errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n"
            }
            if r.leaks > 0 {
                out +=
                    "\n\(r.leaks) leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n"
            }
            if r.checkErrors > 0 {
                out += "\n\(r.checkErrors) internal errors have occurred during the check.\n"
            }
        }
        if r.totalClusters != 0 && r.allocatedClusters != 0 {
            let a = Double(r.allocatedClusters)
            out += cFormat(
                "%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                r.allocatedClusters, r.totalClusters, a * 100 / Double(r.totalClusters),
                Double(r.fragmentedClusters) * 100 / a, 0.0)
        }
        if journaled {
            out +=
                r.method == .journal
                ? "Recovered from the journal (\(r.journalRecords) records since the last checkpoint), no full scan.\n"
                : "Checked by a full scan of every table.\n"
        }
        return out
    }
}
