import Foundation
import TestSupport
import Testing

@testable import QED

/// ``DiskOpener``: probing, the driver registry, chain walking through ``Disk/backing`` and layer
/// names, for a qed → qed → raw chain on real files.
@Suite("DiskOpener")
struct DiskOpenerTests {
    @Test("qed -> qed -> raw: probe, chain, layer names, formats and reads through the chain")
    func qedQedRawChain() throws {
        let dir = try TemporaryDirectory()
        let base = dir.file("base.raw"), mid = dir.file("mid.qed"), top = dir.file("top.qed")
        let size: UInt64 = 1 << 20
        try RawImage.create(path: base, size: size / 2)  // shorter than the overlays: zeroes past it
        do {
            let raw = try RawImage(path: base)
            try bytes(0xBA, 4096).withUnsafeBytes { try raw.write($0, at: 0) }
            try raw.close()
        }
        try Image.create(path: mid, options: CreateOptions(size: size, backingFile: "base.raw", backingFormat: .raw))
        try Image.create(path: top, options: CreateOptions(size: size, backingFile: "mid.qed"))
        do {
            let m = try Image.open(path: mid)
            try m.write(bytes(0x4D, 4096), at: 65536)  // a cluster of its own (64 KiB clusters)
            try m.close()
        }
        #expect(try DiskOpener.probe(path: base) == .raw)
        #expect(try DiskOpener.probe(path: mid) == .qed)

        let disk = try DiskOpener.open(path: top, format: nil, options: OpenOptions(readOnly: true))
        defer { try? disk.close() }
        let chain = DiskOpener.chain(of: disk)
        #expect(chain.map(\.format) == [.qed, .qed, .raw])
        #expect(chain.map { DiskOpener.layerName($0) } == [top, mid, base])
        #expect(chain.map(\.isReadOnly) == [true, true, true])
        #expect(chain.map(\.virtualSize) == [size, size, size / 2])
        #expect(chain.last?.backing == nil)

        // Reads fall through the layers; past the raw base's end they read as zeroes.
        #expect(try disk.readBytes(at: 0, count: 4096) == bytes(0xBA, 4096))
        #expect(try disk.readBytes(at: 4096, count: 4096) == bytes(0, 4096))
        #expect(try disk.readBytes(at: 65536, count: 4096) == bytes(0x4D, 4096))
        #expect(try disk.readBytes(at: size - 4096, count: 4096) == bytes(0, 4096))
        // Depths count layers: the base's data is at depth 2, the middle image's at depth 1.
        let extents = try disk.extents(at: 0, length: 2 * 65536)
        let depth = { (offset: UInt64) in extents.first { $0.offset <= offset && offset - $0.offset < $0.length }?.depth
        }
        #expect(depth(0) == 2 && depth(65536) == 1 && depth(65536 + 4096) == 1, "\(extents)")
        #expect(extents.first?.data == true && extents.first?.hostOffset == 0)

        expectQEDError(.invalidArgument) { try DiskOpener.refuseOverwriting(base, sources: [disk]) }
        try DiskOpener.refuseOverwriting(dir.file("elsewhere.qed"), sources: [disk])
    }

    @Test("a format named explicitly is not probed; every format has a driver")
    func explicitFormatAndRegistry() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("looks-like.qed")
        try Image.create(path: path, options: CreateOptions(size: 1 << 20))
        let asRaw = try DiskOpener.open(path: path, format: .raw, options: OpenOptions(readOnly: true))
        defer { try? asRaw.close() }
        #expect(asRaw.format == .raw && asRaw is RawImage)
        #expect(try asRaw.readBytes(at: 0, count: 4) == [0x51, 0x45, 0x44, 0x00])
        for format in [DiskFormat.qed, .raw] {
            #expect(try DiskOpener.driver(for: format).format == format)
        }
    }
}
