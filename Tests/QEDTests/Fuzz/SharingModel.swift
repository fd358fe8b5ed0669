import QED

/// Which clusters of an image are referenced more than once, worked out from the raw bytes
/// independently of the checker: the L1 table, every L2 table with a valid offset, every valid
/// data entry of those tables. Validity follows the format rules (aligned, past the header area,
/// inside the file); invalid entries are what repair clears.
///
/// - `shared`: some cluster is referenced twice. Repair cannot fix that (QEMU cannot either), so
///   the check after repair still reports corruptions.
/// - `metadataShared`: a table cluster is referenced twice (by another table, or by a data
///   entry). Then table and data views alias: writing one rewrites the other, so neither guest
///   content nor written data is expected to survive repair or a later write.
struct SharingModel {
    private(set) var shared = false
    private(set) var metadataShared = false

    /// Analyses `bytes` with the geometry and header an open image validated.
    init(bytes: [UInt8], header: Header, geometry g: Geometry) {
        let cs = g.clusterSize
        let fileSize = UInt64(bytes.count) / cs * cs
        let entries = Int(g.entriesPerTable)
        var tables: Set<UInt64> = []
        var data: Set<UInt64> = []

        func isTable(_ offset: UInt64) -> Bool {
            let (end, overflow) = offset.addingReportingOverflow(g.tableSize * cs)
            return offset % cs == 0 && offset >= g.headerBytes && !overflow && end <= fileSize
        }
        func isCluster(_ offset: UInt64) -> Bool { offset % cs == 0 && offset >= g.headerBytes && offset < fileSize }
        func referenceTable(at offset: UInt64) {
            for c in (offset / cs)..<(offset / cs + g.tableSize) {
                if !tables.insert(c).inserted || data.contains(c) {
                    shared = true
                    metadataShared = true
                }
            }
        }

        /// The entries of the table at `offset` (zero past the end of the file, as the engine reads).
        func tableEntries(at offset: UInt64) -> [UInt64] {
            var out = [UInt64](repeating: 0, count: entries)
            guard offset < UInt64(bytes.count) else { return out }
            let available = min(entries * 8, bytes.count - Int(offset))
            out.withUnsafeMutableBytes { target in
                bytes.withUnsafeBytes { source in
                    target.baseAddress!.copyMemory(
                        from: source.baseAddress!.advanced(by: Int(offset)), byteCount: available)
                }
            }
            #if _endian(big)
            out = out.map { UInt64(littleEndian: $0) }
            #endif
            return out
        }

        referenceTable(at: header.l1TableOffset)
        var l2Tables: [UInt64] = []
        for offset in tableEntries(at: header.l1TableOffset) where offset != 0 && isTable(offset) {
            referenceTable(at: offset)
            l2Tables.append(offset)
        }
        for table in l2Tables {
            for offset in tableEntries(at: table) where offset > 1 && isCluster(offset) {
                let c = offset / cs
                if tables.contains(c) {
                    metadataShared = true
                    shared = true
                }
                if !data.insert(c).inserted { shared = true }
            }
        }
    }
}
