import Synchronization

/// The in-memory header, shared by the image and its NEED_CHECK timer, and the one path by which
/// the header on disk changes (``update(trailer:_:)``).
///
/// The mutex guards the value and is held across each update's write and sync, so two header
/// updates never interleave on disk and a reader never sees a header the disk does not hold.
final class HeaderStore: Sendable {
    private let value: Mutex<Header>
    /// The image file the header lives in (at byte 0).
    private let file: any BlockFile
    /// Syncs each update; its ``StickyFailure`` refuses updates on a failed image and records a
    /// failed header write.
    private let flusher: FlushCoordinator

    /// A store holding `header`, as read from `file`, whose updates sync through `flusher`.
    init(_ header: Header, file: any BlockFile, flusher: FlushCoordinator) {
        value = Mutex(header)
        self.file = file
        self.flusher = flusher
    }

    /// The header as it is now (equal to the disk's whenever no update is in progress).
    var current: Header { value.withLock { $0 } }

    /// Changes the header: copies it, applies `change` to the copy, writes the copy at byte 0
    /// (followed by `trailer`, e.g. the backing file name at byte 64), syncs, and only then makes
    /// the copy the header in memory. Returns the new header.
    ///
    /// On any failure memory keeps the old header. A failed write or sync marks the image failed
    /// (the disk may hold either header): later updates throw before writing anything.
    @discardableResult
    func update(trailer: [UInt8] = [], _ change: (inout Header) throws -> Void) throws -> Header {
        try value.withLock { header in
            try flusher.failure.check()
            var copy = header
            try change(&copy)
            let bytes = copy.encoded() + trailer
            try flusher.failure.recording { try file.writeBytes(bytes, at: 0) }
            try flusher.sync(file)
            header = copy
            return copy
        }
    }
}
