import TestSupport
import Testing

@testable import QED

/// What the tools ask a ``Disk`` instead of casting to its type — cluster size, dirty mark, backing
/// reference, check — and creating by format through ``DiskOpener``'s registry.
@Suite("Disk facts and creating by format")
struct DiskFactsTests {
    @Test("the registry names its formats, creates each, and refuses names it does not know")
    func registryCreatesEachFormat() throws {
        let dir = try TemporaryDirectory()
        #expect(DiskOpener.formats == [.qed, .addCOW, .raw])
        #expect(DiskOpener.formatNames(conjunction: "and") == "qed, add-cow and raw")
        #expect(DiskOpener.format(named: "raw") == .raw)
        #expect(DiskOpener.format(named: "qcow2") == nil)
        for format in DiskOpener.formats {
            let path = dir.file("new.\(format.rawValue)")
            // 1000 bytes: QED rounds up to whole sectors, raw and add-cow keep the size as given.
            var options = NewDiskOptions(size: 1000, clusterSize: 4096)
            options.imageFile = "data-of-\(format.rawValue).raw"  // add-cow's image file; the others ignore it
            try DiskOpener.create(path: path, format: format, options: options)
            let disk = try DiskOpener.open(path: path, format: nil, options: OpenOptions(readOnly: true))
            defer { try? disk.close() }
            #expect(disk.format == format)
            #expect(disk.virtualSize == (format == .qed ? 1024 : 1000))
            #expect(disk.clusterSize == (format == .raw ? nil : 4096))
            #expect(!disk.isDirty)
            #expect(disk.backingFile == nil)
        }
        expectQEDError(.unsupported) {
            try DiskOpener.create(
                path: dir.file("x.qcow2"), format: DiskFormat(rawValue: "qcow2"),
                options: NewDiskOptions(size: 4096))
        }
        expectQEDError(.invalidArgument) {
            try DiskOpener.create(
                path: dir.file("b.raw"), format: .raw,
                options: NewDiskOptions(size: 4096, backingFile: "base.raw"))
        }
    }

    @Test("a QED overlay reports its backing reference as stored, resolved and recorded")
    func backingReference() throws {
        let dir = try TemporaryDirectory()
        try DiskOpener.create(path: dir.file("base.raw"), format: .raw, options: NewDiskOptions(size: 65536))
        try DiskOpener.create(
            path: dir.file("raw-backed.qed"), format: .qed,
            options: NewDiskOptions(size: 65536, backingFile: "base.raw", backingFormat: .raw))
        try DiskOpener.create(
            path: dir.file("probed.qed"), format: .qed,
            options: NewDiskOptions(size: 65536, backingFile: "raw-backed.qed", backingFormat: .qed))
        var options = OpenOptions(readOnly: true)
        options.openBacking = false
        let rawBacked = try DiskOpener.open(path: dir.file("raw-backed.qed"), format: .qed, options: options)
        defer { try? rawBacked.close() }
        #expect(
            rawBacked.backingFile == BackingFileReference(name: "base.raw", path: dir.file("base.raw"), format: .raw))
        let probed = try DiskOpener.open(path: dir.file("probed.qed"), format: .qed, options: options)
        defer { try? probed.close() }
        #expect(
            probed.backingFile
                == BackingFileReference(
                    name: "raw-backed.qed", path: dir.file("raw-backed.qed"),
                    format: nil))
    }

    @Test("check runs QED's checker through Disk and is unsupported on raw")
    func checkThroughDisk() throws {
        let dir = try TemporaryDirectory()
        for format in DiskOpener.formats {
            var options = NewDiskOptions(size: 1 << 20)
            options.imageFile = "c-data.raw"  // add-cow's image file; the others ignore it
            try DiskOpener.create(path: dir.file("c.\(format.rawValue)"), format: format, options: options)
        }
        let qed = try DiskOpener.open(path: dir.file("c.qed"), format: .qed, options: OpenOptions(readOnly: true))
        defer { try? qed.close() }
        let report = try qed.check(repair: false)
        #expect(report.isClean && report.totalClusters == 16)
        let raw = try DiskOpener.open(path: dir.file("c.raw"), format: .raw, options: OpenOptions(readOnly: true))
        defer { try? raw.close() }
        expectQEDError(.unsupported) { _ = try raw.check(repair: false) }
    }
}
