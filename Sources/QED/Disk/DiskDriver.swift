/// One format's entry in ``DiskOpener``'s registry: how to recognise a file of the format, how
/// to open it (at the top of a chain or as a backing layer) and how to create an empty one. Each format defines its driver in its
/// own folder (`DiskDriver.qed` in Engine/, `DiskDriver.addCOW` in AddCOW/, `DiskDriver.raw` in Raw/).
struct DiskDriver: Sendable {
    /// The format this driver opens.
    let format: DiskFormat
    /// Whether `file` (open for reading) holds this format, judged by its first bytes. A format
    /// without a signature (raw) recognises every file and comes last in the registry.
    let recognizes: @Sendable (_ file: any BlockFile) throws -> Bool
    /// Opens the file at `path` as the top of a chain: opens the file, takes the QEMU locks that
    /// `options` call for and opens the backing chain.
    let open: @Sendable (_ path: String, _ options: OpenOptions) throws -> any Disk
    /// Opens `file` — already open read-only and locked as `options` call for — as a backing layer
    /// (`options` are read-only and force-shared); `seen` holds the identities of the layers above
    /// it and of `file` itself, for the loop check of its own backing file. The disk owns `file`.
    let openLayer:
        @Sendable (_ file: any BlockFile, _ options: OpenOptions, _ seen: Set<FileIdentity>) throws
            -> any Disk
    /// Creates (or truncates) the file at `path` as an empty disk of this format, or throws a
    /// typed error for options the format cannot honour (a backing file for raw).
    let create: @Sendable (_ path: String, _ options: NewDiskOptions) throws -> Void
}
