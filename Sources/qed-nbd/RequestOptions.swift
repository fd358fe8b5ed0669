import ArgumentParser
import NBDServer

/// `--cache --discard --detect-zeroes -A`: how requests reach the image, and what block status offers.
struct RequestOptions: ParsableArguments {
    @Option(name: .customLong("cache"), help: "How writes are made durable.")
    var cache: NBDCacheMode = .writeback

    @Option(name: .customLong("discard"), help: "Whether TRIM frees space.")
    var discard: NBDDiscardMode = .ignore

    @Option(name: .customLong("detect-zeroes"), help: "Zero-write detection.")
    var detectZeroes: NBDDetectZeroesMode = .off

    @Flag(name: [.customShort("A"), .customLong("allocation-depth")], help: "Offer qemu:allocation-depth.")
    var allocationDepth = false

    func validate() throws {
        if self.detectZeroes == .unmap && self.discard != .unmap {
            throw ValidationError("--detect-zeroes=unmap is only allowed with --discard=unmap")
        }
    }

    /// Sets the cache, discard and zero-detection policies and whether allocation depth is offered.
    func apply(to options: inout NBDServerOptions) {
        options.cache = self.cache
        options.discard = self.discard
        options.detectZeroes = self.detectZeroes
        options.allocationDepth = self.allocationDepth
    }
}
