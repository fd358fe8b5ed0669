import Foundation
import TestSupport
import Testing

@testable import QED

/// A failed `fdatasync` (or header write) makes the image *failed*: every later flush and write
/// throws an error naming the first failure until the image is reopened, memory and disk headers
/// never disagree, and a close whose flush fails leaves no timer writing behind it.
@Suite("Sync failure is sticky")
struct SyncFailureTests {
    static let size: UInt64 = 1 << 20

    /// A fresh 1 MiB image (4 KiB clusters, no backing file) on a fault-injecting file, opened with
    /// a NEED_CHECK timer that never fires during the test unless `delay` says otherwise.
    static func makeImage(_ name: String, delay: Double = 3600) throws -> (FaultInjectingFile, Image, OpenOptions) {
        let file = FaultInjectingFile(path: "/sync-failure/\(name).qed")
        try Image.create(on: file, options: CreateOptions(size: size, clusterSize: 4096, tableSize: 2))
        var options = OpenOptions()
        options.needCheckDelay = delay
        return (file, try Image.open(file: file, options: options), options)
    }

    /// The header the file holds now (what a reader of the file sees).
    static func diskHeader(_ file: FaultInjectingFile) throws -> Header {
        try Header(decoding: file.readBytes(count: Header.encodedSize, at: 0))
    }

