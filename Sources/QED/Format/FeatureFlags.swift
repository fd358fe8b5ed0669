/// The incompatible `features` bits of a QED header (bytes 16..<24).
///
/// An image with a bit outside ``FeatureFlags/known`` cannot be opened: QEMU and we refuse it.
public struct FeatureFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `QED_F_BACKING_FILE` (0x01): the image has a backing file, named in the header area.
    public static let backingFile = FeatureFlags(rawValue: 0x01)
    /// `QED_F_NEED_CHECK` (0x02): the image may be inconsistent and must be checked before use.
    public static let needCheck = FeatureFlags(rawValue: 0x02)
    /// `QED_F_BACKING_FORMAT_NO_PROBE` (0x04): the backing file is raw; never probe its format.
    public static let backingFormatNoProbe = FeatureFlags(rawValue: 0x04)

    /// Every bit this implementation understands (0x07).
    public static let known: FeatureFlags = [.backingFile, .needCheck, .backingFormatNoProbe]
}
