public import QED

/// `stream`: copies everything an image still reads from its backing chain into the image itself,
/// after which the image no longer needs the backing file (QEMU's block-stream job, offline).
///
/// - add-cow: every cluster whose bit is clear is copied into the image file through the write
///   rule (claim, copy, sync, then the bit), then ALL_ALLOCATED is set: the image file alone is the
///   disk. The backing name stays in the header (unused, as the format says for ALL_ALLOCATED).
///   Stopped at any point, even by a kill, the image stays valid and a second run completes it.
/// - QED: the backing data is copied into the overlay and the backing file dropped, which is
///   exactly `rebase -b ""` (safe mode); a stopped run keeps the old backing file.
/// - raw: refused (no backing file).
public enum Stream {
    /// How to stream. Units: bytes.
    public struct Options: Sendable {
        /// The format named on the command line (`-f`); nil probes it. A file of another format is
        /// refused with the named format's own message ("Image not in QED format").
        public var format: DiskFormat?
        /// Progress reports (fraction of the bytes still in the backing chain at the start).
        public var progress: ProgressHandler?
        /// Stops between chunks; the image is flushed and closed, valid, part-streamed.
        public var cancellation: Cancellation?
        /// Bytes per second to copy at most (`-r`, add-cow only); nil: as fast as possible.
        public var rateLimit: UInt64?
        /// Guest bytes handled per step (rounded up to whole clusters). Each step syncs the image
        /// file once before it sets its bits.
        public var chunkSize: UInt64 = 1 << 20

        /// Default options.
        public init() {}
    }

    /// What a stream did. Units: bytes.
    public struct Result: Sendable, Equatable {
        /// The image's format.
        public var format: DiskFormat
        /// Guest bytes copied (or punched, where the backing chain reads zeroes) into the image.
        public var bytesStreamed: UInt64
    }

    /// Streams the image at `path` (format probed).
    @discardableResult
    public static func run(path: String, options: Options) throws -> Result {
        var format = try opening(path) { try DiskOpener.probe(path: path) }
        if let given = options.format, given != format {
            // Opening it as the named format gives that format's refusal; raw opens anything.
            let disk = try opening(path) {
                try DiskOpener.open(path: path, format: given, options: OpenOptions(readOnly: true))
            }
            try? disk.close()
            format = given
        }
        switch format {
        case .addCOW:
            let image = try opening(path) { try AddCOWImage.open(path: path) }
            do {
                let streamed = try stream(image, options: options)
                try image.close()
                return Result(format: format, bytesStreamed: streamed)
            } catch {
                try? image.close()
                throw error
            }
        case .qed:
            guard options.rateLimit == nil else {
                throw QEDError(.unsupported, "a rate limit is supported for add-cow images only, not qed", path: path)
            }
            var rebase = Rebase.Options()
            rebase.backing = nil
            rebase.progress = options.progress
            rebase.cancellation = options.cancellation
            let done = try Rebase.run(path: path, options: rebase)
            return Result(format: format, bytesStreamed: done.bytesCopied)
        default:
            throw QEDError(
                .unsupported, "stream needs an add-cow or QED image; \(format.rawValue) images have no backing file",
                path: path)
        }
    }

    /// Streams an open add-cow image chunk by chunk, then sets ALL_ALLOCATED.
    static func stream(_ image: AddCOWImage, options: Options) throws -> UInt64 {
        let cs = image.clusterSize ?? 65536
        let chunk = max(cs, options.chunkSize.roundedUpToMultiple(of: cs) ?? cs)
        let size = image.virtualSize
        let counter = ProgressCounter(total: image.clustersInBacking * cs, handler: options.progress)
        var limiter = options.rateLimit.map { RateLimiter(bytesPerSecond: $0) }
        var pos: UInt64 = 0
        var streamed: UInt64 = 0
        while pos < size {
            try options.cancellation?.check()
            let n = min(chunk, size - pos)
            let pulled = try image.pullFromBacking(at: pos, length: n)
            streamed += pulled
            counter.add(pulled)
            pos += n
            try limiter?.wait(after: pulled, cancellation: options.cancellation)
        }
        try options.cancellation?.check()
        try image.markAllAllocated()
        counter.finish()
        return streamed
    }
}

extension UInt64 {
    /// This value rounded up to a multiple of `m` (> 0), or nil on overflow.
    fileprivate func roundedUpToMultiple(of m: UInt64) -> UInt64? {
        let (sum, overflow) = addingReportingOverflow(m - 1)
        return overflow ? nil : sum / m * m
    }
}
