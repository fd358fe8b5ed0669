/// JSON the way qemu-img prints it: objects are QEMU `QDict`s, whose keys come out in hash-bucket
/// order (bucket = tdb_hash(key) % 512, ascending; within a bucket the later-inserted key first),
/// pretty-printed with 4-space indents; strings escaped like QEMU's `to_json` (non-ASCII as
/// `\uXXXX` with upper-case hex).
indirect enum QemuJSON {
    case int(Int64)
    case uint(UInt64)
    case bool(Bool)
    case string(String)
    /// Keys in QAPI insertion order (struct field order); printed in QDict order.
    case object([(String, QemuJSON)])
    case array([QemuJSON])

    /// QEMU's `tdb_hash(key) % QDICT_BUCKET_MAX`.
    static func bucket(_ key: String) -> Int {
        let bytes = Array(key.utf8)
        var value: UInt32 = 0x238F_13AF &* UInt32(truncatingIfNeeded: bytes.count)
        for (i, c) in bytes.enumerated() {
            value = value &+ (UInt32(c) << UInt32(i * 5 % 24))
        }
        return Int((1_103_515_243 &* value &+ 12345) % 512)
    }

    /// The keys of an object in the order QEMU prints them.
    static func qdictOrder(_ pairs: [(String, QemuJSON)]) -> [(String, QemuJSON)] {
        pairs.enumerated()
            .sorted { a, b in
                let ba = bucket(a.element.0), bb = bucket(b.element.0)
                return ba != bb ? ba < bb : a.offset > b.offset
            }
            .map(\.element)
    }

    /// Pretty-printed text, without a trailing newline.
    func pretty(indent: Int = 0) -> String {
        let pad = String(repeating: " ", count: 4 * (indent + 1))
        let closePad = String(repeating: " ", count: 4 * indent)
        switch self {
        case .int(let v): return String(v)
        case .uint(let v): return String(v)
        case .bool(let v): return v ? "true" : "false"
        case .string(let s): return QemuJSON.quote(s)
        case .object(let pairs):
            if pairs.isEmpty { return "{}" }
            let body = QemuJSON.qdictOrder(pairs)
                .map { "\(pad)\(QemuJSON.quote($0.0)): \($0.1.pretty(indent: indent + 1))" }
                .joined(separator: ",\n")
            return "{\n\(body)\n\(closePad)}"
        case .array(let items):
            if items.isEmpty { return "[]" }
            let body = items.map { pad + $0.pretty(indent: indent + 1) }.joined(separator: ",\n")
            return "[\n\(body)\n\(closePad)]"
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                let v = scalar.value
                if v < 0x20 || v >= 0x7F {
                    if v > 0xFFFF {
                        let u = v - 0x10000
                        out += hex4(0xD800 + (u >> 10)) + hex4(0xDC00 + (u & 0x3FF))
                    } else {
                        out += hex4(v)
                    }
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    private static func hex4(_ v: UInt32) -> String {
        let h = String(v, radix: 16, uppercase: true)
        return "\\u" + String(repeating: "0", count: max(0, 4 - h.count)) + h
    }
}
