import Foundation
import QED
import TestSupport
import Testing

/// `Image.create` writes the same bytes as `qemu-img create -f qed`.
@Suite("Interop: create layout")
struct CreateLayoutTests {
    struct Options: Sendable, CustomTestStringConvertible {
        var cs: UInt32, ts: UInt32, size: UInt64
        var backing: String?, format: BackingFormat?
        var testDescription: String {
            "cs=\(cs) ts=\(ts) size=\(size) backing=\(backing ?? "-") \(format?.rawValue ?? "")"
        }
    }

    static let cases: [Options] = [
        Options(cs: 65536, ts: 4, size: 1 << 30),
        Options(cs: 4096, ts: 16, size: 100 << 20),
        Options(cs: 1 << 20, ts: 2, size: 3 << 30),
        Options(cs: 4096, ts: 2, size: 0),
        Options(cs: 65536, ts: 8, size: 1536),  // not a cluster multiple
        Options(cs: 65536, ts: 4, size: 1 << 20, backing: "base.raw", format: .raw),
        Options(cs: 4096, ts: 4, size: 1 << 20, backing: "base.qed", format: .qed),
    ]

    @Test(arguments: cases)
    func sameBytesAsQEMUImgCreate(_ o: Options) throws {
        let dir = try TemporaryDirectory()
        try QEMU.imgOK("create", "-f", "raw", dir.file("base.raw"), "1M")
        try QEMU.imgOK("create", "-f", "qed", dir.file("base.qed"), "1M")
        var args = ["create", "-f", "qed", "-o", "cluster_size=\(o.cs),table_size=\(o.ts)"]
        if let b = o.backing { args += ["-b", b, "-F", o.format?.rawValue ?? "qed"] }
        try QEMU.run("qemu-img", args + [dir.file("qemu.qed"), "\(o.size)"], cwd: dir.path)
        var options = CreateOptions(
            size: o.size, clusterSize: o.cs, tableSize: o.ts, backingFile: o.backing,
            backingFormat: o.format)
        options.allowQEMUIncompatible = false
        try Image.create(path: dir.file("ours.qed"), options: options)
        let theirs = try Files.read(dir.file("qemu.qed"))
        let ours = try Files.read(dir.file("ours.qed"))
        #expect(ours.count == Int(o.cs) * (1 + Int(o.ts)))
        #expect(ours == theirs, "header ours \(Array(ours.prefix(64))) qemu \(Array(theirs.prefix(64)))")
    }

    /// §9.1: QEMU creates table_size 1 images but cannot open them; our create refuses them
    /// unless asked, and we open them either way.
    @Test func tableSizeOne() throws {
        let dir = try TemporaryDirectory()
        let img = dir.file("one.qed")
        try QEMU.imgOK("create", "-f", "qed", "-o", "cluster_size=4096,table_size=1", img, "1M")
        let info = try QEMU.img("info", img)
        #expect(info.status == 1 && info.stderr.contains("QED table offset is invalid"), "\(info)")
        let image = try openImage(img)
        try image.write([1, 2, 3], at: 4095)
        #expect(try image.read(at: 4094, count: 5) == [0, 1, 2, 3, 0])
        try image.close()
        #expect(throws: QEDError.self) {
            try Image.create(
                path: dir.file("ours.qed"), options: CreateOptions(size: 1 << 20, clusterSize: 4096, tableSize: 1))
        }
    }
}
