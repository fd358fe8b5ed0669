import QED
import TestSupport

/// Mutates a QED image the way a hostile or damaged file would differ from a good one: header
/// fields, L1/L2 entries (past EOF, misaligned, into the header or a table, duplicated), backing
/// names, truncation and stray bytes. Every index is bounds-checked here: the mutator itself must
/// not trap whatever the bytes say.
struct ImageMutator {
    /// Names a mutated header may give as its backing file.
    let backingNames: [String]

    /// What was done, for failure messages.
    private(set) var log: [String] = []

    init(backingNames: [String]) { self.backingNames = backingNames }

    /// Applies one to four mutations to `bytes`.
    mutating func mutate(_ bytes: inout [UInt8], _ rng: inout SplitMix64) {
        log = []
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let layout = Layout(bytes)
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<14: headerField(&bytes, layout, &rng)
            case 14..<22: geometry(&bytes, layout, &rng)
            case 22..<30: imageSize(&bytes, layout, &rng)
            case 30..<44: tableEntry(&bytes, layout.l1, "L1", layout, &rng)
            case 44..<64: tableEntry(&bytes, layout.l2, "L2", layout, &rng)
            case 64..<72: duplicate(&bytes, layout, &rng)
            case 72..<80: backingName(&bytes, layout, &rng)
            case 80..<88: resize(&bytes, layout, &rng)
            case 88..<95: strayBytes(&bytes, layout, &rng)
            default: flags(&bytes, &rng)
            }
        }
    }

    // MARK: Mutations

    /// Header fields by offset and width (bytes).
    private static let fields: [(name: String, offset: Int, width: Int)] = [
        ("magic", 0, 4), ("cluster_size", 4, 4), ("table_size", 8, 4), ("header_size", 12, 4),
        ("features", 16, 8), ("compat_features", 24, 8), ("autoclear_features", 32, 8),
        ("l1_table_offset", 40, 8), ("image_size", 48, 8), ("backing_filename_offset", 56, 4),
        ("backing_filename_size", 60, 4),
    ]

    private mutating func headerField(_ bytes: inout [UInt8], _ layout: Layout, _ rng: inout SplitMix64) {
        let field = Self.fields[Int.random(in: 0..<Self.fields.count, using: &rng)]
        let current = Bytes.le(bytes, at: field.offset, width: field.width)
        let top: UInt64 = field.width == 8 ? .max : UInt64(UInt32.max)
        let candidates: [UInt64] = [
            0, 1, 2, top, top - 1, top & ~511, top >> 1, current &+ 1, current &- 1, current << 1, current >> 1,
            current ^ (1 << UInt64.random(in: 0..<UInt64(field.width * 8), using: &rng)),
            UInt64(1) << UInt64.random(in: 0..<UInt64(field.width * 8), using: &rng),
            layout.clusterSize, layout.clusterSize &- 1, layout.fileLength, UInt64.random(in: 0...top, using: &rng),
        ]
        let value = candidates[Int.random(in: 0..<candidates.count, using: &rng)] & top
        Bytes.setLE(&bytes, value, at: field.offset, width: field.width)
        log.append("\(field.name) = \(value)")
    }

    /// Another valid cluster or table size: the same tables read with other index math.
    private mutating func geometry(_ bytes: inout [UInt8], _ layout: Layout, _ rng: inout SplitMix64) {
        if Bool.random(using: &rng) {
            let cs = UInt64(1) << UInt64.random(in: 12...26, using: &rng)
            Bytes.setLE(&bytes, cs, at: 4, width: 4)
            log.append("cluster_size = \(cs)")
        } else {
            let ts = UInt64(1) << UInt64.random(in: 0...4, using: &rng)
            Bytes.setLE(&bytes, ts, at: 8, width: 4)
            log.append("table_size = \(ts)")
        }
    }

    /// Sizes at the edges: the geometry's maximum and just past it, the engine's limit, 2^64 − 512.
    private mutating func imageSize(_ bytes: inout [UInt8], _ layout: Layout, _ rng: inout SplitMix64) {
        let g = Geometry(clusterSize: UInt32(layout.clusterSize), tableSize: UInt32(layout.tableSize))
        let current = Bytes.le(bytes, at: 48, width: 8)
        let candidates: [UInt64] = [
            g.maxImageSize, g.maxImageSize &+ 512, Geometry.maxAddressableSize, Geometry.maxAddressableSize + 512,
            UInt64.max - 511, 1 << 63, 0, 512, current &+ layout.clusterSize, current &- 512, current &* 2,
            (current / 3) & ~511, current | 1,
        ]
        let value = candidates[Int.random(in: 0..<candidates.count, using: &rng)]
        Bytes.setLE(&bytes, value, at: 48, width: 8)
        log.append("image_size = \(value)")
    }

    /// Values an L1 or L2 entry should never hold, and some it may.
    private func hostileEntry(_ layout: Layout, _ bytes: [UInt8], current: UInt64, _ rng: inout SplitMix64) -> UInt64 {
        let cs = layout.clusterSize
        let eofCluster = layout.fileLength / cs * cs
        let candidates: [UInt64] = [
            eofCluster, eofCluster &+ cs, eofCluster &- cs, layout.fileLength &+ (1 << 30), 1 << 40,  // past / at EOF
            current &+ 512, current &+ 8, current | 1, current &+ cs / 2,  // misaligned
            0, 4096, cs, layout.headerBytes &- cs,  // header
            layout.l1Offset, layout.l1Offset &+ cs,  // the L1 table
            layout.l2Offsets.randomElement(using: &rng) ?? layout.l1Offset,  // an L2 table
            layout.randomDataOffset(bytes, &rng) ?? cs,  // some data
            1, 0, UInt64.max, UInt64.max & ~(cs &- 1), UInt64.random(in: 0...UInt64.max, using: &rng),
            UInt64.random(in: 0...max(1, eofCluster), using: &rng) & ~(cs &- 1),
        ]
        return candidates[Int.random(in: 0..<candidates.count, using: &rng)]
    }

    private mutating func tableEntry(
        _ bytes: inout [UInt8], _ tables: [Layout.Slots], _ what: String, _ layout: Layout,
        _ rng: inout SplitMix64
    ) {
        guard let slot = layout.randomSlot(tables, bytes, &rng, preferUsed: Int.random(in: 0..<4, using: &rng) != 0)
        else { return strayBytes(&bytes, layout, &rng) }
        let value = hostileEntry(layout, bytes, current: Bytes.le(bytes, at: slot, width: 8), &rng)
        Bytes.setLE(&bytes, value, at: slot, width: 8)
        log.append("\(what) entry at byte \(slot) = \(value)")
    }

    /// Copies one entry onto another: two tables or clusters referenced twice.
    private mutating func duplicate(_ bytes: inout [UInt8], _ layout: Layout, _ rng: inout SplitMix64) {
        let pools = [layout.l1, layout.l2]
        guard let from = layout.randomSlot(pools[Int.random(in: 0..<2, using: &rng)], bytes, &rng, preferUsed: true),
            let to = layout.randomSlot(pools[Int.random(in: 0..<2, using: &rng)], bytes, &rng, preferUsed: false)
        else { return strayBytes(&bytes, layout, &rng) }
        let value = Bytes.le(bytes, at: from, width: 8)
        Bytes.setLE(&bytes, value, at: to, width: 8)
        log.append("entry at byte \(to) = entry at byte \(from) (\(value))")
    }

    /// A backing name: another file, a missing one, the image itself, bad lengths and bytes.
    private mutating func backingName(_ bytes: inout [UInt8], _ layout: Layout, _ rng: inout SplitMix64) {
        guard bytes.count >= 64 else { return }
        var features = Bytes.le(bytes, at: 16, width: 8) | FeatureFlags.backingFile.rawValue
        if Int.random(in: 0..<3, using: &rng) == 0 { features ^= FeatureFlags.backingFormatNoProbe.rawValue }
        Bytes.setLE(&bytes, features, at: 16, width: 8)
        var name = Array(backingNames[Int.random(in: 0..<backingNames.count, using: &rng)].utf8)
        switch Int.random(in: 0..<6, using: &rng) {
        case 0 where !name.isEmpty:
            name[Int.random(in: 0..<name.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
        case 1: name += [0xff, 0xfe]  // not UTF-8
        case 2: name.insert(0, at: Int.random(in: 0...name.count, using: &rng))
        default: break
        }
        var offset: UInt64 = 64
        var size = UInt64(name.count)
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: size = [0, 4095, 4096, UInt64(UInt32.max), size + 1][Int.random(in: 0..<5, using: &rng)]
        case 1:
            offset =
                [0, 63, layout.headerBytes &- 8, layout.headerBytes, UInt64(UInt32.max)][
                    Int.random(in: 0..<5, using: &rng)]
        default: break
        }
        Bytes.write(&bytes, name, at: 64, limit: Int(min(layout.headerBytes, 1 << 20)))
        Bytes.setLE(&bytes, offset & 0xffff_ffff, at: 56, width: 4)
        Bytes.setLE(&bytes, size & 0xffff_ffff, at: 60, width: 4)
        log.append(
            "backing name \(String(decoding: name, as: UTF8.self).debugDescription) offset \(offset) size \(size) features \(features)"
        )
    }

    /// Truncates (inside the header, L1, an L2 table or the data) or extends by a partial cluster.
    private mutating func resize(_ bytes: inout [UInt8], _ layout: Layout, _ rng: inout SplitMix64) {
        let cs = Int(layout.clusterSize)
        var length: Int
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: length = Int.random(in: 0...min(bytes.count, 200), using: &rng)
        case 1: length = bytes.count - cs
        case 2: length = bytes.count - Int.random(in: 1...max(1, min(bytes.count, cs)), using: &rng)
        case 3: length = bytes.count + Int.random(in: 1..<cs, using: &rng)
        case 4: length = (layout.l2Offsets.randomElement(using: &rng).map { Int(clamping: $0) } ?? cs) + 8
        default: length = Int.random(in: 0...bytes.count, using: &rng)
        }
        length = max(0, min(length, bytes.count + 2 * cs))
        if length < bytes.count {
            bytes.removeSubrange(length...)
        } else {
            bytes += [UInt8](repeating: 0, count: length - bytes.count)
        }
        log.append("file length = \(length)")
    }

    /// A few random bytes, mostly in the header cluster and the tables.
    private mutating func strayBytes(_ bytes: inout [UInt8], _ layout: Layout, _ rng: inout SplitMix64) {
        guard !bytes.isEmpty else { return }
        for _ in 0..<Int.random(in: 1...8, using: &rng) {
            let hot = layout.randomSlot(layout.l1 + layout.l2, bytes, &rng, preferUsed: false)
            let at: Int =
                if let hot, Bool.random(using: &rng) {
                    hot + Int.random(in: 0..<8, using: &rng)
                } else if Bool.random(using: &rng) { Int.random(in: 0..<min(bytes.count, 128), using: &rng) } else {
                    Int.random(in: 0..<bytes.count, using: &rng)
                }
            guard at < bytes.count else { continue }
            bytes[at] = UInt8.random(in: 0...255, using: &rng)
            log.append("byte \(at) = \(bytes[at])")
        }
    }

    /// NEED_CHECK, NO_PROBE or an unknown bit.
    private mutating func flags(_ bytes: inout [UInt8], _ rng: inout SplitMix64) {
        guard bytes.count >= 24 else { return }
        let bit = [
            FeatureFlags.needCheck.rawValue, FeatureFlags.needCheck.rawValue,
            FeatureFlags.backingFormatNoProbe.rawValue,
            FeatureFlags.backingFile.rawValue, 0x08,
        ][Int.random(in: 0..<5, using: &rng)]
        let features = Bytes.le(bytes, at: 16, width: 8) ^ bit
        Bytes.setLE(&bytes, features, at: 16, width: 8)
        log.append("features = \(features)")
    }
}

