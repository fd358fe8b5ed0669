#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// qemu-io's number parsing and report lines.
enum IOFormat {
    /// The largest request qemu-io makes in one go (QEMU's BDRV_REQUEST_MAX_BYTES): 2 GiB less 512.
    static let maxRequest: UInt64 = 0x7fff_fe00

    /// qemu-io's `cvtnum`: a size (`qemu_strtosz`: suffixes k, M, G, T, P, E) up to INT64_MAX bytes,
    /// or the message qemu-io prints for it.
    static func number(_ text: String) -> Result<UInt64, NumberError> {
        // Like strtod under qemu_strtosz, leading white space is skipped.
        let trimmed = String(text.drop(while: { $0 == " " || ("\t"..."\r").contains($0) }))
        guard !trimmed.hasPrefix("-"), let value = Sizes.parse(trimmed) else {
            // A well-formed size too large for 64 bits is qemu's ERANGE, not a parse error.
            let digits = trimmed.prefix(while: { $0.isASCII && ($0.isNumber || $0 == ".") })
            let suffix = trimmed.dropFirst(digits.count)
            if !digits.isEmpty, suffix.count <= 1, suffix.allSatisfy({ "bkmgtpeBKMGTPE".contains($0) }) {
                return .failure(.tooLarge(text))
            }
            return .failure(.invalid(text))
        }
        guard value <= UInt64(Int64.max) else { return .failure(.tooLarge(text)) }
        return .success(value)
    }

    /// Why `number` refused an argument; `message` is qemu-io's line for it.
    enum NumberError: Error {
        case invalid(String)
        case tooLarge(String)

        var message: String {
            switch self {
            case .invalid(let s):
                return "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- \(s)\n"
            case .tooLarge(let s): return "Parsing error: argument too large -- \(s)\n"
            }
        }
    }

    /// qemu-io's `parse_pattern`: a byte in C's notation (decimal, 0x hex, 0 octal), or nil.
    static func pattern(_ text: String) -> UInt8? {
        guard let value = strtolExact(text), value >= 0, value <= 255 else { return nil }
        return UInt8(value)
    }

    /// `strtol(text, &end, 0)` that must consume the whole text (empty text reads as 0, as in C).
    static func strtolExact(_ text: String) -> Int? {
        var end: UnsafeMutablePointer<CChar>?
        return text.withCString { start -> Int? in
            let value = strtol(start, &end, 0)
            guard let end, end.pointee == 0 else { return nil }
            return value
        }
    }

    /// Whether every byte of `bytes[range]` is `pattern` (memcmp against a pattern block: fast
    /// even in debug builds, where the suite's 128 MiB checks would take seconds byte by byte).
    static func matches(_ bytes: [UInt8], _ range: Range<Int>, pattern: UInt8) -> Bool {
        let block = [UInt8](repeating: pattern, count: min(range.count, 1 << 16))
        return bytes.withUnsafeBytes { all in
            block.withUnsafeBytes { want in
                var at = range.lowerBound
                while at < range.upperBound {
                    let n = min(want.count, range.upperBound - at)
                    guard let base = all.baseAddress, let expected = want.baseAddress,
                        memcmp(base + at, expected, n) == 0
                    else { return false }
                    at += n
                }
                return true
            }
        }
    }

    /// `print_report`: the two summary lines, or with -C one comma-separated line.
    static func report(
        _ verb: String, seconds: Double, offset: UInt64, count: UInt64, total: UInt64, ops: Int, parsable: Bool
    ) -> String {
        let t = seconds > 0 ? seconds : 1e-9
        if parsable {
            return "\(total),\(ops),\(time(seconds, verbose: true)),"
                + cFormat("%.3f,%.3f\n", Double(total) / t, Double(ops) / t)
        }
        return "\(verb) \(total)/\(count) bytes at offset \(offset)\n"
            + "\(Sizes.ioString(Double(total))), \(ops) ops; \(time(seconds, verbose: false)) "
            + "(\(Sizes.ioString(Double(total) / t))/sec and \(cFormat("%.4f", Double(ops) / t)) ops/sec)\n"
    }

    /// qemu-io's `timestr`: "SS.ss sec" below a second, else (or verbose) "H:MM:SS.ss".
    static func time(_ seconds: Double, verbose: Bool) -> String {
        let whole = UInt32(min(max(0, seconds.rounded(.down)), Double(UInt32.max)))
        let frac = seconds - Double(whole)
        if !verbose && whole == 0 { return cFormat("%05.2f sec", frac) }
        return cFormat("%u:%02u:%05.2f", whole / 3600, (whole % 3600) / 60, Double(whole % 60) + frac)
    }

    /// qemu-io's `dump_buffer`: 16 bytes a line, hex then the alphanumerics ('.' for the rest).
    static func dump(_ bytes: [UInt8], offset: UInt64) -> String {
        var out = ""
        var i = 0
        while i < bytes.count {
            let line = bytes[i..<min(bytes.count, i + 16)]
            out += cFormat("%08llx:  ", offset + UInt64(i))
            for b in line { out += cFormat("%02x ", b) }
            out += " "
            for b in line {
                let isAlnum = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
                out.append(isAlnum ? Character(Unicode.Scalar(b)) : ".")
            }
            out += "\n"
            i += 16
        }
        return out
    }

    /// `strerror` for an errno value.
    static func errorText(_ code: Int32) -> String { String(cString: strerror(code)) }
}
