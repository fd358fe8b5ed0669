extension OpenOptions {
    /// Opens the file at `path` as these options ask (read-only or not, flushes ignored or not),
    /// takes QEMU's lock bytes on it for `lockMode`, and hands it to `body` with the identity set a
    /// backing chain below it starts from (the file itself, for loop detection). Closes the file
    /// when locking or `body` fails; otherwise `body`'s result owns it. Force-share (`-U`) is only
    /// allowed with read-only opens, as in QEMU.
    func openLocked<T>(_ path: String, _ body: (PosixFile, Set<FileIdentity>) throws -> T) throws -> T {
        guard readOnly || !forceShare else {
            throw QEDError(.invalidArgument, "force-share (-U) is only allowed for read-only opens", path: path)
        }
        let file = try PosixFile(path: path, writable: !readOnly, ignoringFlushes: ignoreFlushes)
        do {
            try ImageLock.acquire(fd: file.descriptor.rawValue, mode: lockMode, path: path)
            let seen: Set<FileIdentity> = FileIdentity(path: path).map { [$0] } ?? []
            return try body(file, seen)
        } catch {
            file.close()
            throw error
        }
    }
}
