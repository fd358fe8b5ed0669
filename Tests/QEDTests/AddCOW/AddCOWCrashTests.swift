import Foundation
import Synchronization
import TestSupport
import Testing

@testable import QED

// Crash tests for add-cow: the metadata file and the image file are two fault-injecting files
// behind one power switch; a random workload runs until the switch trips at a random mutation of
// either file, each file then keeps a random part of what it had not synced, and the image is
// reopened from the survivors. Asserted: every byte no operation touched since the last completed
// flush reads its flushed value (so no cluster has its bit set without its data: such a cluster
// would read stale image-file bytes instead of the backing data), every other byte reads its
// flushed value or one written since, and the bitmap is consistent.

/// Trips once, after a set number of mutations of all the files wired to it.
final class PowerSwitch: Sendable {
    /// Mutations left before the cut, and whether it happened.
    private let state: Mutex<(left: Int, tripped: Bool)>
    init(mutations: Int) { state = Mutex((mutations, false)) }

    /// Counts one mutation; false once the power is out (the mutation must not happen).
    func admit() -> Bool {
        state.withLock { s in
            if s.tripped { return false }
            if s.left == 0 {
                s.tripped = true
                return false
            }
            s.left -= 1
            return true
        }
    }

    var tripped: Bool { state.withLock { $0.tripped } }
}

/// A ``FaultInjectingFile`` whose mutations stop when its ``PowerSwitch`` trips.
final class SwitchedFile: BlockFile {
    let inner: FaultInjectingFile
    let power: PowerSwitch
    var path: String { inner.path }
    var isWritable: Bool { true }

    init(_ inner: FaultInjectingFile, power: PowerSwitch) {
        self.inner = inner
        self.power = power
    }

    private func admit(_ what: String) throws {
        guard power.admit() else { throw QEDError(.io, "\(what): the power went out", path: path, errno: EIO) }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        try inner.read(into: buffer, at: offset)
    }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try admit("write")
        try inner.write(bytes, at: offset)
    }
    func sync() throws {
        try admit("sync")
        try inner.sync()
    }
    func length() throws -> UInt64 { try inner.length() }
    func setLength(_ length: UInt64) throws {
        try admit("setLength")
        try inner.setLength(length)
    }
    func punchHole(at offset: UInt64, length: UInt64) throws {
        try admit("punchHole")
        try inner.punchHole(at: offset, length: length)
    }
}

struct AddCOWCrashCase: Sendable, CustomStringConvertible {
    var clusterSize: UInt64
    var diskSize: UInt64
    var backingSize: Int
    var cuts: Int
    var description: String { "\(clusterSize / 1024)K, \(cuts) cuts" }

    /// Cuts per case (two cases); `QED_CRASH_CUTS` overrides.
    static var cutsPerCase: Int {
        ProcessInfo.processInfo.environment["QED_CRASH_CUTS"].flatMap { Int($0) } ?? 600
    }

    static let all: [AddCOWCrashCase] = [
        AddCOWCrashCase(
            clusterSize: 4096, diskSize: (256 << 10) + 1536, backingSize: (200 << 10) + 100, cuts: cutsPerCase),
        AddCOWCrashCase(
            clusterSize: 65536, diskSize: (1 << 20) + 1536, backingSize: (700 << 10) + 100, cuts: cutsPerCase),
    ]
}

