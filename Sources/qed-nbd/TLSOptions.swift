import ArgumentParser
import NBDServer

/// `--tls-certificates --tls-psk --tls-verify-peer`: the credentials that make TLS required.
struct TLSOptions: ParsableArguments {
    @Option(
        name: .customLong("tls-certificates"),
        help: ArgumentHelp(
            "Require TLS, with X.509 certificates from DIR: server-cert.pem, server-key.pem "
                + "(and ca-cert.pem with --tls-verify-peer).",
            valueName: "DIR"
        )
    )
    var tlsCertificates: String?

    @Option(
        name: .customLong("tls-psk"),
        help: ArgumentHelp(
            "Require TLS, with pre-shared keys from FILE (GnuTLS psktool format: identity:hexkey lines).",
            valueName: "FILE"
        )
    )
    var tlsPSK: String?

    @Flag(
        name: .customLong("tls-verify-peer"),
        help: "With --tls-certificates: clients must present a certificate signed by DIR/ca-cert.pem."
    )
    var tlsVerifyPeer = false

    func validate() throws {
        if tlsCertificates != nil && tlsPSK != nil {
            throw ValidationError("--tls-certificates and --tls-psk are mutually exclusive")
        }
        if tlsVerifyPeer && tlsCertificates == nil {
            throw ValidationError("--tls-verify-peer needs --tls-certificates")
        }
    }

    /// The credentials loaded from the files named, or nil when TLS is not asked for.
    /// - Throws: ``Failure`` naming the file that cannot be read or used.
    func credentials() throws -> NBDServerTLS? {
        do {
            if let directory = tlsCertificates {
                return try NBDServerTLS.certificates(directory: directory, verifyPeer: tlsVerifyPeer)
            }
            if let file = tlsPSK {
                return try NBDServerTLS.preSharedKeys(file: file)
            }
            return nil
        } catch let error as NBDTLSConfigurationError {
            throw Failure(error.description)
        }
    }
}
