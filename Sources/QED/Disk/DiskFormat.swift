/// The name of a disk format: what `-f`/`-O` accept and ``Disk/format`` reports.
///
/// Only a name: what a format *does* (recognise its files, open them, open them as backing layers,
/// create empty ones) is its ``DiskDriver`` in ``DiskOpener``'s registry, the one place the engine
/// dispatches on the format; ``DiskOpener/formats`` lists the names it knows.
///
/// A struct with static members rather than an enum (like ``QEDError/Code``), so that adding a
/// format breaks no `switch`: a `switch` over formats needs a `default`. The raw value is the name
/// qemu-img uses, e.g. `"qed"`. Any name can be wrapped; ``DiskOpener/format(named:)`` tells
/// whether a driver knows it.
public struct DiskFormat: Hashable, Sendable, RawRepresentable, CustomStringConvertible {
    /// The format's name as qemu-img spells it, e.g. `"qed"`.
    public var rawValue: String

    /// Wraps a format name (known to a driver or not).
    public init(rawValue: String) { self.rawValue = rawValue }

    /// The format's name, e.g. `"qed"`.
    public var description: String { rawValue }

    /// QEMU Enhanced Disk.
    public static let qed = DiskFormat(rawValue: "qed")
    /// A plain file: guest byte N is file byte N.
    public static let raw = DiskFormat(rawValue: "raw")
}
