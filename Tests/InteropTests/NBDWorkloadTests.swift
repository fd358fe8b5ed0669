import Foundation
import QED
import TestSupport
import Testing

/// qed-nbd under real workloads: qemu-io patterns, fio with verification, an ext4 filesystem.
@Suite struct NBDWorkloadTests {
    @Test func qemuIOPatternsZeroesAndDiscardsLandInTheImage() throws {
        let box = try NBDSandbox()
        try box.makeQED("a.qed", size: "16M")
        let server = try box.startServer(["--discard=unmap", "-t"], image: "a.qed")
        let io = try box.must(
            "qemu-io", "-f", "raw",
            "-c", "write -P 0xab 0 1M",  // allocating writes
            "-c", "write -P 0xcd 512k 8k",  // overwrite inside
            "-c", "write -f -P 0x5a 3M 4k",  // FUA
            "-c", "write -z 1M 1M",  // WRITE_ZEROES on unallocated clusters
            "-c", "write -P 0x77 4M 256k",
            "-c", "write -z -u 4M 128k",  // zeroes that may unmap allocated clusters
            "-c", "write -P 0x99 6M 128k",
            "-c", "discard 6M 64k",  // TRIM with --discard=unmap
            "-c", "write -P 0x31 9000 1000",  // unaligned
            "-c", "read -P 0xab 0 9000",
            "-c", "read -P 0x31 9000 1000",
            "-c", "read -P 0xcd 512k 8k",
            "-c", "read -P 0 1M 1M",
            "-c", "read -P 0 4M 128k",
            "-c", "read -P 0x77 4224k 128k",
            "-c", "flush",
            server.uri())
        #expect(!io.stdout.contains("Pattern verification failed"), "\(io)")
        #expect(server.terminate() == 0, "\(server.log)")

        // The image is clean, closed (not dirty) and holds exactly what was written.
        let check = try box.run("qemu-img", "check", box.path("a.qed"))
        #expect(check.status == 0, "\(check)")
        #expect(try nbdImageIsDirty(box.path("a.qed")) == false)
        var expected = [UInt8](repeating: 0, count: 16 << 20)
        func fill(_ offset: Int, _ count: Int, _ value: UInt8) {
            for i in offset..<(offset + count) { expected[i] = value }
        }
        fill(0, 1 << 20, 0xab)
        fill(512 << 10, 8 << 10, 0xcd)
        fill(3 << 20, 4096, 0x5a)
        fill(4 << 20, 256 << 10, 0x77)
        fill(4 << 20, 128 << 10, 0)
        fill(6 << 20, 128 << 10, 0x99)
        fill(6 << 20, 64 << 10, 0)  // a discarded whole cluster reads back as zeroes
        fill(9000, 1000, 0x31)
        let actual = try nbdReadImage(box.path("a.qed"), at: 0, count: 16 << 20)
        if actual != expected {
            let firstDifference = zip(actual, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            Issue.record("image differs from what was written at byte \(firstDifference ?? -1)")
        }
        // The discarded cluster gave its space back (a hole in the image file).
        let map = try box.must("qemu-img", "map", "--output=json", box.path("a.qed")).stdout
        #expect(map.contains("\"start\": 6291456"), "\(map)")
    }

    @Test func readOnlyExportRefusesWrites() throws {
        let box = try NBDSandbox()
        try box.makeQED("a.qed", size: "4M")
        try box.must("qemu-io", "-c", "write -P 0x42 0 64k", box.path("a.qed"))
        let server = try box.startServer(["-r", "-t"], image: "a.qed")
        let write = try box.run("qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", server.uri())
        // qemu-io sees READ_ONLY in the handshake and refuses to open for writing (the server's EPERM on
        // WRITE is exercised by NBDMalformedInputTests).
        #expect(write.status != 0 && write.stderr.contains("Permission denied"), "\(write)")
        let read = try box.run("qemu-io", "-f", "raw", "-r", "-c", "read -P 0x42 0 64k", server.uri())
        #expect(read.status == 0 && !read.stdout.contains("failed"), "\(read)")
        #expect(server.terminate() == 0)
        #expect(try nbdReadImage(box.path("a.qed"), at: 0, count: 4096) == [UInt8](repeating: 0x42, count: 4096))
    }

    @Test func fioRandomWritesVerifyOnTwoConnections() throws {
        let box = try NBDSandbox()
        try box.makeQED("f.qed", size: "64M")
        let server = try box.startServer(["-e", "2", "-t"], image: "f.qed")
        let common = [
            "--ioengine=nbd", "--uri=\(server.uri())", "--bs=4k", "--iodepth=16", "--numjobs=2",
            "--size=16M", "--offset_increment=16M", "--verify=crc32c", "--group_reporting",
        ]
        let write = try box.run(
            "fio", ["--name=w", "--rw=randwrite", "--do_verify=0", "--verify_state_save=0"] + common)
        #expect(write.status == 0 && write.stdout.contains("err= 0"), "\(write)")
        let verify = try box.run(
            "fio", ["--name=w", "--rw=randread", "--verify_only", "--verify_state_load=0"] + common)
        #expect(verify.status == 0 && verify.stdout.contains("err= 0"), "\(verify)")
        #expect(!verify.stderr.contains("verify: bad"), "\(verify)")
        #expect(server.terminate() == 0, "\(server.log)")
        #expect(try box.run("qemu-img", "check", box.path("f.qed")).status == 0)
        // The verify pass did read what the write pass left: the image is no longer empty.
        let map =
            try parseJSON(try box.must("qemu-img", "map", "--output=json", box.path("f.qed")).stdout)
            as? [[String: Any]]
        let dataBytes = (map ?? []).filter { $0["data"] as? Bool == true }.reduce(0) {
            $0 + ($1["length"] as? Int ?? 0)
        }
        #expect(dataBytes >= 16 << 20, "fio wrote \(dataBytes) bytes of data")
    }

    @Test func ext4FilesystemSurvivesARestart() throws {
        let box = try NBDSandbox()
        // A small tree to put on the filesystem.
        let tree = box.path("tree")
        try FileManager.default.createDirectory(atPath: tree + "/sub/deeper", withIntermediateDirectories: true)
        var generator = SystemRandomNumberGenerator()
        for (index, size) in [0, 1, 4095, 4096, 70_000, 1 << 20].enumerated() {
            let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
            try Data(bytes).write(
                to: URL(fileURLWithPath: tree + (index % 2 == 0 ? "/sub" : "/sub/deeper") + "/f\(index)"))
        }
        try "hello\n".write(toFile: tree + "/top.txt", atomically: true, encoding: .utf8)
        try box.makeQED("fs.qed", size: "64M")

        let server = try box.startServer([], image: "fs.qed")
        let mount = box.path("mnt")
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        let fuse = Self.startFuse(box, mount: mount, uri: server.uri())
        if let fuse {
            defer { fuse.unmount() }
            let device = mount + "/nbd"
            try box.must("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, device)
            try box.must("e2fsck", "-fn", device)
        } else {
            // No FUSE here: build the filesystem in a file, write it to the export with nbdcopy, and check
            // it through the export below.
            print("NBDWorkloadTests: FUSE is not usable on this machine; using nbdcopy instead of nbdfuse")
            try box.must("qemu-img", "create", "-q", "-f", "raw", box.path("fs.raw"), "64M")
            try box.must("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, box.path("fs.raw"))
            try box.must("nbdcopy", box.path("fs.raw"), server.uri())
        }
        // Without -t the server leaves once its client is gone, closing the image cleanly.
        if fuse == nil { _ = server.terminate() }
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log)")
        #expect(try box.run("qemu-img", "check", box.path("fs.qed")).status == 0)
        #expect(try nbdImageIsDirty(box.path("fs.qed")) == false)

        // Restart read-only, copy the filesystem out, check it and read the tree back.
        let again = try box.startServer(["-r", "-t"], image: "fs.qed", socket: "t.sock")
        try box.must("nbdcopy", again.uri(), box.path("back.raw"))
        #expect(again.terminate() == 0)
        try box.must("e2fsck", "-fn", box.path("back.raw"))
        try FileManager.default.createDirectory(atPath: box.path("out"), withIntermediateDirectories: true)
        try box.must("debugfs", "-R", "rdump / \(box.path("out"))", box.path("back.raw"))
        let compare = try box.run("diff", "-r", "--exclude=lost+found", tree, box.path("out"))
        #expect(compare.status == 0, "tree differs after the round trip: \(compare)")
    }

    /// Mounts `uri` at `mount` with nbdfuse; nil when FUSE cannot be used here.
    static func startFuse(_ box: NBDSandbox, mount: String, uri: String) -> FuseMount? {
        guard FileManager.default.fileExists(atPath: "/dev/fuse"),
            FileManager.default.isExecutableFile(atPath: "/usr/bin/nbdfuse"),
            FileManager.default.isExecutableFile(atPath: "/usr/bin/fusermount3")
        else { return nil }
        guard let process = try? SpawnedProcess("/usr/bin/nbdfuse", [mount, uri]) else { return nil }
        // Until the device appears or nbdfuse gives up (it exits when FUSE is unusable). Giving up
        // here on a slow start instead would be wrong: nbdfuse may already be the server's client.
        let deadline = Date().addingTimeInterval(300)
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: mount + "/nbd") {
                return FuseMount(process: process, mount: mount)
            }
            if !process.isRunning { return nil }
            usleep(10_000)
        }
        process.killAndReap()
        return nil
    }
}

/// A running nbdfuse.
final class FuseMount {
    let process: SpawnedProcess
    let mount: String

    init(process: SpawnedProcess, mount: String) {
        self.process = process
        self.mount = mount
    }

    /// Unmounts (nbdfuse then exits and disconnects).
    func unmount() {
        _ = try? SpawnedProcess("/usr/bin/fusermount3", ["-u", mount]).wait()
        if process.wait(timeout: 120) == nil { process.killAndReap() }
    }
}
