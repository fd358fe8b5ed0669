public import QED

/// `qemu-img info`: what an image (and, on request, its backing chain) is.
public enum Info {
    /// What to look at.
    public struct Options: Sendable {
        /// The image's format (`-f`); nil probes it.
        public var format: DiskFormat?
        /// Open without taking QEMU's locks (`-U`); layers below the top are always opened so.
        public var forceShare = false
        /// Also describe every image below the top one (`--backing-chain`).
        public var backingChain = false

        /// Default options: the top image alone, probed, locked.
        public init() {}
    }

    /// The images described.
    public struct Result: Sendable, Equatable {
        /// Top first; one entry unless ``Options/backingChain``.
        public var images: [ImageInfo]
    }

    /// Describes the image at `path`.
    public static func run(path: String, options: Options) throws -> Result {
        Result(
            images: try ImageInfo.collect(
                path: path, format: options.format, forceShare: options.forceShare,
                backingChain: options.backingChain))
    }
}
