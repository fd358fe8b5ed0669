import Dispatch
import QED

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// read, readv, write, writev, aio_read, aio_write, aio_flush.
extension IOSession {
    /// Offset and length operands (`off len`), with qemu-io's checks; nil after printing why not.
    private func range(_ operands: [String], name: String) -> (offset: UInt64, count: UInt64)? {
        guard operands.count == 2 else {
            usage(name)
            return nil
        }
        guard let offset = number(operands[0]), let count = number(operands[1]) else { return nil }
        return (offset, count)
    }

    /// `off len [len..]`: the offset and the total of the vector's lengths; nil after printing why not.
    private func vector(_ operands: [String], name: String) -> (offset: UInt64, count: UInt64)? {
        guard operands.count >= 2 else {
            usage(name)
            return nil
        }
        guard let offset = number(operands[0]) else { return nil }
        var total: UInt64 = 0
        for text in operands.dropFirst() {
            guard let length = number(text) else { return nil }
            if length > IOFormat.maxRequest {
                output.out("Argument '\(text)' exceeds maximum size \(IOFormat.maxRequest)\n")
                return nil
            }
            if total > IOFormat.maxRequest - length {
                output.out("The total number of bytes exceed the maximum size \(IOFormat.maxRequest)\n")
                return nil
            }
            total += length
        }
        return (offset, total)
    }

