import QED

/// `qemu-img commit`: writes what an overlay (and the layers between it and the base) holds into
/// a base image of its backing chain, then empties the overlay.
public enum Commit {
    /// How to commit.
    public struct Options: Sendable {
        /// The base to commit into, by name or path (`-b`); nil: the overlay's backing file.
        /// Giving a base implies ``keepOverlay`` (the layers in between become invalid otherwise).
        public var base: String?
        /// Leave the overlay's data in place (`-d`).
        public var keepOverlay = false
        /// Progress reports (fraction of the bytes to commit).
        public var progress: ProgressHandler?
        /// Stops between chunks; both images are then flushed and closed, the overlay not emptied.
        public var cancellation: Cancellation?

        /// Default options.
        public init() {}
    }

    /// What a commit did. Units: bytes.
    public struct Result: Sendable, Equatable {
        /// Path of the base written into.
        public var basePath: String
        /// Bytes copied as data.
        public var bytesCopied: UInt64
        /// Bytes written as zeroes (zero clusters of the overlay).
        public var bytesZeroed: UInt64
        /// Whether the overlay was emptied.
        public var emptied: Bool
    }

    /// Commits the image at `path` (QED or add-cow; other formats have no backing file).
    @discardableResult
    public static func run(path: String, options: Options) throws -> Result {
        // The format-specific step is emptying the overlay afterwards: QED drops its clusters
        // (`Image.makeEmpty`), add-cow clears its bits (`AddCOWImage.makeEmpty`).
        let format = try opening(path) { try DiskOpener.probe(path: path) }
        let keep = options.keepOverlay || options.base != nil
        let top: any Disk
        let empty: () throws -> Void
        switch format {
        case .qed:
            let image = try opening(path) { try Image.open(path: path, options: OpenOptions(readOnly: keep)) }
            (top, empty) = (image, image.makeEmpty)
        case .addCOW:
            let image = try opening(path) { try AddCOWImage.open(path: path, options: OpenOptions(readOnly: keep)) }
            (top, empty) = (image, image.makeEmpty)
        default:
            throw QEDError(.invalidArgument, "Image does not have a backing file")
        }
        do {
            let result = try commit(top: top, options: options, keep: keep, empty: empty)
            try top.close()
            return result
        } catch {
            try? top.close()
            throw error
        }
    }

    static func commit(
        top: any Disk, options: Options, keep: Bool, empty: () throws -> Void
    ) throws -> Result {
        let chain = DiskOpener.chain(of: top)
        guard chain.count > 1 else {
            throw QEDError(.invalidArgument, "Image does not have a backing file")
        }
        var baseIndex = 1
        if let wanted = options.base {
            // As QEMU finds a backing image by name: a relative name is taken relative to the
            // directory of the layer above the candidate, and both resolve to the same file.
            guard
                let k = (1..<chain.count).first(where: { k in
                    guard let name = DiskOpener.layerName(chain[k]) else { return false }
                    let above = DiskOpener.layerName(chain[k - 1]) ?? top.path
                    let candidate = BackingResolver.resolve(wanted, relativeTo: above)
                    guard let wantedID = FileIdentity(path: candidate) else { return name == candidate }
                    return FileIdentity(path: name) == wantedID
                })
            else {
                throw QEDError(.backingFile, "Did not find '\(wanted)' in the backing chain of '\(top.path)'")
            }
            baseIndex = k
        }
        guard let basePath = DiskOpener.layerName(chain[baseIndex]) else {
            throw QEDError(.backingFile, "cannot tell the path of the base image", path: top.path)
        }
        // Everything to copy, decided before the base changes (its read-only view would go stale).
        var work: [Extent] = []
        let size = top.virtualSize
        var pos: UInt64 = 0
        while pos < size {
            let step = min(size - pos, 1 << 30)
            for e in try top.extents(at: pos, length: step) where e.depth < baseIndex && e.present {
                work.append(e)
            }
            pos += step
        }
        let base = try DiskOpener.open(path: basePath, format: chain[baseIndex].format, options: OpenOptions())
        var copied: UInt64 = 0, zeroed: UInt64 = 0
        do {
            if base.virtualSize < size { try base.resize(to: size) }
            let counter = ProgressCounter(total: work.reduce(0) { $0 + $1.length }, handler: options.progress)
            let chunk = 1 << 20
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
            defer { buffer.deallocate() }
            for e in work {
                if e.zero {
                    try options.cancellation?.check()
                    try base.writeZeroes(at: e.offset, length: e.length, unmap: true)
                    zeroed += e.length
                    counter.add(e.length)
                    continue
                }
                var done: UInt64 = 0
                while done < e.length {
                    try options.cancellation?.check()
                    let n = Int(min(UInt64(chunk), e.length - done))
                    let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
                    try top.read(into: slice, at: e.offset + done)
                    try base.write(UnsafeRawBufferPointer(slice), at: e.offset + done)
                    done += UInt64(n)
                    counter.add(UInt64(n))
                }
                copied += e.length
            }
            try base.flush()
        } catch {
            try? base.close()
            throw error
        }
        try base.close()
        if !keep { try empty() }
        options.progress?(1)
        return Result(basePath: basePath, bytesCopied: copied, bytesZeroed: zeroed, emptied: !keep)
    }
}
