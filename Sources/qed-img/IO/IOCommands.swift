#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// qemu-io's command table: names, argument counts, usage and help lines.
struct IOCommandInfo: Sendable {
    var name: String
    var altName: String?
    var argMin: Int
    /// -1: no maximum.
    var argMax: Int
    /// The argument synopsis; nil for commands qemu-io lists without one (`flush -- ...`).
    var args: String?
    var oneline: String
    /// Runs without an open file (help, quit).
    var global = false
    /// May run without an open file (open, sleep, ...).
    var noFileOK = false
    /// Needs a writable image (qemu-io asks for the write permission first: "Block node is read-only").
    var writes = false
    /// Extra lines for `help NAME`.
    var help: String = ""
    /// The implementation: (session, the name it was called by, its arguments) → success.
    var run: @Sendable (IOSession, String, [String]) -> Bool
}

enum IOCommands {
    /// Every command, sorted by name as qemu-io lists them.
    static let all: [IOCommandInfo] = [
        IOCommandInfo(
            name: "abort", argMin: 0, argMax: 0, args: nil, oneline: "simulate a program crash using abort(3)",
            noFileOK: true,
            run: { s, _, _ in
                s.output.flush()
                abort()
            }),
        IOCommandInfo(
            name: "aio_flush", argMin: 0, argMax: 0, args: nil, oneline: "completes all outstanding aio requests",
            run: { s, _, _ in s.aioFlush() }),
        IOCommandInfo(
            name: "aio_read", argMin: 2, argMax: -1, args: "[-Ciqv] [-P pattern] off len [len..]",
            oneline: "asynchronously reads a number of bytes", run: { s, n, a in s.aioRead(n, a) }),
        IOCommandInfo(
            name: "aio_write", argMin: 2, argMax: -1, args: "[-Cfiquz] [-P pattern] off len [len..]",
            oneline: "asynchronously writes a number of bytes", writes: true, run: { s, n, a in s.aioWrite(n, a) }),
        IOCommandInfo(
            name: "alloc", altName: "a", argMin: 1, argMax: 2, args: "offset [count]",
            oneline: "checks if offset is allocated in the file", run: { s, _, a in s.alloc(a) }),
        IOCommandInfo(
            name: "break", argMin: 2, argMax: 2, args: "event tag",
            oneline: "sets a breakpoint on event and tags the stopped request as tag (needs QEMU's blkdebug driver)",
            run: { s, _, _ in s.blockLayerOnly("Could not set breakpoint") }),
        IOCommandInfo(
            name: "close", altName: "c", argMin: 0, argMax: 0, args: nil, oneline: "close the current open file",
            run: { s, _, _ in
                s.closeDisk()
                return true
            }),
        IOCommandInfo(
            name: "discard", altName: "d", argMin: 2, argMax: -1, args: "[-Cq] off len",
            oneline: "discards a number of bytes at a specified offset", writes: true,
            run: { s, n, a in s.discard(n, a) }),
        IOCommandInfo(
            name: "flush", altName: "f", argMin: 0, argMax: 0, args: nil,
            oneline: "flush all in-core file state to disk", run: { s, _, _ in s.flush() }),
        IOCommandInfo(
            name: "help", altName: "?", argMin: 0, argMax: 1, args: "[command]",
            oneline: "help for one or all commands", global: true, run: { s, _, a in s.help(a) }),
        IOCommandInfo(
            name: "info", altName: "i", argMin: 0, argMax: 0, args: nil,
            oneline: "prints information about the current file", run: { s, _, _ in s.info() }),
        IOCommandInfo(
            name: "length", altName: "l", argMin: 0, argMax: 0, args: nil,
            oneline: "gets the length of the current file", run: { s, _, _ in s.length() }),
        IOCommandInfo(
            name: "map", argMin: 0, argMax: 0, args: "", oneline: "prints the allocated areas of a file",
            run: { s, _, _ in s.map() }),
        IOCommandInfo(
            name: "open", altName: "o", argMin: 1, argMax: -1,
            args: "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
            oneline: "open the file specified by path", noFileOK: true, run: { s, n, a in s.openCommand(n, a) }),
        IOCommandInfo(
            name: "quit", altName: "q", argMin: 0, argMax: -1, args: nil, oneline: "exit the program", global: true,
            run: { s, _, _ in
                s.quit = true
                return true
            }),
        IOCommandInfo(
            name: "read", altName: "r", argMin: 2, argMax: -1, args: "[-abCqv] [-P pattern [-s off] [-l len]] off len",
            oneline: "reads a number of bytes at a specified offset", run: { s, n, a in s.read(n, a) }),
        IOCommandInfo(
            name: "readv", argMin: 2, argMax: -1, args: "[-Cqv] [-P pattern] off len [len..]",
            oneline: "reads a number of bytes at a specified offset", run: { s, n, a in s.readv(n, a) }),
        IOCommandInfo(
            name: "remove_break", argMin: 1, argMax: 1, args: "tag",
            oneline: "remove a breakpoint by tag (needs QEMU's blkdebug driver)",
            run: { s, _, a in s.blockLayerOnly("Could not remove breakpoint \(a[0])") }),
        IOCommandInfo(
            name: "reopen", argMin: 0, argMax: -1, args: "[(-r|-w)] [-c cache] [-o options]",
            oneline: "reopens an image with new options", run: { s, n, a in s.reopen(n, a) }),
        IOCommandInfo(
            name: "resume", argMin: 1, argMax: 1, args: "tag",
            oneline: "resumes the request tagged as tag (needs QEMU's blkdebug driver)",
            run: { s, _, _ in s.blockLayerOnly("Could not resume request") }),
        IOCommandInfo(
            name: "sigraise", argMin: 1, argMax: 1, args: "signal", oneline: "raises a signal", noFileOK: true,
            run: { s, _, a in s.sigraise(a[0]) }),
        IOCommandInfo(
            name: "sleep", argMin: 1, argMax: 1, args: nil,
            oneline: "waits for the given value in milliseconds", noFileOK: true, run: { s, _, a in s.sleep(a[0]) }),
        IOCommandInfo(
            name: "truncate", altName: "t", argMin: 1, argMax: 3, args: "[-m prealloc_mode] off",
            oneline: "truncates the current file at the given offset", writes: true,
            run: { s, n, a in s.truncate(n, a) }),
        IOCommandInfo(
            name: "wait_break", argMin: 1, argMax: 1, args: "tag",
            oneline: "waits for the suspension of a request (needs QEMU's blkdebug driver)",
            run: { s, _, _ in s.blockLayerOnly(nil) }),
        IOCommandInfo(
            name: "write", altName: "w", argMin: 2, argMax: -1,
            args: "[-bcCfnquz] [-P pattern | -s source_file] off len",
            oneline: "writes a number of bytes at a specified offset", writes: true, run: { s, n, a in s.write(n, a) }),
        IOCommandInfo(
            name: "writev", argMin: 2, argMax: -1, args: "[-Cfq] [-P pattern] off len [len..]",
            oneline: "writes a number of bytes at a specified offset", writes: true, run: { s, n, a in s.writev(n, a) }),
    ]

    /// The command called `name` or by its short name.
    static func find(_ name: String) -> IOCommandInfo? {
        all.first { $0.name == name || $0.altName == name }
    }
}
