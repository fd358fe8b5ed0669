/// The names of the disk formats: what `-f`/`-O` accept and ``Disk/format`` reports.
///
/// Only a name: what a format *does* (recognise its files, open them, open them as backing layers)
/// is its ``DiskDriver`` in ``DiskOpener``'s registry, the one place the engine dispatches on the
/// format. Adding a format is a folder with its ``Disk`` type and driver, a case here and a line in
/// the registry. (Callers that switch over the cases — `create`, `convert`, `measure` — say
/// per format what they do, and the compiler points them out.)
public enum DiskFormat: String, Sendable, Equatable, CaseIterable {
    /// QEMU Enhanced Disk.
    case qed
    /// A plain file: guest byte N is file byte N.
    case raw
}
