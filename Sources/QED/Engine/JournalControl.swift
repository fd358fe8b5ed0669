extension Image {
    /// The journal region the header reserves (clusters 1 ..< header_size), or nil.
    public var journalArea: JournalArea? { JournalArea(header: currentHeader) }

    /// Whether the header marks the journal valid (autoclear bit 0 set, a region reserved, and the
    /// backing file name inside cluster 0). On a read-write open this means the engine records in it.
    public var isJournalValid: Bool { JournalArea.isValid(in: currentHeader) }

    /// Turns the journal on (`amend -o journal=on`: the region is reset, then the header marks it
    /// valid) or off (`journal=off`: the header's bit is cleared; the region stays reserved).
    /// Turning it on needs a region (``CreateOptions/journalSize`` at creation), a backing file
    /// name that ends inside the first cluster, and a clean image (NEED_CHECK clear: the journal
    /// cannot describe a period it did not see). Exclusive: waits for running requests to finish.
    public func setJournal(enabled: Bool) throws {
        try gate.exclusive {
            try ensureWritable()
            if enabled { try turnJournalOn() } else { try turnJournalOff() }
        }
    }

    private func turnJournalOn() throws {
        guard let area = journalArea else {
            throw QEDError(
                .unsupported,
                "the image reserves no journal region (header_size is 1); create it with -o journal=on",
                path: path)
        }
        let current = currentHeader
        guard JournalArea.backingNameFitsClusterZero(current) else {
            throw QEDError(
                .unsupported, "the backing file name reaches into the journal region",
                value: UInt64(current.backingNameSize), path: path)
        }
        guard journal.mode == .off || !isJournalValid else { return }
        guard !isDirty else {
            throw QEDError(
                .unsupported, "the image needs a check before its journal can be turned on (NEED_CHECK is set)",
                path: path)
        }
        let writer = try failure.recording { try Journal.format(file, layout: area.layout) }
        try journal.attach(writer, scan: JournalScan(), dirty: false)
        try header.update { $0.autoclearFeatures |= JournalArea.validBit }
    }

    /// Clears the journal bit (synced) and stops recording. A dirty image then gets the full check.
    func turnJournalOff() throws {
        if currentHeader.autoclearFeatures & JournalArea.validBit != 0 {
            try header.update { $0.autoclearFeatures &= ~JournalArea.validBit }
        }
        journal.turnOff()
    }
}
