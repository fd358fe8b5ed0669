public import QED

/// `qemu-img dd`: copies blocks of a disk into a new image, with qemu-img's semantics: the
/// output size is `min(count·bs, input size) − skip·bs` (count counts from the start of the
/// input, not from the skipped position), and every block is written, zeroes included.
public enum DD {
    /// What to copy. Units: bytes unless named blocks.
    public struct Options: Sendable {
        /// Block size in bytes (`bs=`). Default 512.
        public var blockSize: UInt64 = 512
        /// Blocks to copy (`count=`), nil for all.
        public var count: UInt64?
        /// Blocks to skip at the start of the input (`skip=`).
        public var skip: UInt64 = 0
        /// Output format. Default raw.
        public var format: DiskFormat = .raw
        /// Cluster size of an output with clusters (QED), bytes.
        public var clusterSize: UInt32 = 65536
        /// Table size of an output with tables (QED), clusters.
        public var tableSize: UInt32 = 4
        /// Stops between blocks; the output is flushed and closed.
        public var cancellation: Cancellation?

        /// Default options.
        public init() {}
    }

    /// What a copy did. Units: bytes.
    public struct Result: Sendable, Equatable {
        /// Bytes copied (the size of the output before rounding up to whole sectors).
        public var bytesCopied: UInt64
    }

    /// The size of the output for `inputSize` input bytes, bytes.
    static func outputSize(inputSize: UInt64, options: Options) -> UInt64 {
        var size = inputSize
        let bs = options.blockSize
        if let count = options.count {
            let (total, overflow) = count.multipliedReportingOverflow(by: bs)
            if !overflow && total < size { size = total }
        }
        let (skipBytes, overflow) = options.skip.multipliedReportingOverflow(by: bs)
        return overflow || skipBytes > size ? 0 : size - skipBytes
    }

    /// Copies `input` into a new image at `output`.
    @discardableResult
    public static func run(input: any Disk, output: String, options: Options) throws -> Result {
        guard options.blockSize > 0, options.blockSize <= Int32.max else {
            throw QEDError(.invalidArgument, "invalid number for bs", value: options.blockSize)
        }
        let size = outputSize(inputSize: input.virtualSize, options: options)
        try DiskOpener.refuseOverwriting(output, sources: [input])
        // qemu-img rounds new images up to whole 512-byte sectors.
        let (padded, overflow) = size.addingReportingOverflow(511)
        guard !overflow else {
            throw QEDError(
                .invalidArgument, "output size \(size) overflows when rounded up to whole sectors", value: size)
        }
        let outputSize = padded / 512 * 512
        try DiskOpener.create(
            path: output, format: options.format,
            options: NewDiskOptions(
                size: outputSize, clusterSize: options.clusterSize,
                tableSize: options.tableSize))
        let out = try DiskOpener.open(path: output, format: options.format, options: OpenOptions())
        let bs = options.blockSize
        let start = size == 0 ? 0 : options.skip * bs
        let end = size == 0 ? 0 : min(input.virtualSize, start + size)
        var copied: UInt64 = 0
        do {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(bs), alignment: 4096)
            defer { buffer.deallocate() }
            var pos = start
            while pos < end {
                try options.cancellation?.check()
                let n = Int(min(bs, end - pos))
                let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
                try input.read(into: slice, at: pos)
                try out.write(UnsafeRawBufferPointer(slice), at: copied)
                pos += UInt64(n)
                copied += UInt64(n)
            }
            try out.flush()
        } catch {
            try? out.close()
            throw error
        }
        try out.close()
        return Result(bytesCopied: copied)
    }
}
