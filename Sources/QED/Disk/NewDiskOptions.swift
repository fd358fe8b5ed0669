/// What a new, empty disk is to be: ``DiskOpener/create(path:format:options:)``. Every format takes
/// the size; the other fields are for the formats that have such a thing and are ignored by the rest.
///
/// Units: bytes unless named clusters.
public struct NewDiskOptions: Sendable {
    /// Virtual size in bytes. A format that needs whole 512-byte sectors (QED) rounds it up;
    /// raw takes it as given.
    public var size: UInt64
    /// The backing file name to record, stored as given (relative names resolve against the new
    /// disk's directory when opened). Formats without backing files refuse one.
    public var backingFile: String?
    /// The backing file's format to record; nil leaves it to probing. (QED records only raw: any
    /// other format is probed.)
    public var backingFormat: DiskFormat?
    /// Allocation unit in bytes, for formats that have one (QED's `cluster_size`). Default 64 KiB.
    public var clusterSize: UInt32
    /// Table size in clusters, for formats with tables sized so (QED's `table_size`). Default 4.
    public var tableSize: UInt32
    /// The raw file that holds the data, for formats that keep it apart (add-cow's `image_file`):
    /// created with ``size`` bytes when missing, taken as it is (its length the disk size) when it exists.
    public var imageFile: String?
    /// The format of ``imageFile`` (add-cow's `image_fmt`); nil or raw, any other is refused.
    public var imageFormat: DiskFormat?
    /// Whether ``size`` was given by the user (false: a format with an existing image file or a
    /// backing file takes the size from it). Default true.
    public var sizeGiven = true
    /// Bytes to reserve for a metadata journal, for formats that have one (QED's `journal=on`,
    /// `journal_size`); nil: none. Default nil.
    public var journalSize: UInt64?

    /// Options with every default but the size.
    public init(
        size: UInt64, backingFile: String? = nil, backingFormat: DiskFormat? = nil,
        clusterSize: UInt32 = 65536, tableSize: UInt32 = 4
    ) {
        self.size = size
        self.backingFile = backingFile
        self.backingFormat = backingFormat
        self.clusterSize = clusterSize
        self.tableSize = tableSize
    }
}
