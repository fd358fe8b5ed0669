#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension AddCOWImage {
    /// Opens the add-cow image whose metadata file is at `path`, taking QEMU-compatible locks on
    /// the metadata and image files and opening the backing chain.
    public static func open(path: String, options: OpenOptions = OpenOptions()) throws -> AddCOWImage {
        try options.openLocked(path) { file, seen in
            try open(metadata: file, options: options, seen: seen)
        }
    }

    /// Opens the add-cow image in `metadata` (already open and locked as `options` call for); the
    /// image file is opened at the name the header gives (relative to `metadata.path`) with the
    /// same locks, or taken from `imageFile` when given (tests: any ``BlockFile``). `seen` holds
    /// the identities of the chain above (loop check). The image owns both files.
    static func open(
        metadata: any BlockFile, options: OpenOptions, seen: Set<FileIdentity>, imageFile given: (any BlockFile)? = nil
    ) throws -> AddCOWImage {
        var options = options
        if !metadata.isWritable { options.readOnly = true }
        let path = metadata.path
        do {
            let fixed = try metadata.readBytes(count: AddCOWHeader.fixedSize, at: 0)
            let length = try metadata.length()
            guard length >= UInt64(AddCOWHeader.fixedSize) else {
                throw QEDError(
                    .truncatedFile, "add-cow header needs 76 bytes, the file has \(length)", value: length)
            }
            let headerSize = try AddCOWHeader.headerSize(decodingFixed: fixed)
            guard length >= UInt64(headerSize) else {
                throw QEDError(
                    .truncatedFile, "add-cow header area is \(headerSize) bytes, the file has \(length)",
                    value: length)
            }
            let header = try AddCOWHeader(decoding: metadata.readBytes(count: Int(headerSize), at: 0))
            let imageFile = try given ?? openImageFile(header: header, metadataPath: path, options: options)
            do {
                return try open(metadata: metadata, imageFile: imageFile, header: header, options: options, seen: seen)
            } catch {
                if given == nil { imageFile.close() }
                throw error
            }
        } catch let error as QEDError {
            throw error.naming(path)
        }
    }

    private static func open(
        metadata: any BlockFile, imageFile: any BlockFile, header: AddCOWHeader, options: OpenOptions,
        seen: Set<FileIdentity>
    ) throws -> AddCOWImage {
        let readOnly = options.readOnly || !imageFile.isWritable
        let size = try imageFile.length()
        let layout = try AddCOWLayout(
            clusterSize: header.clusterSize, headerSize: UInt64(header.headerSize), size: size)
        let bitmap = try COWBitmap(file: metadata, base: layout.headerSize, clusters: layout.clusters)
        var backing: (any Disk)?
        if let name = header.backingName, !header.isAllAllocated, options.openBacking {
            let imageIdentity = FileIdentity(path: imageFile.path)
            backing = try BackingResolver.open(
                name: name, format: header.backingFormat.map { DiskFormat(rawValue: $0) },
                imagePath: metadata.path, seen: seen.union(imageIdentity.map { [$0] } ?? []), options: options)
        }
        return AddCOWImage(
            metadataFile: metadata, imageFile: imageFile, header: header, bitmap: bitmap, size: size,
            readOnly: readOnly, backing: backing)
    }

    /// Opens the image file the header names, with the locks `options` call for.
    private static func openImageFile(
        header: AddCOWHeader, metadataPath: String, options: OpenOptions
    ) throws
        -> any BlockFile
    {
        let path = BackingResolver.resolve(header.imageName, relativeTo: metadataPath)
        guard FileIdentity(path: path) != nil else {
            throw QEDError(
                .io, "Could not open image file '\(path)': No such file or directory", path: metadataPath,
                errno: ENOENT)
        }
        if FileIdentity(path: path) == FileIdentity(path: metadataPath) {
            throw QEDError(
                .invalidHeader, "the image file '\(header.imageName)' is the metadata file itself",
                path: metadataPath)
        }
        let file = try PosixFile(path: path, writable: !options.readOnly, ignoringFlushes: options.ignoreFlushes)
        do {
            try ImageLock.acquire(fd: file.descriptor.rawValue, mode: options.lockMode, path: path)
        } catch {
            file.close()
            throw error
        }
        return file
    }
}
