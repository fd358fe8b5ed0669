import ArgumentParser
import NBDServer

/// `--io-threads --loop-threads`: how many threads do image I/O and run the sockets.
struct ThreadOptions: ParsableArguments {
    @Option(name: .customLong("io-threads"), help: "Threads doing image I/O (default: one per CPU core, at least 2).")
    var ioThreads: Int?

    @Option(name: .customLong("loop-threads"), help: .hidden)
    var loopThreads: Int?

    func validate() throws {
        guard (1...1024).contains(self.ioThreads ?? 1), (1...64).contains(self.loopThreads ?? 1) else {
            throw ValidationError("thread counts out of range")
        }
    }

    /// Sets the thread counts given; the server's defaults stand for the others.
    func apply(to options: inout NBDServerOptions) {
        if let ioThreads = self.ioThreads { options.ioThreads = ioThreads }
        if let loopThreads = self.loopThreads { options.eventLoopThreads = loopThreads }
    }
}
