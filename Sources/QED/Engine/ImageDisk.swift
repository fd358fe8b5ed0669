extension Image: Disk {
    /// Always ``DiskFormat/qed``.
    public var format: DiskFormat { .qed }
    /// Host bytes of the image file (`st_blocks`·512), or nil when its file does not know.
    public func allocatedBytes() -> UInt64? { (try? file.allocatedBytes()) ?? nil }
    /// The cluster size in bytes (never nil for QED).
    public var clusterSize: UInt64? { geometry.clusterSize }
    /// With a journal region: `journal-size` (bytes) and `journal-valid` (the header's bit, as
    /// ``isJournalValid``); nothing for QEMU's layout.
    public var formatSpecific: [FormatSpecificField] {
        guard let area = journalArea else { return [] }
        return [
            FormatSpecificField("journal-size", .uint(area.size)),
            FormatSpecificField("journal-valid", .bool(isJournalValid)),
        ]
    }
    /// The backing file the header names: its name, resolved path, and `.raw` when the header
    /// records BACKING_FORMAT_NO_PROBE (nil: probed).
    public var backingFile: BackingFileReference? {
        let state = backingState.withLock { ($0.name, $0.format) }
        guard let name = state.0 else { return nil }
        return BackingFileReference(
            name: name, path: BackingResolver.resolve(name, relativeTo: path),
            format: state.1.map(DiskFormat.init))
    }
}

extension DiskDriver {
    /// QED: recognised by its magic (`QED\0`), opened by ``Image``.
    static let qed = DiskDriver(
        format: .qed,
        recognizes: { file in try file.readBytes(count: 4, at: 0) == [0x51, 0x45, 0x44, 0x00] },
        open: { path, options in try Image.open(path: path, options: options) },
        openLayer: { file, options, seen in try Image.open(file: file, options: options, lockHeld: true, seen: seen) },
        create: { path, options in
            // QED's size is whole 512-byte sectors: rounded up, as qemu-img does.
            guard let size = options.size.roundedUp(toMultipleOf: 512) else {
                throw QEDError(
                    .invalidImageSize, "image size \(options.size) overflows when rounded up to whole sectors",
                    value: options.size, path: path)
            }
            // The header can record only "raw, never probe"; any other backing format is probed.
            let backingFormat: BackingFormat? = options.backingFormat.map { $0 == .raw ? .raw : .qed }
            var create = CreateOptions(
                size: size, clusterSize: options.clusterSize, tableSize: options.tableSize,
                backingFile: options.backingFile, backingFormat: backingFormat)
            create.journalSize = options.journalSize
            try Image.create(path: path, options: create)
        })
}

extension DiskFormat {
    /// The disk format a QED header's backing format names.
    init(_ backing: BackingFormat) {
        self.init(rawValue: backing.rawValue)
    }
}
