public import NBD
import NIOCore

/// How the server makes writes durable (`--cache`, qemu-nbd's spelling).
public enum NBDCacheMode: String, Sendable, Hashable, CaseIterable {
    /// Writes are made durable only by FLUSH or a FUA flag (the default).
    case writeback
    /// Every write is made durable before it is answered.
    case writethrough
    /// Like ``writethrough`` here: every write is made durable before it is answered.
    case none

    /// Whether every write-type command must be followed by a flush before its reply.
    public var flushesEveryWrite: Bool { self != .writeback }
}

/// What TRIM (and zeroing that may unmap) does (`--discard`).
public enum NBDDiscardMode: String, Sendable, Hashable, CaseIterable {
    /// TRIM succeeds without touching the image; WRITE_ZEROES never gives storage back (the default).
    case ignore
    /// TRIM gives storage back (`Disk.discard`); WRITE_ZEROES without `NO_HOLE` may unmap.
    case unmap
}

/// Whether all-zero WRITE payloads are turned into zeroing (`--detect-zeroes`).
public enum NBDDetectZeroesMode: String, Sendable, Hashable, CaseIterable {
    /// Write payloads as they come (the default).
    case off
    /// An all-zero payload becomes `writeZeroes(unmap: false)`.
    case on
    /// An all-zero payload becomes `writeZeroes(unmap: true)`; needs ``NBDDiscardMode/unmap``.
    case unmap
}

/// Everything that shapes what one ``NBDServer`` offers and how it behaves.
public struct NBDServerOptions: Sendable, Hashable {
    /// The export name clients ask for (`-x`); empty by default.
    public var exportName: String = ""
    /// Human-readable text for LIST and `NBD_INFO_DESCRIPTION` (`-D`).
    public var description: String?
    /// Durability policy of writes (`--cache`).
    public var cache: NBDCacheMode = .writeback
    /// TRIM policy (`--discard`).
    public var discard: NBDDiscardMode = .ignore
    /// Zero detection policy (`--detect-zeroes`).
    public var detectZeroes: NBDDetectZeroesMode = .off
    /// Whether `qemu:allocation-depth` is offered besides `base:allocation` (`-A`).
    public var allocationDepth: Bool = false
    /// How many clients may be in the transmission phase (using the export) at once (`-e`); 0 means no
    /// limit. A client that finishes negotiating while that many are served waits for one to leave (its
    /// reply to `NBD_OPT_GO` is held back). Connections still negotiating do not count: see
    /// ``maximumNegotiatingConnections``. Anything but 1 advertises `CAN_MULTI_CONN`: every connection
    /// shares one open image, so a FLUSH on one covers all.
    public var sharedClients: Int = 1
    /// How many connections may be negotiating (or waiting for a ``sharedClients`` slot) at once; at this
    /// many the server stops accepting and new connections wait in the listen queue. The
    /// ``handshakeLimit`` bounds how long an idle connection holds its place.
    public var maximumNegotiatingConnections: Int = 16
    /// Largest option request data accepted while negotiating, in bytes; a longer option closes the
    /// connection. The decoder holds an option whole before parsing it, so this times
    /// ``maximumNegotiatingConnections`` bounds the memory of connections still negotiating (16 MiB by
    /// default). No option needs more: protocol strings are at most 4 KiB, so 1 MiB is a GO or
    /// SET_META_CONTEXT with over 250 names of the longest kind. (qemu-nbd accepts up to 32 MiB, but
    /// parses options as they stream in.)
    public var maximumOptionLength: Int = 1 << 20
    /// Seconds a connection may take to finish negotiating (from the greeting to its `NBD_OPT_GO` or
    /// `NBD_OPT_EXPORT_NAME`, TLS handshake included) before the server closes it
    /// (`--handshake-limit`, as in QEMU 10's qemu-nbd); 0 means no limit. Waiting for a
    /// ``sharedClients`` slot afterwards does not count.
    public var handshakeLimit: Double = 10
    /// Whether to keep serving after the last client disconnected (`-t`). Without it the server stops once
    /// a client that entered transmission leaves and no other is connected.
    public var persistent: Bool = false
    /// Requests of one connection executing at once; reading from that client pauses at this many.
    public var maximumRequestsInFlight: Int = 64
    /// WRITE payload bytes of one connection held at once; reading pauses past this many.
    public var maximumBytesInFlight: Int = 256 << 20
    /// Threads that run engine calls (blocking I/O) for all connections; one per CPU core (at least 2)
    /// by default. Cached I/O is CPU-bound and more threads than cores only add context switches
    /// (measured on 2 cores: 4 KiB random reads ~100k IOPS with 2 threads, ~75k with 8); raise it for
    /// slow disks that need many requests in flight.
    public var ioThreads: Int = max(2, System.coreCount)
    /// Event loop threads for the sockets, one per CPU core by default (a connection stays on one).
    /// Small reads of cached data run on the event loop itself (``NBDDiskBackend/readIfCached(_:session:)``),
    /// so with several connections the loops do much of the work: measured on 2 cores, 4 KiB random
    /// reads on 2 connections ~190k IOPS with 1 loop, ~230k with 2.
    public var eventLoopThreads: Int = System.coreCount
    /// Seconds a shutdown waits for connections to finish their requests before closing them.
    public var drainTimeout: Double = 30
    /// Block size constraints sent in INFO/GO; the maximum is also the largest READ/WRITE accepted.
    public var blockSize: NBDBlockSizeConstraints = .default
    /// Whether clients may negotiate `NBD_OPT_EXTENDED_HEADERS` (32-byte headers, 64-bit lengths); when
    /// false it is answered as unsupported and every client uses compact headers.
    public var extendedHeaders: Bool = true

    /// Options with every default (qemu-nbd's defaults); set the fields you need.
    public init() {}
}

/// Where the server listens.
public enum NBDListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// A TCP address and port (port 0 picks a free one).
    case tcp(host: String, port: Int)
    /// A Unix domain socket path; an existing socket file there is replaced, and removed at shutdown.
    case unix(path: String)
    /// An already bound (and possibly listening) socket inherited from the parent, e.g. by systemd socket
    /// activation (fd 3).
    case inherited(descriptor: Int32)

    /// The address as a user reads it: `127.0.0.1:10809`, `unix:/path`, `fd:3`.
    public var description: String {
        switch self {
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): return "unix:\(path)"
        case .inherited(let descriptor): return "fd:\(descriptor)"
        }
    }
}
