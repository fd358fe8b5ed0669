extension DiskFormat {
    /// add-cow: a raw image file plus a metadata file with a backing file name and a COW bitmap.
    public static let addCOW = DiskFormat(rawValue: "add-cow")
}

extension DiskDriver {
    /// add-cow: recognised by its magic (`ACOW`), opened by ``AddCOWImage``.
    static let addCOW = DiskDriver(
        format: .addCOW,
        recognizes: { file in try file.readBytes(count: 4, at: 0) == AddCOWHeader.magic },
        open: { path, options in try AddCOWImage.open(path: path, options: options) },
        openLayer: { file, options, seen in try AddCOWImage.open(metadata: file, options: options, seen: seen) },
        create: { path, options in
            guard let imageFile = options.imageFile else {
                throw QEDError(
                    .invalidArgument, "add-cow needs the name of its raw image file (image_file)", path: path)
            }
            var create = AddCOWCreateOptions(
                imageFile: imageFile, size: options.sizeGiven ? options.size : nil,
                backingFile: options.backingFile, backingFormat: options.backingFormat,
                clusterSize: UInt64(options.clusterSize))
            create.imageFormat = options.imageFormat ?? .raw
            try AddCOWImage.create(path: path, options: create)
        })
}
