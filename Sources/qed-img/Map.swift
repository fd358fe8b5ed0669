import ArgumentParser
import QED
import QEDTools

/// `map`: where each range of the disk comes from (qemu-img's human and JSON forms, plus a picture).
struct Map: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show where the data of an image lives.",
        discussion: """
            human and json are qemu-img's formats (same merging rules and fields). picture draws the \
            disk as a grid, one character per cell: # data in this image, z zero clusters, b data from \
            a backing file, - zeroes a backing file provides, . unallocated (reads zeroes). A cell \
            shows the most significant content it holds, in that order.
            """)

    @OptionGroup var opening: OpeningOptions

    @Option(help: "Output format: human, json or picture.")
    var output: MapOutputFormat = .human

    @Option(help: "First guest byte to map.")
    var startOffset: String?

    @Option(help: "Bytes to map from there.")
    var maxLength: String?

    @Option(help: "Cells per row of the picture.")
    var width: Int = 64

    @Argument(help: "The image file.")
    var file: String

    func run() throws {
        let disk = try opening.open(file)
        defer { try? disk.close() }
        let start =
            try startOffset.map { s -> UInt64 in
                guard let v = Sizes.parse(s) else {
                    throw CLIError("Invalid start offset specified! You may use k, M, G, T, P or E suffixes for")
                }
                return v
            } ?? 0
        let length = try maxLength.map { s -> UInt64 in
            guard let v = Sizes.parse(s) else {
                throw CLIError("Invalid max length specified! You may use k, M, G, T, P or E suffixes for")
            }
            return v
        }
        var options = QEDTools.Map.Options()
        options.start = start
        options.length = length
        let result: QEDTools.Map.Result
        do {
            result = try QEDTools.Map.run(disk: disk, options: options)
        } catch let error as QEDError {
            throw CLIError("Could not read file metadata: \(error.message)", path: file)
        }
        switch output {
        case .json:
            let rows = result.rows.map { row -> String in
                let e = row.extent
                var s =
                    "{ \"start\": \(e.offset), \"length\": \(e.length), \"depth\": \(e.depth), \"present\": \(e.present), \"zero\": \(e.zero), \"data\": \(e.data)"
                if let o = e.hostOffset { s += ", \"offset\": \(o)" }
                return s + "}"
            }
            Console.out("[" + rows.joined(separator: ",\n") + "]\n")
        case .human:
            var out = pad("Offset") + pad("Length") + pad("Mapped to") + "File\n"
            for row in result.humanRows {
                let e = row.extent
                out +=
                    pad(hex(e.offset)) + pad(hex(e.length)) + pad(hex(e.hostOffset ?? 0)) + (row.filename ?? "") + "\n"
            }
            Console.out(out)
        case .picture:
            Console.out(
                MapPicture(extents: result.rows.map(\.extent), disk: disk, start: start, width: max(8, width)).render())
        }
    }

    private func pad(_ s: String) -> String { s.count >= 16 ? s : s + String(repeating: " ", count: 16 - s.count) }
    private func hex(_ v: UInt64) -> String { v == 0 ? "0" : "0x" + String(v, radix: 16) }
}

/// The picture form of `map`: a fixed-width grid of cells, each standing for an equal guest range.
struct MapPicture {
    let extents: [Extent]
    let disk: any Disk
    let start: UInt64
    let width: Int
    static let maxRows = 32

    enum Kind: Int, Comparable {
        case unallocated = 0
        case backingZero, backingData, zero, data
        static func < (a: Kind, b: Kind) -> Bool { a.rawValue < b.rawValue }
        var symbol: Character {
            switch self {
            case .data: "#"
            case .zero: "z"
            case .backingData: "b"
            case .backingZero: "-"
            case .unallocated: "."
            }
        }
        static func of(_ e: Extent) -> Kind {
            if e.depth == 0 && e.present { return e.data ? .data : .zero }
            if !e.present { return .unallocated }
            return e.data ? .backingData : .backingZero
        }
    }

    func render() -> String {
        let total = extents.reduce(0) { $0 + $1.length }
        let granule = disk.clusterSize ?? 4096
        // Cell size: a whole number of clusters, so that at most maxRows rows are drawn.
        let cellsWanted = UInt64(width * MapPicture.maxRows)
        var cell = max(granule, (total + cellsWanted - 1) / max(1, cellsWanted))
        cell = (cell + granule - 1) / granule * granule
        let cells = Int((total + cell - 1) / max(1, cell))
        var kinds = [Kind](repeating: .unallocated, count: cells)
        var bytes = [Kind: UInt64]()
        for e in extents {
            let kind = Kind.of(e)
            bytes[kind, default: 0] += e.length
            guard e.length > 0 else { continue }
            let first = Int((e.offset - start) / cell), last = Int((e.offset - start + e.length - 1) / cell)
            for c in first...min(last, cells - 1) where kinds[c] < kind { kinds[c] = kind }
        }
        let end = start + total
        let labelWidth = max(4, String(end, radix: 16).count)
        var out = "\(disk.path): \(Sizes.human(total)) mapped from offset \(start), \(Sizes.human(cell)) per cell\n"
        var row = 0
        while row * width < cells {
            let label = String(start + UInt64(row * width) * cell, radix: 16)
            out += "0x" + String(repeating: "0", count: max(0, labelWidth - label.count)) + label + "  "
            for col in 0..<width {
                let i = row * width + col
                guard i < cells else { break }
                if col > 0 && col % 16 == 0 { out += " " }
                out.append(kinds[i].symbol)
            }
            out += "\n"
            row += 1
        }
        out += "\nLegend: # data here  z zero clusters  b backing data  - backing zeroes  . unallocated\n"
        func share(_ k: Kind) -> String {
            let b = bytes[k] ?? 0
            return Sizes.human(b) + (total > 0 ? cFormat(" (%.1f%%)", Double(b) * 100 / Double(total)) : "")
        }
        out += "data here \(share(.data)), zero clusters \(share(.zero)), backing data \(share(.backingData)), "
        out += "backing zeroes \(share(.backingZero)), unallocated \(share(.unallocated))\n"
        let chain = DiskOpener.chain(of: disk).compactMap(DiskOpener.layerName)
        if chain.count > 1 { out += "backing chain: " + chain.joined(separator: " -> ") + "\n" }
        return out
    }
}
