#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// What the CLI took from Foundation, without Foundation: loading Foundation and ICU was most of
// qed-img's start-up (see docs/performance.md), and a `convert` or `bench` is one process. qed-img
// must not import Foundation: its release build links the runtime statically without
// CoreFoundation (the link fails), and `scripts/test` refuses such an import.

/// `String(format:)` for the printf formats qemu-img prints: C's `vsnprintf` (so the output is
/// C's, byte for byte). Takes C arguments only (no `%@`).
func cFormat(_ format: String, _ arguments: any CVarArg...) -> String {
    var size = 128
    while true {
        var buffer = [CChar](repeating: 0, count: size)
        let n = Int(withVaList(arguments) { vsnprintf(&buffer, size, format, $0) })
        if n < 0 { return "" }
        if n < size {
            return buffer.withUnsafeBufferPointer { p in
                String(decoding: UnsafeRawBufferPointer(start: p.baseAddress, count: n), as: UTF8.self)
            }
        }
        size = n + 1
    }
}

/// Writes all of `text` to descriptor `fd` (unbuffered, like `FileHandle.write`).
func writeAll(_ fd: Int32, _ text: String) {
    var text = text
    text.withUTF8 { bytes in
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            let n = write(fd, base + done, bytes.count - done)
            if n > 0 { done += n } else if n < 0 && errno == EINTR { continue } else { return }
        }
    }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Ends the process with `status` (C's `exit`; inside a command type `exit` means ArgumentParser's).
func terminate(_ status: Int32) -> Never { exit(status) }
