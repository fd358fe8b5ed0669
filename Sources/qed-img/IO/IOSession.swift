import Dispatch
import QED

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A qemu-io session: the open disk (or none), its options, and the outstanding aio requests.
final class IOSession: @unchecked Sendable {
    // @unchecked: `disk`, `options`, `snapshotOverlay` and `quit` are touched only by the thread
    // running the command loop; the aio workers read `options` (set before they start, changed only
    // by `open` after `close` waited for them) and use `output` (thread-safe) and the disk they were
    // given (a Disk is Sendable).
    let output: IOOutput
    var disk: (any Disk)?
    var options = IOOpenOptions()
    /// The temporary overlay -s writes to, deleted at close.
    var snapshotOverlay: String?
    var quit = false
    /// The aio requests not yet completed.
    let aioGroup = DispatchGroup()

    init(output: IOOutput) { self.output = output }

    /// Runs the `-c` commands, or without any the commands read from stdin after a `qemu-io> `
    /// prompt each; false if one of them failed.
    func loop(commands: [String]) -> Bool {
        var ok = true
        if !commands.isEmpty {
            for command in commands where !quit {
                if !execute(command) { ok = false }
            }
            return ok
        }
        while !quit {
            output.out("qemu-io> ")
            output.flush()
            guard let line = readLine(strippingNewline: true) else { break }
            if !execute(line) { ok = false }
        }
        return ok
    }

    /// Waits for outstanding requests and closes the disk (qemu-io's exit path).
    func finish() {
        closeDisk()
    }

    /// Runs one command line (qemu-io splits it at spaces); false if it failed.
    func execute(_ line: String) -> Bool {
        let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let name = words.first else { return true }
        guard let command = IOCommands.find(name) else {
            output.err("command \"\(name)\" not found\n")
            return false
        }
        if !command.global && !command.noFileOK && disk == nil {
            output.err("no file open, try 'help open'\n")
            return false
        }
        let count = words.count - 1
        if count < command.argMin || (command.argMax >= 0 && count > command.argMax) {
            let expectation: String
            if command.argMax < 0 {
                expectation = "at least \(command.argMin) arguments"
            } else if command.argMin == command.argMax {
                expectation = "\(command.argMin) arguments"
            } else {
                expectation = "between \(command.argMin) and \(command.argMax) arguments"
            }
            output.err("bad argument count \(count) to \(name), expected \(expectation)\n")
            return false
        }
        if command.writes, let disk, disk.isReadOnly {
            output.error("Block node is read-only")
            return false
        }
        return command.run(self, name, Array(words.dropFirst()))
    }

    /// Parses a command's options with getopt; prints glibc's complaint and the usage line on failure.
    func getopt(_ name: String, _ spec: String, _ args: [String]) -> (options: [GetOpt.Option], operands: [String])? {
        switch GetOpt(shortSpec: spec).parse(args) {
        case .success(let parsed): return parsed
        case .failure(let failure):
            output.err("\(name): \(failure.message)\n")
            usage(name)
            return nil
        }
    }

    /// qemu-io's one-line usage of a command (`read [-abCqv] ... -- reads ...`).
    func usage(_ name: String) {
        guard let command = IOCommands.find(name) else { return }
        output.out("\(command.name) \(command.args ?? "(null)") -- \(command.oneline)\n")
    }

    /// Parses a size operand; prints qemu-io's message when it is not one.
    func number(_ text: String) -> UInt64? {
        switch IOFormat.number(text) {
        case .success(let v): return v
        case .failure(let e):
            output.out(e.message)
            return nil
        }
    }

    // MARK: Opening and closing

    /// Opens `file` (or, with --image-opts or `open -o`, what the options name); prints qemu-io's
    /// `can't open` message on failure.
    func open(_ file: String?, _ requested: IOOpenOptions) -> Bool {
        var wanted = requested
        if wanted.imageOpts, let file {
            if let message = wanted.addKeyValues(file) {
                output.error(message)
                return false
            }
        }
        let target: IOOpenTarget
        switch wanted.resolvedTarget(file: wanted.imageOpts ? nil : file) {
        case .success(let t): target = t
        case .failure(.message(let message)):
            output.error("can't open\(file.map { wanted.imageOpts ? "" : " device \($0)" } ?? ""): \(message)")
            return false
        }
        let label = wanted.imageOpts || file == nil ? "" : " device \(target.path)"
        do {
            var openOptions = OpenOptions(readOnly: target.readOnly || wanted.snapshot, forceShare: wanted.forceShare)
            openOptions.ignoreFlushes = wanted.ignoreFlushes
            let base: any Disk
            if let container = target.container {
                // A nested format: the image lives in the guest data of the one at `path`.
                let outer = try DiskOpener.open(path: target.path, format: container, options: openOptions)
                do {
                    base = try DiskOpener.open(file: DiskFile(outer), format: target.format, options: openOptions)
                } catch {
                    try? outer.close()
                    throw error
                }
            } else {
                base = try DiskOpener.open(path: target.path, format: target.format, options: openOptions)
            }
            if wanted.snapshot {
                disk = try IOSnapshot.overlay(on: base, session: self)
            } else {
                disk = base
            }
        } catch {
            output.error("can't open\(label): \(IOErrors.openMessage(error, path: target.path))")
            return false
        }
        options = wanted
        return true
    }

    /// Waits for the aio requests, closes the disk and drops a -s overlay.
    func closeDisk() {
        aioGroup.wait()
        guard let open = disk else { return }
        do {
            try open.close()
        } catch {
            output.error("\(IOErrors.reason(error))")
        }
        disk = nil
        if let overlay = snapshotOverlay {
            unlink(overlay)
            snapshotOverlay = nil
        }
    }
}
