import ArgumentParser
import QED
import QEDTools

/// `bench`: qemu-img bench's request pattern and report, for side-by-side comparisons.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a simple read or write benchmark on an image.",
        discussion: """
            Same options and output as qemu-img bench. -d requests are in flight on as many threads.
            """)

    @Option(name: .customShort("c"), help: "Number of requests (default 75000).")
    var count: Int = 75000

    @Option(name: .customShort("d"), help: "Requests in flight (default 64).")
    var depth: Int = 64

    @Option(help: "Flush after every N requests.")
    var flushInterval: Int = 0

    @Flag(help: "Do not wait for requests in flight before a flush.")
    var noDrain = false

    @Option(name: .customShort("i"), help: "AIO mode (accepted for compatibility, ignored).")
    var aio: String?

    @Flag(name: .customShort("n"), help: "Native AIO (accepted for compatibility, ignored).")
    var native = false

    @Option(name: .customShort("o"), help: "Offset of the first request.")
    var offset: String = "0"

    @Option(help: "Byte the write buffer is filled with (default 0).")
    var pattern: Int = 0

    @Flag(name: .customShort("q"), help: "Quiet (qemu-img bench prints its report anyway).")
    var quiet = false

    @Option(name: .customShort("s"), help: "Request size (default 4k).")
    var size: String = "4k"

    @Option(name: .customShort("S"), help: "Step between request offsets (default: the request size).")
    var step: String?

    @OptionGroup var cache: IgnoredCacheOption

    @Flag(name: .customShort("w"), help: "Write instead of read.")
    var write = false

    @OptionGroup var opening: OpeningOptions

    @Argument(help: "The image file.")
    var file: String

    func run() throws {
        guard count > 0 else { throw CLIError("Invalid request count specified") }
        guard depth > 0 else { throw CLIError("Invalid queue depth specified") }
        guard let bufferSize = Sizes.parse(size), bufferSize > 0, bufferSize <= UInt64(Int32.max) else {
            throw CLIError("Invalid buffer size specified")
        }
        guard let start = Sizes.parse(offset) else { throw CLIError("Invalid offset specified") }
        guard (0...255).contains(pattern) else { throw CLIError("Invalid pattern byte specified") }
        if flushInterval > 0 && flushInterval < depth { throw CLIError("Flush interval can't be smaller than depth") }
        if noDrain && flushInterval == 0 { throw CLIError("--no-drain can't be used without --flush-interval") }
        var o = QEDTools.Bench.Options()
        o.count = count
        o.depth = depth
        o.bufferSize = Int(bufferSize)
        if let step {
            guard let s = Sizes.parse(step) else { throw CLIError("Invalid step size specified") }
            o.step = s
        }
        o.offset = start
        o.write = write
        o.pattern = UInt8(pattern)
        o.flushInterval = flushInterval
        o.drainOnFlush = !noDrain
        o.cancellation = Signals.cancellation
        let disk = try opening.open(file, readOnly: !write)
        defer { try? disk.close() }
        Console.out(
            "Sending \(count) \(write ? "write" : "read") requests, \(bufferSize) bytes each, \(depth) in parallel (starting at offset \(start), step size \(o.effectiveStep))\n"
        )
        if flushInterval > 0 { Console.out("Sending flush every \(flushInterval) requests\n") }
        let seconds: Double
        do {
            seconds = try QEDTools.Bench.run(disk: disk, options: o).seconds
        } catch let e as QEDError {
            throw CLIError("Failed request: \(e.message)", path: file)
        }
        Console.out(cFormat("Run completed in %3.3f seconds.\n", seconds))
    }
}