    private func readBytes(_ disk: any Disk, offset: UInt64, count: UInt64) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0xab, count: Int(count))
        guard count > 0 else { return buffer }
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= disk.virtualSize else {
            throw QEDError(.outOfRange, "read past the end of the disk", value: offset)
        }
        try buffer.withUnsafeMutableBytes { try disk.read(into: $0, at: offset) }
        return buffer
    }

    private func writeBytes(_ disk: any Disk, _ bytes: [UInt8], offset: UInt64, fua: Bool) throws {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(bytes.count))
        guard !overflow, end <= disk.virtualSize else {
            throw QEDError(.outOfRange, "write past the end of the disk", value: offset)
        }
        if !bytes.isEmpty { try bytes.withUnsafeBytes { try disk.write($0, at: offset) } }
        if fua || options.writethrough { try disk.flush() }
    }

    private func writeZeroes(_ disk: any Disk, offset: UInt64, count: UInt64, unmap: Bool, fua: Bool) throws {
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= disk.virtualSize else {
            throw QEDError(.outOfRange, "write past the end of the disk", value: offset)
        }
        if count > 0 { try disk.writeZeroes(at: offset, length: count, unmap: unmap) }
        if fua || options.writethrough { try disk.flush() }
    }

    /// `read [-bCqv] [-P pattern [-s off] [-l len]] off len`.
    func read(_ name: String, _ args: [String]) -> Bool {
        guard let disk, let parsed = getopt(name, "bCl:pP:qs:v", args) else { return false }
        var vmstate = false
        var parsable = false
        var quiet = false
        var verbose = false
        var pattern: UInt8?
        var patternOffset: UInt64?
        var patternCount: UInt64?
        for option in parsed.options {
            let value = option.value ?? ""
            switch option.name {
            case "b": vmstate = true
            case "C": parsable = true
            case "q": quiet = true
            case "v": verbose = true
            case "l":
                guard let n = number(value) else { return false }
                patternCount = n
            case "s":
                guard let n = number(value) else { return false }
                patternOffset = n
            case "P":
                guard let p = IOFormat.pattern(value) else {
                    output.out("\(value) is not a valid pattern byte\n")
                    return false
                }
                pattern = p
            default: break
            }
        }
        guard parsed.operands.count == 2 else {
            usage(name)
            return false
        }
        guard let offset = number(parsed.operands[0]), let count = number(parsed.operands[1]) else { return false }
        if count > IOFormat.maxRequest {
            output.out("length cannot exceed \(IOFormat.maxRequest), given \(parsed.operands[1])\n")
            return false
        }
        if pattern == nil && (patternCount != nil || patternOffset != nil) {
            usage(name)
            return false
        }
        let checkOffset = patternOffset ?? 0
        let checkCount = patternCount ?? (count >= checkOffset ? count - checkOffset : 0)
        if checkOffset > count || checkCount > count - checkOffset {
            output.out("pattern verification range exceeds end of read data\n")
            return false
        }
        if vmstate {
            if offset % 512 != 0 {
                output.out("\(offset) is not a sector-aligned value for 'offset'\n")
                return false
            }
            if count % 512 != 0 {
                output.out("\(count) is not a sector-aligned value for 'count'\n")
                return false
            }
            output.out("read failed: \(IOFormat.errorText(ENOTSUP))\n")
            return false
        }
        let start = monotonicSeconds()
        let buffer: [UInt8]
        do {
            buffer = try readBytes(disk, offset: offset, count: count)
        } catch {
            output.out("read failed: \(IOErrors.reason(error))\n")
            return false
        }
        let elapsed = monotonicSeconds() - start
        var ok = true
        if let pattern {
            let lo = Int(checkOffset)
            if !IOFormat.matches(buffer, lo..<(lo + Int(checkCount)), pattern: pattern) {
                output.out("Pattern verification failed at offset \(offset + checkOffset), \(checkCount) bytes\n")
                ok = false
            }
        }
        if quiet { return ok }
        var text = verbose ? IOFormat.dump(buffer, offset: offset) : ""
        text += IOFormat.report(
            "read", seconds: elapsed, offset: offset, count: count, total: count, ops: 1, parsable: parsable)
        output.out(text)
        return ok
    }

    /// `readv [-Cqv] [-P pattern] off len [len..]`.
    func readv(_ name: String, _ args: [String]) -> Bool {
        guard let disk, let parsed = getopt(name, "CP:qv", args) else { return false }
        guard let flags = vectorFlags(parsed.options) else { return false }
        guard let (offset, count) = vector(parsed.operands, name: name) else { return false }
        return completeRead(disk, name: "readv", offset: offset, count: count, flags: flags)
    }

    /// The flags readv, aio_read and writev share.
    struct VectorFlags {
        var parsable = false
        var quiet = false
        var verbose = false
        var pattern: UInt8?
        var fua = false
        var zero = false
        var unmap = false
        var invalid = false
    }

    private func vectorFlags(_ options: [GetOpt.Option]) -> VectorFlags? {
        var flags = VectorFlags()
        for option in options {
            switch option.name {
            case "C": flags.parsable = true
            case "q": flags.quiet = true
            case "v": flags.verbose = true
            case "f": flags.fua = true
            case "z": flags.zero = true
            case "u": flags.unmap = true
            case "i": flags.invalid = true
            case "P":
                let value = option.value ?? ""
                guard let p = IOFormat.pattern(value) else {
                    output.out("\(value) is not a valid pattern byte\n")
                    return nil
                }
                flags.pattern = p
            default: break
            }
        }
        return flags
    }

    /// Reads, checks the pattern, reports: readv's and aio_read's common end.
    private func completeRead(_ disk: any Disk, name: String, offset: UInt64, count: UInt64, flags: VectorFlags) -> Bool
    {
        let start = monotonicSeconds()
        let buffer: [UInt8]
        do {
            buffer = try readBytes(disk, offset: offset, count: count)
        } catch {
            output.out("readv failed: \(IOErrors.reason(error))\n")
            return false
        }
        let elapsed = monotonicSeconds() - start
        var ok = true
        var text = ""
        if let pattern = flags.pattern, !IOFormat.matches(buffer, 0..<buffer.count, pattern: pattern) {
            text += "Pattern verification failed at offset \(offset), \(count) bytes\n"
            // qemu-io counts a mismatch as a failure of readv, not of aio_read (already returned).
            ok = name == "aio_read"
        }
        if !flags.quiet {
            if flags.verbose { text += IOFormat.dump(buffer, offset: offset) }
            text += IOFormat.report(
                "read", seconds: elapsed, offset: offset, count: count, total: count, ops: 1,
                parsable: flags.parsable)
        }
        if !text.isEmpty { output.out(text) }
        return ok
    }

    /// `write [-bcCfnquz] [-P pattern | -s source_file] off len`.
    func write(_ name: String, _ args: [String]) -> Bool {
        guard let disk, let parsed = getopt(name, "bcCfnpP:qs:uz", args) else { return false }
        var vmstate = false
        var compressed = false
        var parsable = false
        var fua = false
        var noFallback = false
        var quiet = false
        var unmap = false
        var zero = false
        var pattern: UInt8?
        var source: String?
        for option in parsed.options {
            let value = option.value ?? ""
            switch option.name {
            case "b": vmstate = true
            case "c": compressed = true
            case "C": parsable = true
            case "f": fua = true
            case "n": noFallback = true
            case "q": quiet = true
            case "u": unmap = true
            case "z": zero = true
            case "s": source = value
            case "P":
                guard let p = IOFormat.pattern(value) else {
                    output.out("\(value) is not a valid pattern byte\n")
                    return false
                }
                pattern = p
            default: break
            }
        }
        guard parsed.operands.count == 2 else {
            usage(name)
            return false
        }
        if vmstate && zero {
            output.out("-b and -z cannot be specified at the same time\n")
            return false
        }
        if fua && (vmstate || compressed) {
            output.out("-f and -b or -c cannot be specified at the same time\n")
            return false
        }
        if noFallback && !zero {
            output.out("-n requires -z to be specified\n")
            return false
        }
        if unmap && !zero {
            output.out("-u requires -z to be specified\n")
            return false
        }
        if [zero, pattern != nil, source != nil].filter({ $0 }).count > 1 {
            output.out("Only one of -z, -P, and -s can be specified at the same time\n")
            return false
        }
        guard let offset = number(parsed.operands[0]), let count = number(parsed.operands[1]) else { return false }
        if count > IOFormat.maxRequest && !noFallback {
            output.out("length cannot exceed \(IOFormat.maxRequest) without -n, given \(parsed.operands[1])\n")
            return false
        }
        if vmstate || compressed {
            if offset % 512 != 0 {
                output.out("\(offset) is not a sector-aligned value for 'offset'\n")
                return false
            }
            if count % 512 != 0 {
                output.out("\(count) is not a sector-aligned value for 'count'\n")
                return false
            }
        }
        var bytes: [UInt8] = []
        if !zero {
            if let source {
                guard let content = fileContent(source, count: count) else { return false }
                bytes = content
            } else {
                bytes = [UInt8](repeating: pattern ?? 0xcd, count: Int(count))
            }
        }
        let start = monotonicSeconds()
        do {
            if vmstate || compressed {
                throw QEDError(.unsupported, "not supported by the format")
            } else if zero {
                try writeZeroes(disk, offset: offset, count: count, unmap: unmap, fua: fua)
            } else {
                try writeBytes(disk, bytes, offset: offset, fua: fua)
            }
        } catch {
            output.out("write failed: \(IOErrors.reason(error))\n")
            return false
        }
        if !quiet {
            output.out(
                IOFormat.report(
                    "wrote", seconds: monotonicSeconds() - start, offset: offset, count: count, total: count,
                    ops: 1, parsable: parsable))
        }
        return true
    }

    /// `write -s FILE`: the file's bytes repeated to `count` bytes; nil after printing why not.
    private func fileContent(_ path: String, count: UInt64) -> [UInt8]? {
        guard let file = fopen(path, "r") else {
            output.err("\(path): \(IOFormat.errorText(errno))\n")
            return nil
        }
        defer { fclose(file) }
        var bytes = [UInt8](repeating: 0, count: Int(count))
        let got = bytes.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        if ferror(file) != 0 {
            output.err("\(path): \(IOFormat.errorText(errno))\n")
            return nil
        }
        if got == 0 && count > 0 {
            output.err("\(path): file is empty\n")
            return nil
        }
        var i = got
        while i < bytes.count {
            bytes[i] = bytes[i % got]
            i += 1
        }
        return bytes
    }

    /// `writev [-Cfq] [-P pattern] off len [len..]`.
    func writev(_ name: String, _ args: [String]) -> Bool {
        guard let disk, let parsed = getopt(name, "CfqP:", args) else { return false }
        guard let flags = vectorFlags(parsed.options) else { return false }
        guard let (offset, count) = vector(parsed.operands, name: name) else { return false }
        return completeWrite(disk, failure: "writev", offset: offset, count: count, flags: flags)
    }

    private func completeWrite(
        _ disk: any Disk, failure: String, offset: UInt64, count: UInt64, flags: VectorFlags
    )
        -> Bool
    {
        let start = monotonicSeconds()
        do {
            if flags.zero {
                try writeZeroes(disk, offset: offset, count: count, unmap: flags.unmap, fua: flags.fua)
            } else {
                let bytes = [UInt8](repeating: flags.pattern ?? 0xcd, count: Int(count))
                try writeBytes(disk, bytes, offset: offset, fua: flags.fua)
            }
        } catch {
            output.out("\(failure) failed: \(IOErrors.reason(error))\n")
            return false
        }
        if !flags.quiet {
            output.out(
                IOFormat.report(
                    "wrote", seconds: monotonicSeconds() - start, offset: offset, count: count, total: count,
                    ops: 1, parsable: flags.parsable))
        }
        return true
    }

    /// `aio_read [-Ciqv] [-P pattern] off len [len..]`: runs on a worker thread, reports when done.
    func aioRead(_ name: String, _ args: [String]) -> Bool {
        guard let disk, let parsed = getopt(name, "CP:iqv", args) else { return false }
        guard let flags = vectorFlags(parsed.options) else { return false }
        if flags.invalid {
            output.out("injecting invalid read request\n")
            return true
        }
        guard let (offset, count) = vector(parsed.operands, name: name) else { return false }
        aioGroup.enter()
        DispatchQueue.global().async { [self] in
            // As in qemu-io, the outcome is printed but does not change the exit status.
            _ = completeRead(disk, name: "aio_read", offset: offset, count: count, flags: flags)
            aioGroup.leave()
        }
        return true
    }

    /// `aio_write [-Cfiquz] [-P pattern] off len [len..]`.
    func aioWrite(_ name: String, _ args: [String]) -> Bool {
        guard let disk, let parsed = getopt(name, "CfiqP:uz", args) else { return false }
        guard let flags = vectorFlags(parsed.options) else { return false }
        if flags.invalid {
            output.out("injecting invalid write request\n")
            return true
        }
        guard parsed.operands.count >= 2 else {
            usage(name)
            return false
        }
        if flags.zero && parsed.operands.count > 2 {
            output.out("-z supports only a single length parameter\n")
            return false
        }
        if flags.unmap && !flags.zero {
            output.out("-u requires -z to be specified\n")
            return false
        }
        if flags.zero && flags.pattern != nil {
            output.out("-z and -P cannot be specified at the same time\n")
            return false
        }
        guard let (offset, count) = vector(parsed.operands, name: name) else { return false }
        aioGroup.enter()
        DispatchQueue.global().async { [self] in
            _ = completeWrite(disk, failure: "aio_write", offset: offset, count: count, flags: flags)
            aioGroup.leave()
        }
        return true
    }

    /// `aio_flush`: waits for the outstanding requests, then flushes.
    func aioFlush() -> Bool {
        aioGroup.wait()
        guard let disk else { return true }
        do { try disk.flush() } catch { return false }
        return true
    }
}
