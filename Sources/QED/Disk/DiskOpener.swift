/// Finding and opening disks by path: probes the format like qemu-img, opens with the format's
/// driver (which opens the backing chain, see ``BackingResolver``), walks chains, names layers.
public enum DiskOpener {
    /// The formats the engine knows, in probing order: formats with a signature first, raw (which
    /// takes any file) last. Adding a format is one line here.
    static let drivers: [DiskDriver] = [.qed, .addCOW, .raw]

    /// The formats the engine knows, in probing order: the names `-f`/`-O` accept.
    public static var formats: [DiskFormat] { drivers.map(\.format) }

    /// The known format named `name` (qemu-img's spelling, e.g. `"qed"`), or nil.
    public static func format(named name: String) -> DiskFormat? {
        drivers.first { $0.format.rawValue == name }?.format
    }

    /// The known formats' names for messages, the last joined with `conjunction`: "qed, add-cow and raw".
    public static func formatNames(conjunction: String) -> String {
        let names = formats.map(\.rawValue)
        guard let last = names.last else { return "" }
        guard names.count > 1 else { return last }
        return names.dropLast().joined(separator: ", ") + " \(conjunction) " + last
    }

    /// Creates (or truncates) the file at `path` as an empty disk of `format`, with its driver.
    /// Throws ``QEDError/Code/unsupported`` for a format no driver knows.
    public static func create(path: String, format: DiskFormat, options: NewDiskOptions) throws {
        try driver(for: format).create(path, options)
    }

    /// The driver of `format`.
    static func driver(for format: DiskFormat) throws -> DiskDriver {
        guard let driver = drivers.first(where: { $0.format == format }) else {
            throw QEDError(.unsupported, "no driver for the format '\(format.rawValue)'")
        }
        return driver
    }

    /// The driver of the first format that recognises `file`.
    static func probe(_ file: any BlockFile) throws -> DiskDriver {
        for driver in drivers where try driver.recognizes(file) { return driver }
        throw QEDError(.unsupported, "no format recognises the file", path: file.path)
    }

    /// The format of the file at `path`: the first format whose signature it carries, else raw.
    public static func probe(path: String) throws -> DiskFormat {
        let file = try PosixFile(path: path, writable: false)
        defer { file.close() }
        return try probe(file).format
    }

    /// Opens `path` as `format` (probed when nil; a file named raw is never probed), with its
    /// backing chain, taking the QEMU locks `options` call for.
    public static func open(path: String, format: DiskFormat?, options: OpenOptions) throws -> any Disk {
        try driver(for: format ?? probe(path: path)).open(path, options)
    }

    /// Opens `file` (any ``BlockFile``, e.g. a ``DiskFile`` holding another image's guest data) as
    /// `format` (probed when nil), with its backing chain. Takes no QEMU locks: the caller holds
    /// what `file` needs. The disk owns `file`.
    public static func open(file: any BlockFile, format: DiskFormat?, options: OpenOptions) throws -> any Disk {
        try (format.map { try driver(for: $0) } ?? probe(file)).openLayer(file, options, [])
    }

    /// The chain below `disk`: `[disk, its backing, the backing's backing, ...]` (as opened).
    public static func chain(of disk: any Disk) -> [any Disk] {
        var out: [any Disk] = [disk]
        var current = disk
        while let next = current.backing, out.count <= BackingResolver.maxDepth {
            out.append(next)
            current = next
        }
        return out
    }

    /// Throws if `target` is the same file as any layer of any of `sources` (writing it would
    /// destroy what is being read).
    public static func refuseOverwriting(_ target: String, sources: [any Disk]) throws {
        guard let id = FileIdentity(path: target) else { return }
        for source in sources {
            for layer in chain(of: source) where FileIdentity(path: layer.path) == id {
                throw QEDError(
                    .invalidArgument, "the output is the same file as the input '\(layer.path)'", path: target)
            }
        }
    }

    /// A name for each layer of ``chain(of:)``: the path each was opened from. (Never nil; the
    /// optional remains for existing callers.)
    public static func layerName(_ disk: any Disk) -> String? {
        disk.path
    }
}
