import ArgumentParser
import QED
import QEDTools

/// `info`: what qemu-img 7.2 shows about an image (and its backing chain).
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show information about an image.",
        discussion: """
            Same fields, values and layout as qemu-img 7.2: human text, or JSON with QEMU's key order. \
            'cleanly shut down: no' (JSON "dirty-flag": true) reports the NEED_CHECK bit as stored; \
            qemu-img 7.2 always shows false for QED because its read-only open clears the bit in memory.
            """)

    @OptionGroup var opening: OpeningOptions

    @OptionGroup var output: OutputOption

    @Flag(help: "Show every image of the backing chain.")
    var backingChain = false

    @Flag(
        name: .customLong("image-opts"),
        help: "The file argument is an option string: driver=FMT,file.filename=PATH (file.driver=file).")
    var imageOpts = false

    @Argument(help: "The image file.")
    var file: String

    func run() throws {
        var options = QEDTools.Info.Options()
        options.format = try opening.format.value()
        options.forceShare = opening.forceShare
        options.backingChain = backingChain
        var path = hostPath(file)
        if imageOpts {
            var parsed = IOOpenOptions()
            if let message = parsed.addKeyValues(file) { throw CLIError(message) }
            switch parsed.resolvedTarget(file: nil) {
            case .success(let target):
                if let container = target.container {
                    throw CLIError("nested formats (file.driver=\(container.rawValue)) are opened by 'io' only")
                }
                path = target.path
                options.format = target.format
            case .failure(.message(let message)):
                throw CLIError(message)
            }
        }
        let infos: [ImageInfo]
        do {
            infos = try QEDTools.Info.run(path: path, options: options).images
        } catch var error as QEDError where path != file && error.path == nil {
            // The name as given (`file:a.qed`), as qemu-img names it.
            let opened = "Could not open '\(path)': "
            if error.message.hasPrefix(opened) {
                error.message = "Could not open '\(file)': " + error.message.dropFirst(opened.count)
            }
            throw error
        }
        switch output.format {
        case .json:
            let values = infos.map(Info.json)
            let text = backingChain ? QemuJSON.array(values).pretty() : values[0].pretty()
            Console.out(text + "\n")
        case .human:
            Console.out(infos.map(Info.human).joined(separator: "\n"))
        }
    }

    /// QEMU's `ImageInfo` as a QDict, fields in QAPI order.
    static func json(_ info: ImageInfo) -> QemuJSON {
        var pairs: [(String, QemuJSON)] = [
            ("filename", .string(info.filename)),
            ("format", .string(info.format.rawValue)),
            ("dirty-flag", .bool(info.dirty)),
        ]
        if let actual = info.actualSize { pairs.append(("actual-size", .uint(actual))) }
        pairs.append(("virtual-size", .uint(info.virtualSize)))
        if let cs = info.clusterSize { pairs.append(("cluster-size", .uint(cs))) }
        if let b = info.backingFilename { pairs.append(("backing-filename", .string(b))) }
        if let b = info.fullBackingFilename { pairs.append(("full-backing-filename", .string(b))) }
        if let f = info.backingFilenameFormat { pairs.append(("backing-filename-format", .string(f))) }
        if !info.formatSpecific.isEmpty {
            let data: [(String, QemuJSON)] = info.formatSpecific.map { field in
                switch field.value {
                case .string(let s): (field.key, .string(s))
                case .uint(let v): (field.key, .uint(v))
                case .bool(let b): (field.key, .bool(b))
                }
            }
            pairs.append(
                ("format-specific", .object([("type", .string(info.format.rawValue)), ("data", .object(data))])))
        }
        return .object(pairs)
    }

    /// QEMU's `bdrv_image_info_dump`.
    static func human(_ info: ImageInfo) -> String {
        var out = """
            image: \(info.filename)
            file format: \(info.format.rawValue)
            virtual size: \(Sizes.human(info.virtualSize)) (\(info.virtualSize) bytes)
            disk size: \(info.actualSize.map(Sizes.human) ?? "unavailable")

            """
        if let cs = info.clusterSize { out += "cluster_size: \(cs)\n" }
        if info.dirty { out += "cleanly shut down: no\n" }
        if let backing = info.backingFilename {
            out += "backing file: \(backing)"
            if let full = info.fullBackingFilename {
                if full != backing { out += " (actual path: \(full))" }
            } else {
                out += " (cannot determine actual path)"
            }
            out += "\n"
            if let f = info.backingFilenameFormat { out += "backing file format: \(f)\n" }
        }
        if !info.formatSpecific.isEmpty {
            out += "Format specific information:\n"
            for field in info.formatSpecific {
                let value: String
                switch field.value {
                case .string(let s): value = s
                case .uint(let v): value = String(v)
                case .bool(let b): value = b ? "true" : "false"
                }
                out += "    \(field.key): \(value)\n"
            }
        }
        return out
    }
}