/// Where the header says things are, read leniently (any value is possible after a mutation):
/// the L1 table and up to 4 L2 tables, as ranges of entry slots (byte offsets of entries inside
/// the file, at most 1024 per table). Entries are sampled, never all read, so building and using
/// one stays cheap in debug builds.
struct Layout {
    /// `count` consecutive 8-byte entries from byte `start`.
    struct Slots {
        var start: Int
        var count: Int
        func slot(_ i: Int) -> Int { start + 8 * i }
    }

    var clusterSize: UInt64 = 4096
    var tableSize: UInt64 = 4
    var headerBytes: UInt64 = 4096
    var l1Offset: UInt64 = 4096
    var fileLength: UInt64
    var l1: [Slots] = []
    var l2: [Slots] = []
    var l2Offsets: [UInt64] = []

    init(_ bytes: [UInt8]) {
        fileLength = UInt64(bytes.count)
        guard bytes.count >= 64 else { return }
        let cs = Bytes.le(bytes, at: 4, width: 4)
        if Geometry.isValidClusterSize(cs) { clusterSize = cs }
        let ts = Bytes.le(bytes, at: 8, width: 4)
        if Geometry.isValidTableSize(ts) { tableSize = ts }
        let hs = Bytes.le(bytes, at: 12, width: 4)
        headerBytes = (1...16).contains(hs) ? hs * clusterSize : clusterSize
        l1Offset = Bytes.le(bytes, at: 40, width: 8)
        let entries = Int(tableSize * clusterSize / 8)
        guard let table = Self.slots(at: l1Offset, entries: entries, in: bytes) else { return }
        l1 = [table]
        for i in 0..<min(table.count, 64) {
            let offset = Bytes.le(bytes, at: table.slot(i), width: 8)
            guard offset != 0, l2Offsets.count < 4, !l2Offsets.contains(offset),
                let slots = Self.slots(at: offset, entries: entries, in: bytes)
            else { continue }
            l2Offsets.append(offset)
            l2.append(slots)
        }
    }

