import ArgumentParser
import NBDServer

/// `--cache --discard --detect-zeroes -A`: how requests reach the image, and what block status offers.
struct RequestOptions: ParsableArguments {
    @Option(name: .customLong("cache"), help: "writeback (default), writethrough or none.")
    var cache: String = "writeback"

    @Option(name: .customLong("discard"), help: "ignore (default) or unmap: whether TRIM frees space.")
    var discard: String = "ignore"

    @Option(name: .customLong("detect-zeroes"), help: "off (default), on or unmap: zero-write detection.")
    var detectZeroes: String = "off"

    @Flag(name: [.customShort("A"), .customLong("allocation-depth")], help: "Offer qemu:allocation-depth.")
    var allocationDepth = false

    func validate() throws {
        guard NBDCacheMode(rawValue: self.cache) != nil else {
            throw ValidationError("invalid cache mode '\(self.cache)' (writeback, writethrough or none)")
        }
        guard let discard = NBDDiscardMode(rawValue: self.discard) else {
            throw ValidationError("invalid discard mode '\(self.discard)' (ignore or unmap)")
        }
        guard let detect = NBDDetectZeroesMode(rawValue: self.detectZeroes) else {
            throw ValidationError("invalid detect-zeroes mode '\(self.detectZeroes)' (off, on or unmap)")
        }
        if detect == .unmap && discard != .unmap {
            throw ValidationError("--detect-zeroes=unmap is only allowed with --discard=unmap")
        }
    }

    /// Sets the cache, discard and zero-detection policies and whether allocation depth is offered.
    func apply(to options: inout NBDServerOptions) {
        options.cache = NBDCacheMode(rawValue: self.cache) ?? .writeback
        options.discard = NBDDiscardMode(rawValue: self.discard) ?? .ignore
        options.detectZeroes = NBDDetectZeroesMode(rawValue: self.detectZeroes) ?? .off
        options.allocationDepth = self.allocationDepth
    }
}
