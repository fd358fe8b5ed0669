import Foundation

/// A fresh directory for one test, removed with everything in it when the value is released (or
/// earlier, by ``remove()``).
public final class TemporaryDirectory: Sendable {
    /// Its absolute path.
    public let path: String

    /// Creates `base/prefix-XXXXXX` (mkdtemp). `base` defaults to the system temporary directory;
    /// pass a short one (such as `/tmp`) where paths inside must stay short, as Unix socket paths do.
    public init(prefix: String = "qed-test", in base: String? = nil) throws {
        let template = (base ?? FileManager.default.temporaryDirectory.path) + "/\(prefix)-XXXXXX"
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: template])
        }
        path = String(cString: made)
    }

    /// `path/name`.
    public func file(_ name: String) -> String { path + "/" + name }

    /// Removes the directory now, for tests that want it gone at a fixed point (a `defer`) rather
    /// than whenever the value is released.
    public func remove() { try? FileManager.default.removeItem(atPath: path) }

    deinit { remove() }
}
