import Foundation

/// A `qemu-io` that keeps an image open (read-write unless `extra` says otherwise, e.g. `-r`) until
/// ``stop()``: it reads commands from a pipe the holder keeps open.
///
/// Ready once qemu-io has printed its first `qemu-io> ` prompt, which it does only after the open —
/// locks taken *and* checked — has completed. Waiting for that needs nothing but the child's own
/// output. Two other signals race: probing the image with another tool (`qemu-img info` takes a
/// shared lock that, held at the moment qemu-io checks its own, makes qemu-io fail), and seeing
/// its lock bytes in /proc/locks (qemu-io takes the bytes first and checks for conflicts after, so
/// a tool started then can still make it fail).
public final class QEMUIOHolder {
    private let process: SpawnedProcess
    private let input = Pipe()
    private let output = Pipe()
    private let errors = Pipe()
    /// The image as given.
    public let image: String

    /// Why the holder could not start.
    public struct NotReady: Error, CustomStringConvertible {
        public var image: String
        public var reason: String
        public var description: String { "qemu-io did not open \(image): \(reason)" }
    }

    /// The prompt qemu-io prints before it reads each command.
    static let prompt = Array("qemu-io> ".utf8)

    /// Starts `qemu-io EXTRA IMAGE` and waits until it has the image open. `timeout` (seconds) only
    /// bounds a hung child; the wait ends on the prompt, or as soon as qemu-io exits.
    public init(image: String, extra: [String] = [], timeout: Double = 300) throws {
        self.image = image
        process = try SpawnedProcess(
            ChildProcess.systemTool("qemu-io"), extra + [image],
            stdin: input.fileHandleForReading.fileDescriptor,
            stdout: output.fileHandleForWriting.fileDescriptor,
            stderr: errors.fileHandleForWriting.fileDescriptor)
        // The child's ends: closed here, so reading its output sees end of file when it exits.
        try? input.fileHandleForReading.close()
        try? output.fileHandleForWriting.close()
        try? errors.fileHandleForWriting.close()
        if let reason = waitForPrompt(timeout: timeout) {
            stop()
            let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw NotReady(
                image: image, reason: "\(reason) (exit status \(process.status.map(String.init) ?? "none")): \(stderr)")
        }
    }

    /// Reads qemu-io's output until the prompt; nil once seen, else why not.
    private func waitForPrompt(timeout: Double) -> String? {
        let fd = output.fileHandleForReading.fileDescriptor
        let deadline = Date().addingTimeInterval(timeout)
        var seen: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return "no prompt within \(Int(timeout)) s" }
            var request = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&request, 1, Int32(min(left, 1) * 1000))
            if ready < 0 && errno == EINTR { continue }
            guard ready >= 0 else { return "poll failed: \(String(cString: strerror(errno)))" }
            if ready == 0 { continue }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return "it exited before its first prompt" }
            seen += chunk[0..<n]
            if seen.count >= Self.prompt.count,
                (0...(seen.count - Self.prompt.count)).contains(where: {
                    seen[$0..<($0 + Self.prompt.count)].elementsEqual(Self.prompt)
                })
            {
                return nil
            }
        }
    }

    /// Whether qemu-io is still running.
    public var isRunning: Bool { process.isRunning }

    /// Closes qemu-io's input (it quits on end of file) and waits for it to exit; kills it if it
    /// has not exited after `timeout` seconds.
    public func stop(timeout: Double = 60) {
        try? input.fileHandleForWriting.close()
        if process.wait(timeout: timeout) == nil { process.killAndReap() }
    }

    deinit { if process.isRunning { stop() } }
}
