public import QED

extension QEDError {
    /// qemu-img's form for an image named on the command line that fails to open:
    /// `Could not open 'NAME': why`, with no file prefix (the name is in the message).
    public func couldNotOpen(_ name: String) -> QEDError {
        var wrapped = self
        wrapped.message = "Could not open '\(name)': \(message)"
        wrapped.path = nil
        return wrapped
    }
}

/// Runs `body` (the opening of the image named `name`), rewording its QED errors as qemu-img does.
func opening<T>(_ name: String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as QEDError {
        throw error.couldNotOpen(name)
    }
}
