import ArgumentParser
import NBDServer
import QED

/// A value an option names from a fixed set, parsed once with the command line. A name that is not
/// one of them is refused by ArgumentParser, naming the value and listing the valid ones (exit status
/// 64, as for every usage error), e.g. "The value 'bogus' is invalid for '--discard <discard>'.
/// Please provide one of 'ignore' and 'unmap'." The spellings are qemu-nbd's: the raw values.
///
/// An internal protocol, so the conformances stay inside this executable: NBDServer and QED know
/// nothing of ArgumentParser.
protocol NamedChoice: ExpressibleByArgument {}

/// `--cache`: writeback, writethrough or none.
extension NBDCacheMode: NamedChoice {}

/// `--discard`: ignore or unmap.
extension NBDDiscardMode: NamedChoice {}

/// `--detect-zeroes`: off, on or unmap.
extension NBDDetectZeroesMode: NamedChoice {}

/// `-f`: the formats of the engine's registry (an added format shows up here by itself).
extension DiskFormat: NamedChoice {
    init?(argument: String) {
        guard let known = DiskOpener.format(named: argument) else { return nil }
        self = known
    }

    static var allValueStrings: [String] { DiskOpener.formats.map(\.rawValue) }
}
