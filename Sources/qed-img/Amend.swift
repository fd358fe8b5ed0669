import ArgumentParser
import QED

/// `amend`: change format options of an existing image. QED's amendable option is `journal`.
struct Amend: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change format options of an existing image.",
        discussion: """
            QED: -o journal=on re-arms the metadata journal of an image created with -o journal=on \
            (after a QEMU write turned it off); -o journal=off turns it off (the region stays \
            reserved). journal_size cannot change: the header area is fixed at creation.
            """)

    @OptionGroup var format: FormatOption

    @OptionGroup var formatOptions: FormatOptionsOption

    @OptionGroup var verbosity: QuietOption

    @Argument(help: "The image file.")
    var file: String

    func run() throws {
        let opts = try formatOptions.list()
        if opts.wantsHelp {
            Console.out(
                """
                Supported options:
                  journal=<bool (on/off)> - Metadata journal in the header area (swift-qed only)

                """)
            return
        }
        guard !opts.values.isEmpty else {
            throw CLIError("Expecting one image file name\nqed-img: -o is required for amend")
        }
        let fmt = try format.value()
        if let fmt, fmt != .qed {
            throw CLIError("Format driver '\(fmt.rawValue)' does not support option amendment", path: file)
        }
        try opts.check(known: ["journal", "journal_size"], format: DiskFormat.qed.rawValue)
        let journal = try JournalOption(opts)
        if journal.size != nil {
            throw CLIError(
                "journal_size cannot be amended: the header area is fixed when the image is created", path: file)
        }
        let disk = try openDisk(file, format: fmt, readOnly: false)
        guard let image = disk as? Image else {
            try? disk.close()
            throw CLIError("Format driver '\(disk.format.rawValue)' does not support option amendment", path: file)
        }
        do {
            if let enabled = journal.enabled { try image.setJournal(enabled: enabled) }
        } catch {
            try? image.close()
            throw error
        }
        try image.close()
    }
}
