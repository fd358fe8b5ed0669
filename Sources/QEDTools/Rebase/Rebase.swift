public import QED

/// `qemu-img rebase`: gives a QED image another backing file.
public enum Rebase {
    /// How to rebase.
    public struct Options: Sendable {
        /// The new backing file name as it will be stored (relative names resolve against the
        /// image's directory); nil or empty removes the backing file.
        public var backing: String?
        /// The new backing file's format; nil probes it (safe mode) or records none (`-u`).
        public var backingFormat: DiskFormat?
        /// `-u`: only change the name; the content is assumed to be the same.
        public var unsafe = false
        /// Progress reports (fraction of the unallocated bytes examined).
        public var progress: ProgressHandler?
        /// Stops between clusters; the image keeps its old backing file and its content.
        public var cancellation: Cancellation?

        /// Default options.
        public init() {}
    }

    /// What a rebase did. Units: bytes.
    public struct Result: Sendable, Equatable {
        /// Bytes copied into the image because the old and new backing files differ there.
        public var bytesCopied: UInt64
    }

    /// Rebases the QED or add-cow image at `path`.
    @discardableResult
    public static func run(path: String, options: Options) throws -> Result {
        let name = options.backing.flatMap { $0.isEmpty ? nil : $0 }
        let format = try opening(path) { try DiskOpener.probe(path: path) }
        guard format == .qed || format == .addCOW else {
            throw QEDError(
                .unsupported, "rebase needs a QED or add-cow image; \(format) images have no backing file", path: path)
        }
        var open = OpenOptions()
        open.openBacking = !options.unsafe
        let image: any Disk
        let setBacking: (DiskFormat?) throws -> Void
        if format == .qed {
            let qed = try opening(path) { try Image.open(path: path, options: open) }
            image = qed
            setBacking = { f in try qed.setBacking(name: name, format: f == .raw ? .raw : nil, open: false) }
        } else {
            let addCOW = try opening(path) { try AddCOWImage.open(path: path, options: open) }
            image = addCOW
            setBacking = { f in try addCOW.setBacking(name: name, format: f) }
        }
        do {
            let result: Result
            if options.unsafe {
                try setBacking(options.backingFormat)
                result = Result(bytesCopied: 0)
            } else {
                result = try safeRebase(image: image, name: name, options: options, setBacking: setBacking)
            }
            try image.close()
            return result
        } catch {
            try? image.close()
            throw error
        }
    }

    /// Copies into `image` the clusters where its old and new backing files differ, then names the
    /// new one through `setBacking` (given the new backing file's format).
    static func safeRebase(
        image: any Disk, name: String?, options: Options, setBacking: (DiskFormat?) throws -> Void
    ) throws -> Result {
        var newDisk: (any Disk)?
        if let name {
            let resolved = BackingResolver.resolve(name, relativeTo: image.path)
            guard FileIdentity(path: resolved) != nil else {
                throw QEDError(
                    .backingFile,
                    "Could not open new backing file '\(resolved)': Could not open '\(resolved)': No such file or directory"
                )
            }
            newDisk = try DiskOpener.open(
                path: resolved, format: options.backingFormat,
                options: OpenOptions(readOnly: true, forceShare: true))
        }
        defer { try? newDisk?.close() }
        // The ranges the image does not hold itself (they show the old backing file).
        let size = image.virtualSize
        var ranges: [(UInt64, UInt64)] = []
        var pos: UInt64 = 0
        while pos < size {
            let step = min(size - pos, 1 << 30)
            for e in try image.extents(at: pos, length: step) where !(e.depth == 0 && e.present) {
                if let last = ranges.last, last.0 + last.1 == e.offset {
                    ranges[ranges.count - 1].1 += e.length
                } else {
                    ranges.append((e.offset, e.length))
                }
            }
            pos += step
        }
        let counter = ProgressCounter(total: ranges.reduce(0) { $0 + $1.1 }, handler: options.progress)
        let cs = image.clusterSize ?? 65536
        let step = max(cs, 1 << 20)
        let old = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(step), alignment: 4096)
        let new = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(step), alignment: 4096)
        defer {
            old.deallocate()
            new.deallocate()
        }
        var copied: UInt64 = 0
        for (start, length) in ranges {
            var at = start
            let end = start + length
            while at < end {
                try options.cancellation?.check()
                let n = Int(min(step - (at % step), end - at))
                let o = UnsafeMutableRawBufferPointer(rebasing: old[0..<n])
                let w = UnsafeMutableRawBufferPointer(rebasing: new[0..<n])
                try image.read(into: o, at: at)
                // No new backing file, or one shorter than the image: zeroes there.
                if let newDisk {
                    try newDisk.readZeroFillingPastEnd(into: w, at: at)
                } else {
                    w.initializeMemory(as: UInt8.self, repeating: 0)
                }
                // Copy the clusters that differ (whole clusters: allocation is per cluster anyway).
                var c = 0
                while c < n {
                    let clusterEnd = Int(min(UInt64(n), (at + UInt64(c)) / cs * cs + cs - at))
                    if memcmp(o.baseAddress! + c, w.baseAddress! + c, clusterEnd - c) != 0 {
                        try image.write(UnsafeRawBufferPointer(rebasing: o[c..<clusterEnd]), at: at + UInt64(c))
                        copied += UInt64(clusterEnd - c)
                    }
                    c = clusterEnd
                }
                at += UInt64(n)
                counter.add(UInt64(n))
            }
        }
        try image.flush()
        try setBacking(newDisk?.format)
        counter.finish()
        return Result(bytesCopied: copied)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
