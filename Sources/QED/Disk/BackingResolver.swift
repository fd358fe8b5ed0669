#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Identity of a file on the host (device and inode), to detect backing chains that loop.
package struct FileIdentity: Hashable, Sendable {
    let device: UInt64
    let inode: UInt64

    /// The identity of the file at `path`, or nil if it cannot be stat'ed.
    package init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}

/// Resolves and opens backing files.
package enum BackingResolver {
    /// Longest backing chain accepted; deeper chains are reported as an error.
    static let maxDepth = 64

    /// The path a backing name refers to: absolute names as they are, relative names against the
    /// directory of `imagePath` (as QEMU does).
    package static func resolve(_ name: String, relativeTo imagePath: String) -> String {
        if name.hasPrefix("/") { return name }
        guard let slash = imagePath.lastIndex(of: "/") else { return name }
        return String(imagePath[...slash]) + name
    }

    /// Opens the backing file `name` of the image at `imagePath`, read-only with shared locks,
    /// probing its format unless `format` is given, with its format's ``DiskDriver`` (which opens
    /// the rest of the chain). `seen` holds the chain so far (loop check).
    static func open(
        name: String, format: BackingFormat?, imagePath: String, seen: Set<FileIdentity>,
        options: OpenOptions
    ) throws -> any Disk {
        try open(name: name, format: format.map(DiskFormat.init), imagePath: imagePath, seen: seen, options: options)
    }

    /// Opens the backing file `name` like ``open(name:format:imagePath:seen:options:)``, for
    /// formats that record any format name (add-cow).
    static func open(
        name: String, format: DiskFormat?, imagePath: String, seen: Set<FileIdentity>,
        options: OpenOptions
    ) throws -> any Disk {
        guard seen.count < maxDepth else {
            throw QEDError(.backingFile, "backing chain is deeper than \(maxDepth) images", path: imagePath)
        }
        let path = resolve(name, relativeTo: imagePath)
        guard let identity = FileIdentity(path: path) else {
            throw QEDError(
                .backingFile, "Could not open backing file: Could not open '\(path)': No such file or directory",
                path: imagePath, errno: ENOENT)
        }
        guard !seen.contains(identity) else {
            throw QEDError(.backingFile, "backing chain loops: '\(path)' is already part of it", path: imagePath)
        }
        let file = try PosixFile(path: path, writable: false)
        do {
            if options.locking { try ImageLock.acquire(fd: file.descriptor.rawValue, mode: .shared, path: path) }
            let driver = try format.map { try DiskOpener.driver(for: $0) } ?? DiskOpener.probe(file)
            var backingOptions = options
            backingOptions.readOnly = true
            backingOptions.forceShare = true
            return try driver.openLayer(file, backingOptions, seen.union([identity]))
        } catch {
            file.close()
            throw error
        }
    }
}
