// Entry point: parse, run, and report failures as qemu-nbd does (`qed-nbd: message`, exit status 1).
import ArgumentParser
import Logging

do {
    var command = try QEDNBD.parseAsRoot()
    if command is QEDNBD {
        LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
    }
    try command.run()
} catch {
    exitReporting(error)
}
