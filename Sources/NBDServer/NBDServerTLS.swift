import NIOSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// TLS credentials for ``NBDServer``. A server with TLS requires it (qemu-nbd's behaviour): every option
/// but `NBD_OPT_STARTTLS` gets `NBD_REP_ERR_TLS_REQD` until the TLS handshake is done, and
/// `NBD_OPT_EXPORT_NAME` before TLS closes the connection.
///
/// Load the credentials once, before serving: it reads files (blocking I/O).
public struct NBDServerTLS: Sendable {
    /// How the server authenticates itself.
    public enum Kind: Sendable, Hashable, CustomStringConvertible {
        /// X.509 certificates (`--tls-certificates DIR`); `verifiesPeer`: clients must present a certificate
        /// signed by the directory's CA.
        case x509(directory: String, verifiesPeer: Bool)
        /// Pre-shared keys (`--tls-psk FILE`), TLS 1.2.
        case psk(file: String, identities: Int)

        public var description: String {
            switch self {
            case .x509(let directory, let verifiesPeer):
                return "x509 from \(directory)\(verifiesPeer ? ", client certificates required" : "")"
            case .psk(let file, let identities):
                return "psk from \(file) (\(identities) identit\(identities == 1 ? "y" : "ies"))"
            }
        }
    }

    /// The credentials loaded.
    public let kind: Kind
    let context: NIOSSLContext

    /// The TLS versions offered with certificates: 1.2 and 1.3 (what GnuTLS' `NORMAL` priority, used by
    /// qemu and libnbd, offers too).
    static let minimumVersion: TLSVersion = .tlsv12

    /// The cipher suites offered with pre-shared keys. BoringSSL (inside swift-nio-ssl) supports external
    /// PSKs only up to TLS 1.2 and only with these suites; GnuTLS clients (qemu's `tls-creds-psk`, libnbd's
    /// `set_tls_psk_file`) enable `ECDHE-PSK` and `PSK` key exchange, and with them negotiate the first.
    static let pskCipherSuites = [
        "ECDHE-PSK-CHACHA20-POLY1305",
        "ECDHE-PSK-AES128-CBC-SHA",
        "ECDHE-PSK-AES256-CBC-SHA",
        "PSK-AES128-CBC-SHA",
        "PSK-AES256-CBC-SHA",
    ].joined(separator: ":")

    /// X.509 credentials from `directory`, in the layout qemu's `tls-creds-x509` and nbdkit use:
    /// `server-cert.pem` (the server's certificate, optionally followed by intermediates),
    /// `server-key.pem` (its private key, unencrypted), and `ca-cert.pem` (the CA that signed client
    /// certificates; needed only with `verifyPeer`).
    /// - Parameters:
    ///   - directory: The directory.
    ///   - verifyPeer: Whether clients must present a certificate signed by `ca-cert.pem`
    ///     (nbdkit's `--tls-verify-peer`); off by default, as in nbdkit.
    /// - Throws: ``NBDTLSConfigurationError`` naming the file that is missing or unusable.
    public static func certificates(directory: String, verifyPeer: Bool = false) throws -> NBDServerTLS {
        let certificatePath = Self.join(directory, "server-cert.pem")
        let keyPath = Self.join(directory, "server-key.pem")
        let caPath = Self.join(directory, "ca-cert.pem")
        try Self.checkReadable(directory: directory)

        let chain: [NIOSSLCertificate]
        do {
            try Self.checkReadable(file: certificatePath)
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch let error as NBDTLSConfigurationError {
            throw error
        } catch {
            throw NBDTLSConfigurationError(certificatePath, "not a PEM certificate (\(error))")
        }
        guard !chain.isEmpty else { throw NBDTLSConfigurationError(certificatePath, "holds no certificate") }

        let key: NIOSSLPrivateKey
        do {
            try Self.checkReadable(file: keyPath)
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch let error as NBDTLSConfigurationError {
            throw error
        } catch {
            throw NBDTLSConfigurationError(keyPath, "not an unencrypted PEM private key (\(error))")
        }

        var configuration: TLSConfiguration
        if verifyPeer {
            let authorities: [NIOSSLCertificate]
            do {
                try Self.checkReadable(file: caPath, purpose: "needed to verify client certificates")
                authorities = try NIOSSLCertificate.fromPEMFile(caPath)
            } catch let error as NBDTLSConfigurationError {
                throw error
            } catch {
                throw NBDTLSConfigurationError(caPath, "not a PEM certificate (\(error))")
            }
            guard !authorities.isEmpty else { throw NBDTLSConfigurationError(caPath, "holds no certificate") }
            configuration = TLSConfiguration.makeServerConfigurationWithMTLS(
                certificateChain: chain.map { .certificate($0) },
                privateKey: .privateKey(key),
                trustRoots: .certificates(authorities)
            )
            configuration.sendCANameList = true
        } else {
            configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) },
                privateKey: .privateKey(key)
            )
        }
        configuration.minimumTLSVersion = Self.minimumVersion
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw NBDTLSConfigurationError(
                keyPath,
                "cannot be used with \(certificatePath) (is it the certificate's key?): \(error)"
            )
        }
        return NBDServerTLS(kind: .x509(directory: directory, verifiesPeer: verifyPeer), context: context)
    }

    /// Pre-shared key credentials from `file`, in the format of GnuTLS' `psktool` (used by qemu's
    /// `tls-creds-psk` as `keys.psk` and by nbdkit's `--tls-psk`): one `identity:hexkey` per line.
    /// - Parameter file: The key file.
    /// - Throws: ``NBDTLSConfigurationError`` when the file cannot be read or a line is malformed.
    public static func preSharedKeys(file: String) throws -> NBDServerTLS {
        let text = try Self.readText(file)
        let keys: [String: [UInt8]]
        do {
            keys = try NBDPSKFile.parse(text)
        } catch {
            throw NBDTLSConfigurationError(file, error.description)
        }
        guard !keys.isEmpty else { throw NBDTLSConfigurationError(file, "holds no key") }
        var configuration = TLSConfiguration.makePreSharedKeyConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv12
        configuration.cipherSuites = Self.pskCipherSuites
        configuration.pskServerProvider = { context in
            guard let key = keys[context.clientIdentity] else { throw NBDUnknownPSKIdentity() }
            return PSKServerIdentityResponse(key: NIOSSLSecureBytes(key))
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw NBDTLSConfigurationError(file, "cannot set up TLS with these keys: \(error)")
        }
        return NBDServerTLS(kind: .psk(file: file, identities: keys.count), context: context)
    }

    // MARK: - Files

    private static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    private static func checkReadable(directory: String) throws {
        var status = stat()
        guard stat(directory, &status) == 0 else { throw NBDTLSConfigurationError(directory, Self.errnoText()) }
        guard (status.st_mode & S_IFMT) == S_IFDIR else {
            throw NBDTLSConfigurationError(directory, "is not a directory")
        }
    }

    private static func checkReadable(file: String, purpose: String? = nil) throws {
        guard access(file, R_OK) == 0 else {
            let reason = Self.errnoText()
            throw NBDTLSConfigurationError(file, purpose.map { "\(reason) (\($0))" } ?? reason)
        }
    }

    private static func readText(_ path: String) throws -> String {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw NBDTLSConfigurationError(path, Self.errnoText()) }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw NBDTLSConfigurationError(path, Self.errnoText()) }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            guard bytes.count <= 1 << 20 else { throw NBDTLSConfigurationError(path, "is larger than 1 MiB") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}

