import ArgumentParser
import NBDServer

/// `--cache --discard --detect-zeroes -A --no-extended-headers`: how requests reach the image, what
/// block status offers, and which request header forms are accepted.
struct RequestOptions: ParsableArguments {
    @Option(name: .customLong("cache"), help: "How writes are made durable.")
    var cache: NBDCacheMode = .writeback

    @Option(name: .customLong("discard"), help: "Whether TRIM frees space.")
    var discard: NBDDiscardMode = .ignore

    @Option(name: .customLong("detect-zeroes"), help: "Zero-write detection.")
    var detectZeroes: NBDDetectZeroesMode = .off

    @Flag(name: [.customShort("A"), .customLong("allocation-depth")], help: "Offer qemu:allocation-depth.")
    var allocationDepth = false

    @Flag(
        name: .customLong("no-extended-headers"),
        help: "Refuse NBD extended headers (clients then use compact 28-byte requests, as before QEMU 8.2)."
    )
    var noExtendedHeaders = false

    func validate() throws {
        if detectZeroes == .unmap && discard != .unmap {
            throw ValidationError("--detect-zeroes=unmap is only allowed with --discard=unmap")
        }
    }

    /// Sets the cache, discard and zero-detection policies, whether allocation depth is offered and
    /// whether extended headers may be negotiated.
    func apply(to options: inout NBDServerOptions) {
        options.cache = cache
        options.discard = discard
        options.detectZeroes = detectZeroes
        options.allocationDepth = allocationDepth
        options.extendedHeaders = !noExtendedHeaders
    }
}