    /// A random slot of `tables`; with `preferUsed`, one holding a non-zero entry when a few
    /// samples find one.
    func randomSlot(_ tables: [Slots], _ bytes: [UInt8], _ rng: inout SplitMix64, preferUsed: Bool) -> Int? {
        guard !tables.isEmpty else { return nil }
        func any(_ rng: inout SplitMix64) -> Int? {
            let table = tables[Int.random(in: 0..<tables.count, using: &rng)]
            return table.count > 0 ? table.slot(Int.random(in: 0..<table.count, using: &rng)) : nil
        }
        if preferUsed {
            for _ in 0..<32 {
                if let slot = any(&rng), Bytes.le(bytes, at: slot, width: 8) != 0 { return slot }
            }
        }
        return any(&rng)
    }

    /// The offset of some data cluster (a sampled L2 entry inside the file), if one is found.
    func randomDataOffset(_ bytes: [UInt8], _ rng: inout SplitMix64) -> UInt64? {
        for _ in 0..<16 {
            guard let slot = randomSlot(l2, bytes, &rng, preferUsed: true) else { return nil }
            let value = Bytes.le(bytes, at: slot, width: 8)
            if value > 1 && value < fileLength { return value }
        }
        return nil
    }

    /// The entries of a table at `offset` that lie inside `bytes` (at most 1024).
    private static func slots(at offset: UInt64, entries: Int, in bytes: [UInt8]) -> Slots? {
        guard offset < UInt64(bytes.count) else { return nil }
        let count = min(entries, 1024, (bytes.count - Int(offset)) / 8)
        return count > 0 ? Slots(start: Int(offset), count: count) : nil
    }
}

