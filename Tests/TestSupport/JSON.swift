import Foundation

/// `text` parsed as a JSON document (fragments allowed), as Foundation values.
public func parseJSON(_ text: String) throws -> Any {
    try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
}
