import NBD
import NIOCore
import Testing

@Suite("NBDRequestValidator")
struct ValidatorTests {
    static let all: NBDTransmissionFlags = [
        .hasFlags, .sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .sendFastZero, .sendDF, .sendCache,
    ]
    static let size: UInt64 = 1 << 20

    let full = NBDRequestValidator(
        exportSize: size,
        transmissionFlags: all,
        structuredReplies: true,
        hasMetaContexts: true
    )

    private func check(
        _ validator: NBDRequestValidator,
        _ command: NBDCommand,
        flags: NBDCommandFlags = [],
        offset: UInt64 = 0,
        length: UInt32 = 512
    ) -> NBDRequestVerdict {
        validator.validate(
            NBDRequestHeader(command: command, flags: flags, cookie: 1, offset: offset, length: UInt64(length)))
    }

    @Test func ordinaryRequestsAreAccepted() {
        for command in [NBDCommand.read, .write, .trim, .cache, .writeZeroes, .blockStatus] {
            #expect(self.check(self.full, command, offset: Self.size - 512) == .accept, "\(command)")
            #expect(self.check(self.full, command, flags: .fua) == .accept, "FUA on \(command)")
        }
        #expect(self.check(self.full, .flush, length: 0) == .accept)
        #expect(self.check(self.full, .disconnect, length: 0) == .accept)
        #expect(self.check(self.full, .read, length: 0) == .accept, "READ of length 0 is tolerated, like qemu")
        #expect(
            self.check(self.full, .read, offset: 3, length: 1) == .accept,
            "unaligned reads are fine with min block 1"
        )
        #expect(self.check(self.full, .read, length: 32 << 20) == .reject(.invalid), "longer than the export")
    }

    @Test func unknownCommandsAreEINVAL() {
        for raw: UInt16 in [8, 9, 100, .max] {
            #expect(self.check(self.full, NBDCommand(rawValue: raw)) == .reject(.invalid))
        }
    }

    @Test func unknownOrInapplicableFlagsAreEINVAL() {
        #expect(self.check(self.full, .read, flags: NBDCommandFlags(rawValue: 0x40)) == .reject(.invalid))
        #expect(self.check(self.full, .read, flags: .payloadLength) == .reject(.invalid))
        #expect(self.check(self.full, .write, flags: .noHole) == .reject(.invalid))
        #expect(self.check(self.full, .write, flags: .dontFragment) == .reject(.invalid))
        #expect(self.check(self.full, .read, flags: .requestOne) == .reject(.invalid))
        #expect(self.check(self.full, .trim, flags: .fastZero) == .reject(.invalid))
        #expect(self.check(self.full, .read, flags: .dontFragment) == .accept)
        #expect(self.check(self.full, .writeZeroes, flags: [.noHole, .fastZero, .fua]) == .accept)
        #expect(self.check(self.full, .blockStatus, flags: .requestOne) == .accept)
    }

    @Test func unadvertisedFeaturesAreEINVAL() {
        let bare = NBDRequestValidator(
            exportSize: Self.size,
            transmissionFlags: .hasFlags,
            structuredReplies: false,
            hasMetaContexts: false
        )
        #expect(self.check(bare, .read, flags: .fua) == .reject(.invalid))
        #expect(self.check(bare, .read, flags: .dontFragment) == .reject(.invalid))
        #expect(self.check(bare, .flush, length: 0) == .reject(.invalid))
        #expect(self.check(bare, .trim) == .reject(.invalid))
        #expect(self.check(bare, .writeZeroes) == .reject(.invalid))
        #expect(self.check(bare, .blockStatus) == .reject(.invalid))
        #expect(self.check(bare, .cache) == .accept, "CACHE without SEND_CACHE is tolerated when it has no flags")
        #expect(self.check(bare, .read) == .accept && self.check(bare, .write) == .accept)

        var zeroesOnly = self.full
        zeroesOnly.transmissionFlags.remove(.sendFastZero)
        #expect(self.check(zeroesOnly, .writeZeroes, flags: .fastZero) == .reject(.invalid))
        #expect(self.check(zeroesOnly, .writeZeroes) == .accept)
    }

    @Test func blockStatusNeedsStructuredRepliesAndAContext() {
        let noSR = NBDRequestValidator(
            exportSize: Self.size,
            transmissionFlags: Self.all,
            structuredReplies: false,
            hasMetaContexts: true
        )
        let noContext = NBDRequestValidator(
            exportSize: Self.size,
            transmissionFlags: Self.all,
            structuredReplies: true,
            hasMetaContexts: false
        )
        #expect(self.check(noSR, .blockStatus) == .reject(.invalid))
        #expect(self.check(noContext, .blockStatus) == .reject(.invalid))
        #expect(self.check(self.full, .blockStatus, length: 0) == .reject(.invalid))
    }

    @Test func readOnlyExportRefusesChangesWithEPERM() {
        var readOnly = self.full
        readOnly.transmissionFlags.insert(.readOnly)
        #expect(self.check(readOnly, .write) == .reject(.permissionDenied))
        #expect(self.check(readOnly, .trim) == .reject(.permissionDenied))
        #expect(self.check(readOnly, .writeZeroes) == .reject(.permissionDenied))
        #expect(self.check(readOnly, .read) == .accept && self.check(readOnly, .flush, length: 0) == .accept)
    }

    @Test func readOnlyExportWithoutTrimOrZeroStillAnswersEPERM() {
        // What a read-only export advertises (qemu-nbd -r: 0x048f): no SEND_TRIM, no SEND_WRITE_ZEROES.
        let readOnly = NBDRequestValidator(
            exportSize: Self.size,
            transmissionFlags: [.hasFlags, .readOnly, .sendFlush, .sendFUA, .sendDF, .sendCache],
            structuredReplies: true,
            hasMetaContexts: true
        )
        #expect(self.check(readOnly, .trim) == .reject(.permissionDenied))
        #expect(self.check(readOnly, .writeZeroes) == .reject(.permissionDenied))
        #expect(self.check(readOnly, .write, flags: .fua) == .reject(.permissionDenied))
        #expect(self.check(readOnly, .read, flags: .noHole) == .reject(.invalid), "flag checks still come first")
    }

    @Test func pastTheEndIsENOSPCForWritesAndEINVALOtherwise() {
        let offset = Self.size - 511
        #expect(self.check(self.full, .write, offset: offset) == .reject(.noSpace))
        #expect(self.check(self.full, .writeZeroes, offset: offset) == .reject(.noSpace))
        for command in [NBDCommand.read, .trim, .cache, .blockStatus] {
            #expect(self.check(self.full, command, offset: offset) == .reject(.invalid), "\(command)")
        }
        #expect(self.check(self.full, .read, offset: Self.size + 1, length: 0) == .reject(.invalid))
        #expect(self.check(self.full, .read, offset: Self.size, length: 0) == .accept)
    }

    @Test func offsetPlusLengthOverflowDoesNotTrap() {
        let huge = NBDRequestValidator(
            exportSize: .max,
            transmissionFlags: Self.all,
            structuredReplies: true,
            hasMetaContexts: true
        )
        for command in [NBDCommand.read, .write, .trim, .cache, .writeZeroes, .blockStatus] {
            #expect(self.check(huge, command, offset: .max, length: 1) == .reject(.invalid), "\(command)")
            #expect(self.check(huge, command, offset: .max - 100, length: .max) == .reject(.invalid))
            #expect(self.check(self.full, command, offset: .max, length: .max) != .accept)
        }
        #expect(self.check(huge, .read, offset: .max - 512, length: 512) == .accept)
    }

    @Test func oversizedPayloadsAreEINVAL() {
        let big = NBDRequestValidator(
            exportSize: 1 << 40,
            transmissionFlags: Self.all,
            structuredReplies: true,
            hasMetaContexts: true
        )
        let limit = UInt32(32 << 20)
        #expect(self.check(big, .read, length: limit) == .accept)
        #expect(self.check(big, .read, length: limit + 512) == .reject(.invalid))
        #expect(self.check(big, .cache, length: limit + 512) == .reject(.invalid))
        #expect(self.check(big, .write, length: limit + 512) == .reject(.invalid))
        #expect(self.check(big, .trim, length: .max) == .accept, "TRIM has no payload limit")
        #expect(self.check(big, .writeZeroes, length: .max) == .accept)
        let discarded = NBDRequest(
            header: NBDRequestHeader(command: .write, cookie: 1, offset: 0, length: 100),
            payload: .discarded(length: 100)
        )
        #expect(big.validate(discarded) == .reject(.invalid))
    }

    @Test func flushAndDisconnectRanges() {
        #expect(self.check(self.full, .flush, offset: 4096, length: 4096) == .accept, "lenient like qemu by default")
        var strict = self.full
        strict.strictFlush = true
        #expect(self.check(strict, .flush, offset: 4096, length: 0) == .reject(.invalid))
        #expect(self.check(strict, .flush, offset: 0, length: 0) == .accept)
        #expect(self.check(strict, .disconnect, offset: 1, length: 1) == .accept, "DISC is never answered")
    }

    @Test func minimumBlockSizeAlignment() {
        var aligned = self.full
        aligned.minimumBlockSize = 512
        #expect(self.check(aligned, .read, offset: 512, length: 1024) == .accept)
        #expect(self.check(aligned, .read, offset: 3, length: 512) == .reject(.invalid))
        #expect(self.check(aligned, .write, offset: 0, length: 100) == .reject(.invalid))
    }

    @Test func sessionInitializerCopiesNegotiatedState() {
        let export = NBDExport(name: "", size: 4096, flags: [.readOnly, .sendDF])
        let session = NBDSession(export: export, structuredReplies: false, metaContexts: [.baseAllocation])
        let validator = NBDRequestValidator(session: session)
        #expect(validator.exportSize == 4096 && !validator.structuredReplies && validator.hasMetaContexts)
        #expect(validator.transmissionFlags == [.hasFlags, .readOnly], "DF dropped without structured replies")
        #expect(validator.maximumPayloadLength == 32 << 20 && validator.minimumBlockSize == 1)
        #expect(self.check(validator, .read, flags: .dontFragment) == .reject(.invalid))
    }
}