/// TLS credentials that cannot be loaded: which file, and why.
public struct NBDTLSConfigurationError: Error, CustomStringConvertible, Sendable {
    /// The file or directory at fault.
    public var path: String
    /// What is wrong with it.
    public var reason: String

    init(_ path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "TLS: \(self.path): \(self.reason)" }
}

/// Thrown by the PSK lookup for an identity the key file does not have (fails the handshake).
struct NBDUnknownPSKIdentity: Error {}

/// The GnuTLS PSK key file format (`psktool`, qemu's `keys.psk`, nbdkit's `--tls-psk`).
public enum NBDPSKFile {
    /// A malformed line.
    public struct ParseError: Error, CustomStringConvertible, Sendable, Equatable {
        /// 1-based line number.
        public var line: Int
        /// What is wrong with it.
        public var reason: String

        public var description: String { "line \(self.line): \(self.reason)" }
    }

    /// BoringSSL's limits (`PSK_MAX_IDENTITY_LEN`, `PSK_MAX_PSK_LEN`).
    public static let maximumIdentityLength = 128
    public static let maximumKeyLength = 256

    /// Parses `identity:hexkey` lines; blank lines are skipped. The identity is everything before the first
    /// `:` (non-empty), the key the hex digits after it (an even number, at least 1 byte). A later line for
    /// the same identity replaces an earlier one.
    /// - Parameter text: The file's contents.
    /// - Returns: The key of every identity.
    /// - Throws: ``ParseError`` for the first malformed line.
    public static func parse(_ text: String) throws(ParseError) -> [String: [UInt8]] {
        var keys: [String: [UInt8]] = [:]
        var number = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            var line = Substring(rawLine)
            if line.hasSuffix("\r") { line = line.dropLast() }
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw ParseError(line: number, reason: "expected identity:hexkey")
            }
            let identity = String(line[..<colon])
            let hex = line[line.index(after: colon)...]
            guard !identity.isEmpty else { throw ParseError(line: number, reason: "empty identity") }
            guard identity.utf8.count <= Self.maximumIdentityLength else {
                throw ParseError(line: number, reason: "identity longer than \(Self.maximumIdentityLength) bytes")
            }
            guard let key = Self.decodeHex(hex), !key.isEmpty else {
                throw ParseError(line: number, reason: "the key is not an even number of hex digits")
            }
            guard key.count <= Self.maximumKeyLength else {
                throw ParseError(line: number, reason: "key longer than \(Self.maximumKeyLength) bytes")
            }
            keys[identity] = key
        }
        return keys
    }

    private static func decodeHex(_ text: Substring) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = Self.hexValue(digits[index]), let low = Self.hexValue(digits[index + 1]) else {
                return nil
            }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
