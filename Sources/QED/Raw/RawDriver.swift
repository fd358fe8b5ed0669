extension DiskDriver {
    /// Raw: no signature, so it recognises every file (last in the registry); never has a backing file.
    static let raw = DiskDriver(
        format: .raw,
        recognizes: { _ in true },
        open: { path, options in try RawImage(path: path, options: options) },
        openLayer: { file, _, _ in try RawImage(file: file, readOnly: true) },
        create: { path, options in
            guard options.backingFile == nil else {
                throw QEDError(.invalidArgument, "Backing file not supported for file format 'raw'", path: path)
            }
            try RawImage.create(path: path, size: options.size)
        })
}

extension BlockFile {
    /// The extents of a raw disk stored in this file (guest offset = file offset): data where the
    /// file system holds data, zero (still present, as QEMU reports raw holes) where it has holes.
    public func rawExtents(at offset: UInt64, length: UInt64) throws -> [Extent] {
        var out: [Extent] = []
        var pos = offset
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow else {
            throw QEDError(
                .outOfRange, "extents of \(length) bytes at offset \(offset) overflow", value: offset,
                path: path)
        }
        while pos < end {
            let (isData, n) = try allocation(at: pos, limit: end - pos)
            let step = max(1, min(n, end - pos))
            out.appendMerging(
                Extent(
                    offset: pos, length: step, depth: 0, present: true, zero: !isData,
                    data: isData, hostOffset: pos))
            pos += step
        }
        return out
    }
}
