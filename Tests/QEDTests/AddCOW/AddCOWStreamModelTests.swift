import Foundation
import QED
import Synchronization
import TestSupport
import Testing

/// Streaming beside guest requests: one thread pulls the backing chain into the image file while
/// model workers read, write, zero and flush; every read matches the model, the stream never
/// overwrites a guest write, and once ALL_ALLOCATED is set the raw image file alone is the disk.
/// (No discards: whether one gives a cluster back depends on whether the stream got there first,
/// which the model cannot know; both outcomes are allowed for a discard.)
@Suite("add-cow stream model")
struct AddCOWStreamModelTests {
    static let cases = AddCOWModelCase.all.filter { $0.backing != .none }

    @Test("a stream beside model workers changes no byte the guest sees", arguments: cases)
    func streamBesideWorkers(_ c: AddCOWModelCase) throws {
        let dir = try TemporaryDirectory(prefix: "acow-stream")
        var rng = ModelRNG(seed: 0x57E + c.clusterSize + UInt64(c.backing.rawValue.utf8.count))
        let backing = try makeAddCOWBacking(c.backing, in: dir, size: c.backingSize, rng: &rng)
        let path = dir.file("top.add-cow")
        // An image file full of stale bytes: under clear bits they must never show.
        #expect(
            FileManager.default.createFile(
                atPath: dir.file("top.raw"), contents: Data(repeating: 0xEE, count: Int(c.diskSize))))
        try AddCOWImage.create(
            path: path,
            options: AddCOWCreateOptions(
                imageFile: "top.raw", size: c.diskSize, backingFile: backing?.name, backingFormat: backing?.format,
                clusterSize: c.clusterSize))
        let image = try AddCOWImage.open(path: path)
        #expect(image.allocatedClusters == 0 && image.clustersInBacking > 0)
        let model = SharedModel(
            ReferenceDisk(size: c.diskSize, clusterSize: c.clusterSize, backing: backing?.content ?? []))
        let failures = FailureLog()
        let workers = 3
        let steps = c.modelConfig.steps(300)
        let seed = rng.next()
        let pulled = Mutex<UInt64>(0)
        ModelKit.runThreads(workers + 1) { w in
            guard w == workers else {
                _ = runModelWorker(
                    image: image, model: model, config: c.modelConfig, worker: w, workers: workers, steps: steps,
                    seed: seed &+ UInt64(w), failures: failures, discards: false)
                return
            }
            // The streamer: 192 KiB steps (not cluster-aligned at 64 KiB clusters: widened inside).
            var pos: UInt64 = 0
            let size = image.virtualSize
            while pos < size {
                let n = min(192 << 10, size - pos)
                do {
                    let p = try image.pullFromBacking(at: pos, length: n)
                    pulled.withLock { $0 += p }
                } catch {
                    failures.add("stream at \(pos): \(error)")
                }
                pos += n
            }
        }
        #expect(failures.count == 0, "\(c): \(failures.summary)")
        #expect(pulled.withLock { $0 } > 0)
        #expect(image.clustersInBacking == 0, "\(c): every cluster is in the image file")
        try image.markAllAllocated()
        #expect(image.isAllAllocated)
        let want = model.value.snapshot()
        #expect(try image.readBytes(at: 0, count: Int(c.diskSize)) == want, "\(c): whole disk after the stream")
        try image.close()

        // The raw image file alone is the disk; the backing file is not even opened.
        let raw = try Files.read(dir.file("top.raw"))
        let d = ModelKit.firstDifference(raw, want)
        #expect(d == nil, "\(c): the image file differs from the model at \(d ?? 0)")
        if let name = backing?.name { try FileManager.default.removeItem(atPath: dir.file(name)) }
        let again = try AddCOWImage.open(path: path, options: OpenOptions(readOnly: true))
        defer { try? again.close() }
        #expect(again.isAllAllocated && again.backing == nil)
        #expect(try again.readBytes(at: 0, count: Int(c.diskSize)) == want)
        #expect(try again.check(repair: false).isClean)
    }

    @Test("ALL_ALLOCATED is refused while clusters are still in the backing file")
    func markRefusedWhileIncomplete() throws {
        let dir = try TemporaryDirectory(prefix: "acow-mark")
        var rng = ModelRNG(seed: 0x3A4)
        _ = try ModelKit.makeRawBacking(in: dir.path, size: 1 << 20, rng: &rng)
        try AddCOWImage.create(
            path: dir.file("m.add-cow"),
            options: AddCOWCreateOptions(
                imageFile: "m.raw", backingFile: "base.raw", backingFormat: .raw, clusterSize: 4096))
        let image = try AddCOWImage.open(path: dir.file("m.add-cow"))
        defer { try? image.close() }
        try image.pullFromBacking(at: 0, length: 512 << 10)
        #expect(image.clustersInBacking == 128)
        let error = #expect(throws: QEDError.self) { try image.markAllAllocated() }
        #expect(
            error?.code == .invalidArgument && error?.message.contains("128 clusters") == true,
            "\(String(describing: error))")
        #expect(!image.isAllAllocated)
        #expect(try Files.readU64(dir.file("m.add-cow"), at: 32) == 0, "the header is untouched")
    }
}
