import ArgumentParser
import QED

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failure reported as `qed-nbd: message` with exit status 1.
struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Reports `error` and exits: ``Failure`` and `QEDError` as `qed-nbd: message` with status 1 (as
/// qemu-nbd does), anything else (usage errors, `--help`, `--version`) as ArgumentParser does.
func exitReporting(_ error: any Error) -> Never {
    switch error {
    case let error as Failure:
        printError("qed-nbd: \(error.description)\n")
        exit(1)
    case let error as QEDError:
        printError("qed-nbd: \(error.description)\n")
        exit(1)
    default:
        QEDNBD.exit(withError: error)
    }
}

/// `strerror(errno)`.
func errnoText() -> String { String(cString: strerror(errno)) }

/// Writes `text` to standard error, unbuffered.
func printError(_ text: String) {
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        offset += n
    }
}
