import ArgumentParser
import QED

/// `create`: a new, empty QED, add-cow or raw image.
struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a new disk image.",
        discussion: """
            Prints qemu-img's "Formatting 'FILE', fmt=qed size=... cluster_size=..." line (not with \
            -q). Without a size, the backing file's size is used. -o takes cluster_size (4k...64M, power \
            of 2, default 64k), table_size (1...16 clusters, power of 2, default 4) and journal=on|off with \
            journal_size (default 2M: a metadata journal in the header area, so that a dirty open checks \
            only what changed since the last checkpoint); "-o help" lists them. \
            add-cow takes image_file=FILE (the raw file holding the data, created when missing; an existing \
            one gives the size), image_fmt=raw and cluster_size (4k...2M).
            """)

    @Option(name: .customShort("f"), help: "Image format (default qed): \(DiskOpener.formatNames(conjunction: "or")).")
    var format = Choice(DiskFormat.qed)

    @Option(
        name: .customShort("b"),
        help: "Backing file (stored as given; relative names resolve against the image's directory).")
    var backingFile: String?

    @Option(
        name: .customShort("F"),
        help: "Backing file format: \(DiskOpener.formatNames(conjunction: "or")) (required with -b unless -u).")
    var backingFormat: Choice<DiskFormat>?

    @Flag(name: .customShort("u"), help: "Do not open the backing file (a size must then be given).")
    var unsafe = false

    @OptionGroup var formatOptions: FormatOptionsOption

    @OptionGroup var verbosity: QuietOption

    @Argument(help: "The image file to create.")
    var file: String

    @Argument(help: "Virtual size (suffixes k, M, G, T, P, E).")
    var size: String?

    func run() throws {
        let fmt = try format.value()
        let opts = try formatOptions.list()
        if opts.wantsHelp {
            Console.out(fmt == .qed ? OptionList.qedHelp : fmt == .addCOW ? OptionList.addCOWHelp : OptionList.rawHelp)
            return
        }
        let known: [String]
        switch fmt {
        case .qed:
            known = ["size", "backing_file", "backing_fmt", "cluster_size", "table_size", "journal", "journal_size"]
        case .addCOW: known = ["size", "backing_file", "backing_fmt", "cluster_size", "image_file", "image_fmt"]
        default: known = ["size"]
        }
        try opts.check(known: known, format: fmt.rawValue)
        let imageFile = opts.value("image_file")
        if fmt == .addCOW && imageFile == nil {
            throw CLIError("add-cow needs the name of its raw image file: -o image_file=FILE", path: file)
        }
        let layout = try QEDLayout(opts)
        let journalSize = try JournalOption(opts).sizeForCreate()
        let backing = backingFile ?? opts.value("backing_file")
        let backingFmtChoice = backingFormat ?? opts.value("backing_fmt").map(Choice.init(argument:))
        var sizeText = size ?? opts.value("size")
        var sizeValue: UInt64?
        if let text = sizeText {
            guard let v = Sizes.parse(text), v <= UInt64(Int64.max) else {
                throw CLIError(
                    "Invalid image size specified. You may use k, M, G, T, P or E suffixes for\nqed-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."
                )
            }
            sizeValue = v
            sizeText = String(v)
        }
        let backingFmt = try backingFmtChoice?.value()
        if fmt == .raw && backing != nil {
            throw CLIError("Backing file not supported for file format 'raw'", path: file)
        }
        if let backing, backing == file {
            throw CLIError("Error: Trying to create an image with the same filename as the backing file", path: file)
        }
        // Without -u the backing file is opened: for its size, and to insist on its format.
        if let backing, !unsafe {
            let resolved = backing.hasPrefix("/") ? backing : directory(of: hostPath(file)) + backing
            let detected: DiskFormat
            do {
                detected = try DiskOpener.probe(path: resolved)
            } catch let error as QEDError {
                throw CLIError("\(error.message)\nCould not open backing image.", path: file)
            }
            if backingFmt == nil {
                throw CLIError(
                    "Backing file specified without backing format\nDetected format of \(detected.rawValue).",
                    path: file)
            }
            if sizeValue == nil {
                let disk = try openDisk(
                    resolved, format: backingFmt, readOnly: true, forceShare: true, openBacking: false)
                sizeValue = disk.virtualSize
                try? disk.close()
            }
        }
        // add-cow over an existing image file takes that file's length as the size.
        let existingImage =
            imageFile.map { FileIdentity(path: $0.hasPrefix("/") ? $0 : directory(of: hostPath(file)) + $0) != nil }
            ?? false
        let sizeGiven = size != nil || opts.value("size") != nil
        guard let finalSize = sizeValue ?? (fmt == .addCOW && existingImage ? 0 : nil) else {
            throw CLIError("Image creation needs a size parameter", path: file)
        }
        var line = "Formatting '\(file)', fmt=\(fmt.rawValue) size=\(sizeText ?? String(finalSize))"
        if fmt == .addCOW {
            if let backing { line += " backing_file=\(backing)" }
            if let backingFmtChoice { line += " backing_fmt=\(backingFmtChoice.text)" }
            if let imageFile { line += " image_file=\(imageFile)" }
            line += " cluster_size=\(layout.clusterSize)"
        }
        if fmt == .qed {
            if let backing { line += " backing_file=\(backing)" }
            if let backingFmtChoice { line += " backing_fmt=\(backingFmtChoice.text)" }
            line += " cluster_size=\(layout.clusterSize)"
            if layout.tableGiven { line += " table_size=\(layout.tableSize)" }
            if let journalSize { line += " journal=on journal_size=\(journalSize)" }
        }
        if !verbosity.quiet { Console.out(line + "\n") }
        // qemu-img rounds new images up to whole 512-byte sectors.
        let roundedSize = (finalSize + 511) / 512 * 512
        var options = NewDiskOptions(
            size: roundedSize, backingFile: backing, backingFormat: backingFmt,
            clusterSize: layout.clusterSize, tableSize: layout.tableSize)
        options.imageFile = imageFile
        options.journalSize = journalSize
        options.imageFormat = try opts.value("image_fmt").map { try Choice<DiskFormat>(argument: $0).value() }
        // A size taken from the backing file is the size of a new image file, not a demand on an existing one.
        options.sizeGiven = sizeGiven || !existingImage
        try DiskOpener.create(path: hostPath(file), format: fmt, options: options)
    }
}

/// The directory part of `path` with its trailing slash ("" for a bare name).
func directory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "" }
    return String(path[...slash])
}
