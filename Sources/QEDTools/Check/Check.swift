public import QED

/// `qemu-img check`'s flow around the engine's checker: an optional repairing pass, then (if it
/// repaired anything) a second, read-only pass whose counts are reported, carrying over the
/// repaired counts from the first.
public enum Check {
    /// How to check.
    public struct Options: Sendable {
        /// Repair what can be repaired (`-r leaks` or `-r all`; the engine repairs both alike).
        public var repair = false

        /// Default options: a read-only check.
        public init() {}
    }

    /// What the check found.
    public struct Result: Sendable, Equatable {
        /// The report to print: the second pass after repairs, else the only pass.
        public var report: CheckReport
        /// Whether the first pass repaired something (then "The following inconsistencies were
        /// found and repaired" is printed before the final report).
        public var repairedSomething: Bool
        /// How long the first pass took (the repairing pass with `repair`: on a dirty journaled
        /// image, the journal recovery), measured on the monotonic clock.
        public var firstPass: Duration = .zero

        /// qemu-img's exit status for this result: 1 internal errors, 2 corruptions remain,
        /// 3 only leaks remain, 0 clean.
        public var exitCode: Int32 {
            if report.checkErrors > 0 { return 1 }
            if report.corruptions > 0 { return 2 }
            if report.leaks > 0 { return 3 }
            return 0
        }
    }

    /// Checks `disk` (opened read-write with `autoCheck` off when repairing). Throws
    /// ``QEDError/Code/unsupported`` for a format without a check (raw).
    public static func run(disk: any Disk, options: Options) throws -> Result {
        let clock = ContinuousClock()
        let start = clock.now
        let first = try disk.check(repair: options.repair)
        let firstPass = clock.now - start
        guard options.repair, first.corruptionsFixed > 0 || first.leaksFixed > 0 else {
            return Result(report: first, repairedSomething: false, firstPass: firstPass)
        }
        var second = try disk.check(repair: false)
        second.corruptionsFixed = first.corruptionsFixed
        second.leaksFixed = first.leaksFixed
        // How the repairing pass worked (the double check always scans).
        second.method = first.method
        second.journalRecords = first.journalRecords
        return Result(report: second, repairedSomething: true, firstPass: firstPass)
    }
}