    /// Expects `body` to throw the "failed earlier" error that quotes `first`.
    static func expectFailedEarlier(
        _ what: String, first: String, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () throws -> Void
    ) {
        guard let error = expectQEDError(.io, what, sourceLocation: sourceLocation, body) else { return }
        #expect(error.code == .io && error.errno == 5, "\(what): \(error)", sourceLocation: sourceLocation)
        #expect(
            error.message.contains("failed earlier") && error.message.contains(first),
            "\(what): \(error.message)", sourceLocation: sourceLocation)
    }

    @Test("consecutive sync failures: every later flush and write throws until reopen", arguments: [1, 16, 17, 100])
    func consecutiveSyncFailures(failures: Int) throws {
        let (file, image, options) = try Self.makeImage("consecutive-\(failures)")
        let flushed = bytes(0xA1, 8192)
        try image.write(flushed, at: 0)
        try image.flush()

        file.failSyncs(failures)
        try image.write(bytes(0xB2, 4096), at: 4096)  // in place, over flushed data
        try image.write(bytes(0xC3, 4096), at: 64 << 10)  // allocating
        let syncsBefore = file.syncCount
        let first = try #require(expectQEDError(.io) { try image.flush() })
        #expect(first.code == .io && first.errno == 5 && first.message.contains("injected write-back failure"))
        // Flushes go on failing however many follow — past 16, and after the file would sync
        // again (the old coordinator reported success on the 17th).
        for i in 2...(failures + 3) {
            Self.expectFailedEarlier("flush \(i)", first: "injected write-back failure") { try image.flush() }
        }
        file.failSyncs(0)
        Self.expectFailedEarlier("flush with a healthy disk", first: "injected write-back failure") {
            try image.flush()
        }
        #expect(file.syncCount == syncsBefore + 1, "no sync is issued once the image failed")

        // Every kind of write is refused; the file sees no mutation.
        let mutations = file.mutationCount
        Self.expectFailedEarlier("in-place write", first: "injected") { try image.write(bytes(1, 512), at: 0) }
        Self.expectFailedEarlier("allocating write", first: "injected") {
            try image.write(bytes(1, 512), at: 512 << 10)
        }
        Self.expectFailedEarlier("zero write", first: "injected") { try image.writeZeroes(at: 0, length: 4096) }
        Self.expectFailedEarlier("discard", first: "injected") { try image.discard(at: 0, length: 8192) }
        Self.expectFailedEarlier("resize", first: "injected") { try image.resize(to: 2 << 20) }
        Self.expectFailedEarlier("backing change", first: "injected") {
            try image.setBacking(name: "base.raw", format: .raw, open: false)
        }
        Self.expectFailedEarlier("repairing check", first: "injected") { _ = try image.check(repair: true) }
        #expect(file.mutationCount == mutations)
        // Reads keep working.
        #expect(try image.read(at: 0, count: 4096) == Array(flushed[0..<4096]))
        Self.expectFailedEarlier("close", first: "injected") { try image.close() }

        // Reopened (the disk syncs again): what was flushed before the failure reads back, what was
        // written after it reads old or new, and the image is consistent.
        let reopened = try Image.open(file: file, options: options)
        #expect(try reopened.read(at: 0, count: 4096) == Array(flushed[0..<4096]))
        let overwritten = try reopened.read(at: 4096, count: 4096)
        #expect(overwritten == Array(flushed[4096...]) || overwritten == bytes(0xB2, 4096))
        let allocated = try reopened.read(at: 64 << 10, count: 4096)
        #expect(allocated == bytes(0, 4096) || allocated == bytes(0xC3, 4096))
        #expect(try reopened.check().corruptions == 0)
        try reopened.write(bytes(0xD4, 4096), at: 128 << 10)
        try reopened.flush()
        try reopened.close()
    }

    @Test("a close whose flush fails throws, and nothing touches the file afterwards")
    func failedCloseStopsTimer() throws {
        // The handler usually runs after close(); if the machine is slow it may run before (and
        // clear the bit), which the assertions below allow — they hold either way.
        let (file, image, _) = try Self.makeImage("close", delay: 0.2)
        try image.write(bytes(0x5A, 4096), at: 0)  // allocating: NEED_CHECK set, timer armed
        file.failSyncs(1_000)
        let error = try #require(expectQEDError(.io) { try image.close() })
        #expect(error.code == .io && error.message.contains("injected write-back failure"))
        #expect(image.needCheck.isStopped, "close() must stop the timer even when its flush fails")
        let mutationsAtClose = file.mutationCount
        // Wait (bounded, on a condition) until every armed timer has run its handler; the image is
        // kept alive so the handlers do run.
        #expect(waitUntil { image.needCheck.pendingHandlers == 0 }, "a timer handler never ran")
        withExtendedLifetime(image) {}
        #expect(file.mutationCount == mutationsAtClose, "the file was touched after close() returned")
        expectQEDError(.closed) { try image.flush() }
    }

    @Test("a failed header write leaves memory equal to disk (resize)")
    func failedResizeHeaderWrite() throws {
        let (file, image, options) = try Self.makeImage("resize")
        let before = image.currentHeader
        file.failMutation(after: 0)  // the header write
        let error = try #require(expectQEDError(.io) { try image.resize(to: 2 << 20) })
        #expect(error.message.contains("injected I/O error"))
        #expect(image.virtualSize == Self.size)
        #expect(image.currentHeader == before)
        #expect(try Self.diskHeader(file) == image.currentHeader)
        // The disk may hold either header after a failed write: the image is failed.
        Self.expectFailedEarlier("resize again", first: "injected I/O error") { try image.resize(to: 2 << 20) }
        #expect(throws: QEDError.self) { try image.close() }
        let reopened = try Image.open(file: file, options: options)
        #expect(reopened.virtualSize == Self.size)
        try reopened.close()
    }

    @Test("a failed sync after a header write leaves memory equal to disk (resize)")
    func failedResizeHeaderSync() throws {
        let (file, image, _) = try Self.makeImage("resize-sync")
        let before = image.currentHeader
        file.failSyncs(1)  // the header write is dropped with the failed sync
        #expect(throws: QEDError.self) { try image.resize(to: 2 << 20) }
        #expect(image.virtualSize == Self.size && image.currentHeader == before)
        #expect(try Self.diskHeader(file) == before)
        #expect(throws: QEDError.self) { try image.close() }
    }

    @Test("a failed NEED_CHECK header write leaves the bit clear in memory and on disk")
    func failedNeedCheckWrite() throws {
        let (file, image, _) = try Self.makeImage("need-check")
        #expect(!image.isDirty)
        file.failMutation(after: 0)  // the header write setting NEED_CHECK, before any allocation
        let error = try #require(expectQEDError(.io) { try image.write(bytes(7, 4096), at: 0) })
        #expect(error.message.contains("injected I/O error"))
        #expect(!image.isDirty)
        #expect(!image.currentHeader.features.contains(.needCheck))
        #expect(try Self.diskHeader(file) == image.currentHeader)
        #expect(try image.read(at: 0, count: 4096) == bytes(0, 4096), "nothing was allocated")
        #expect(throws: QEDError.self) { try image.close() }
    }

    @Test("a failed backing-name header write leaves the backing file unchanged")
    func failedSetBackingWrite() throws {
        let (file, image, _) = try Self.makeImage("backing")
        file.failMutation(after: 0)
        #expect(throws: QEDError.self) { try image.setBacking(name: "base.raw", format: .raw, open: false) }
        #expect(image.backingName == nil)
        #expect(!image.currentHeader.hasBackingFile)
        #expect(try Self.diskHeader(file) == image.currentHeader)
        #expect(throws: QEDError.self) { try image.close() }
    }
}