/// Little-endian fields in byte arrays, bounds-checked (absent bytes read as zero, writes past
/// the end are dropped).
enum Bytes {
    static func le(_ bytes: [UInt8], at offset: Int, width: Int) -> UInt64 {
        if offset >= 0 && offset <= bytes.count - width && (width == 8 || width == 4) {
            return bytes.withUnsafeBytes { raw in
                let p = raw.baseAddress!.advanced(by: offset)
                return width == 8
                    ? UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
                    : UInt64(UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)))
            }
        }
        var value: UInt64 = 0
        for i in 0..<width where offset + i < bytes.count && offset + i >= 0 {
            value |= UInt64(bytes[offset + i]) << (8 * UInt64(i))
        }
        return value
    }

    static func le(_ bytes: [UInt8], at offset: UInt64, width: Int) -> UInt64 {
        guard offset < UInt64(bytes.count) else { return 0 }
        return le(bytes, at: Int(offset), width: width)
    }

    static func setLE(_ bytes: inout [UInt8], _ value: UInt64, at offset: Int, width: Int) {
        for i in 0..<width where offset + i < bytes.count {
            bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))
        }
    }

    /// Writes `run` at `offset`, but not past `limit` or the end of `bytes`.
    static func write(_ bytes: inout [UInt8], _ run: [UInt8], at offset: Int, limit: Int) {
        for (i, b) in run.enumerated() where offset + i < min(bytes.count, limit) { bytes[offset + i] = b }
    }
}