@Suite("add-cow crash")
struct AddCOWCrashTests {
    @Test("power cuts: flushed bytes read back, no bit without its data", arguments: AddCOWCrashCase.all)
    func randomCuts(_ c: AddCOWCrashCase) throws {
        let dir = try TemporaryDirectory(prefix: "acow-crash")
        var rng = ModelRNG(seed: 0xC0A + c.clusterSize)
        let base = try ModelKit.makeRawBacking(in: dir.path, size: c.backingSize, rng: &rng)
        let metaPath = dir.file("c.add-cow")
        try AddCOWImage.create(
            path: metaPath,
            options: AddCOWCreateOptions(
                imageFile: "c.raw", size: c.diskSize, backingFile: "base.raw", backingFormat: .raw,
                clusterSize: c.clusterSize))
        let freshMeta = try Files.read(metaPath)
        let freshImage = [UInt8](repeating: 0, count: Int(c.diskSize))
        var failures: [String] = []
        var tripped = 0
        for cut in 0..<c.cuts where failures.isEmpty {
            let power = PowerSwitch(mutations: Int(rng.next() % 100))
            let meta = FaultInjectingFile(freshMeta, path: metaPath)
            let data = FaultInjectingFile(freshImage, path: dir.file("c.raw"))
            var model = ReferenceDisk(size: c.diskSize, clusterSize: c.clusterSize, backing: base.bytes)
            var flushed = model.snapshot()
            var pending: [PendingChange] = []
            do {
                let image = try AddCOWImage.open(
                    metadata: SwitchedFile(meta, power: power), options: OpenOptions(), seen: [],
                    imageFile: SwitchedFile(data, power: power))
                try runWorkload(image, c, &rng, &model, &flushed, &pending)
            } catch let e as QEDError where e.code == .io && power.tripped {
                // The cut: the operation in flight is in `pending` already.
            }
            if power.tripped { tripped += 1 }
            let metaSurvivor = meta.crash(mode: .random(using: &rng), rng: &rng)
            let dataSurvivor = data.crash(mode: .random(using: &rng), rng: &rng)
            let recovered = try AddCOWImage.open(
                metadata: MemoryFile(metaSurvivor, path: metaPath), options: OpenOptions(), seen: [],
                imageFile: MemoryFile(dataSurvivor, path: dir.file("c.raw")))
            let actual = try recovered.readBytes(at: 0, count: Int(c.diskSize))
            failures += checkCandidates(actual: actual, flushed: flushed, pending: pending).map { "cut \(cut): \($0)" }
            let report = try recovered.check(repair: false)
            if !report.isClean { failures.append("cut \(cut): check \(report)") }
            // The recovered image keeps working: a write and a read back.
            let probe = rng.bytes(700)
            try probe.withUnsafeBytes { try recovered.write($0, at: c.diskSize / 2) }
            if try recovered.readBytes(at: c.diskSize / 2, count: 700) != probe {
                failures.append("cut \(cut): a write after recovery does not read back")
            }
            try recovered.close()
        }
        #expect(failures.isEmpty, "\(c): \(failures.prefix(3))")
        #expect(tripped > c.cuts / 2, "\(c): only \(tripped) of \(c.cuts) runs were cut before their end")
    }

    /// Random writes, zero writes, discards and flushes; each operation is recorded in `pending`
    /// before it runs, and `flushed` moves on after every completed flush.
    private func runWorkload(
        _ image: AddCOWImage, _ c: AddCOWCrashCase, _ rng: inout ModelRNG, _ model: inout ReferenceDisk,
        _ flushed: inout [UInt8], _ pending: inout [PendingChange]
    ) throws {
        let cs = c.clusterSize
        for _ in 0..<40 {
            // Around the backing file's end half of the time.
            let hot = UInt64(c.backingSize) - 2 * cs
            var start = rng.chance(0.5) ? hot + rng.next() % (4 * cs) : rng.next() % (c.diskSize - 1)
            if rng.chance(0.5) { start = start / 512 * 512 }
            let length = min(c.diskSize - start, 1 + rng.next() % (2 * cs))
            switch rng.next() % 10 {
            case 0..<5:
                let bytes = rng.bytes(Int(length))
                pending.append(PendingChange(offset: start, length: Int(length), bytes: bytes))
                try bytes.withUnsafeBytes { try image.write($0, at: start) }
                model.write(bytes, at: start)
            case 5, 6:
                pending.append(PendingChange(offset: start, length: Int(length), bytes: nil))
                try image.writeZeroes(at: start, length: length, unmap: rng.chance(0.5))
                model.writeZeroes(at: start, length: length)
            case 7:
                pending.append(PendingChange(offset: start, length: Int(length), bytes: nil))
                try image.discard(at: start, length: length)
                model.discard(at: start, length: length)
            default:
                try image.flush()
                flushed = model.snapshot()
                pending = []
            }
        }
        try image.close()
        flushed = model.snapshot()
        pending = []
    }
}
