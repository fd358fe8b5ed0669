import Foundation
import QED
import TestSupport
import Testing

/// qed-nbd with TLS (`--tls-certificates`, `--tls-psk`) against GnuTLS clients: libnbd (nbdinfo, nbdcopy,
/// the Python binding) and QEMU (`tls-creds-x509`, `tls-creds-psk`), plus the STARTTLS rules on the wire.
@Suite struct NBDTLSTests {
    // MARK: - Credentials made at test time

    /// A CA and, signed by it, a server certificate (`localhost`, 127.0.0.1) and a client certificate, all
    /// EC P-256, in `dir` with the names qemu and libnbd look for; returns the directory.
    @discardableResult
    private static func makePKI(_ box: NBDSandbox, _ dir: String, caName: String = "qed-nbd test CA") throws -> String {
        let pki = box.path(dir)
        try FileManager.default.createDirectory(atPath: pki, withIntermediateDirectories: true)
        let p = { (name: String) in pki + "/" + name }
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        try Self.must(
            box, "openssl",
            ["req", "-x509"] + ec + [
                "-keyout", p("ca-key.pem"), "-out", p("ca-cert.pem"), "-days", "2", "-subj", "/CN=\(caName)",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ])
        for (who, ext) in [
            ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            try Self.must(
                box, "openssl",
                ["req"] + ec + [
                    "-keyout", p("\(who)-key.pem"), "-out", p("\(who).csr"), "-subj",
                    "/CN=\(who == "server" ? "localhost" : "client")",
                ])
            try ext.write(toFile: p("\(who).ext"), atomically: true, encoding: .utf8)
            try Self.must(
                box, "openssl",
                [
                    "x509", "-req", "-in", p("\(who).csr"), "-CA", p("ca-cert.pem"), "-CAkey", p("ca-key.pem"),
                    "-CAcreateserial", "-out", p("\(who)-cert.pem"), "-days", "2", "-extfile", p("\(who).ext"),
                ])
        }
        return pki
    }

    /// Runs a command that must succeed (the array form of ``NBDSandbox/must(_:_:sourceLocation:)``).
    private static func must(
        _ box: NBDSandbox, _ executable: String, _ arguments: [String],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let outcome = try box.run(executable, arguments)
        #expect(outcome.status == 0, "\(executable) \(arguments): \(outcome)", sourceLocation: sourceLocation)
    }

    /// A random key of `bytes` bytes, as hex.
    private static func hexKey(_ bytes: Int) -> String {
        (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }

    private static func tlsURI(_ server: NBDServerProcess, _ query: String) -> String {
        "nbds+unix:///?socket=\(server.socket)&\(query)"
    }

    // MARK: - STARTTLS on the wire

    /// Speaks the handshake by hand, in clear text, to a server that requires TLS.
    static let wireScript = #"""
        import socket, struct, sys
        IHAVEOPT = 0x49484156454F5054
        REPLY_MAGIC = 0x3e889045565a9

        def recvn(s, n):
            b = b""
            while len(b) < n:
                c = s.recv(n - len(b))
                if not c:
                    break
                b += c
            return b

        def connect():
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(120)  # bounds a hung server only
            s.connect(sys.argv[1])
            greeting = recvn(s, 18)
            assert greeting[:8] == b"NBDMAGIC" and len(greeting) == 18, greeting
            s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
            return s

        def option(o, data=b""):
            return struct.pack(">QII", IHAVEOPT, o, len(data)) + data

        def reply(s):
            h = recvn(s, 20)
            if len(h) < 20:
                return None
            magic, o, t, l = struct.unpack(">QIII", h)
            assert magic == REPLY_MAGIC, hex(magic)
            return (o, t, recvn(s, l))

        def report(name, ok, why=""):
            print(("ok " if ok else "FAIL ") + name + ("" if ok else ": " + str(why)), flush=True)

        s = connect()
        info = struct.pack(">I", 0) + struct.pack(">H", 0)
        for name, o, data in [("LIST", 3, b""), ("INFO", 6, info), ("STRUCTURED_REPLY", 8, b""), ("GO", 7, info),
                              ("LIST_META_CONTEXT", 9, b"")]:
            s.sendall(option(o, data))
            r = reply(s)
            report(name + " before TLS gets ERR_TLS_REQD", r is not None and r[0] == o and r[1] == 0x80000005, r)
        s.sendall(option(5, b"x"))
        r = reply(s)
        report("STARTTLS with data gets ERR_INVALID", r is not None and r[1] == 0x80000003, r)
        s.sendall(option(1, b""))
        report("EXPORT_NAME before TLS closes without a reply", recvn(s, 1) == b"")

        # Bytes behind STARTTLS, sent before the ACK could be seen, would bypass TLS: the server must close.
        s = connect()
        s.sendall(option(5) + option(7, info)[:10])
        report("STARTTLS followed by clear text closes without an ACK", recvn(s, 1) == b"")

        s = connect()
        s.sendall(option(5))
        r = reply(s)
        report("STARTTLS gets an ACK", r == (5, 1, b""), r)
        # Clear text after the ACK goes to TLS, which rejects it: no option reply, the server hangs up.
        s.sendall(option(3))
        rest = recvn(s, 4096)
        report("an option in clear text after the ACK is not answered", REPLY_MAGIC.to_bytes(8, "big") not in rest, rest)
        """#

    @Test func x509RequiresTLSAndServesNBDInfoAndQEMU() throws {
        let box = try NBDSandbox()
        let pki = try Self.makePKI(box, "pki")
        try box.makeQED("a.qed", size: "64M")
        let server = try box.startServer(["-t", "-x", "disk", "--tls-certificates", pki], image: "a.qed")

        // libnbd over TLS, verifying the server's certificate against ca-cert.pem.
        let uri = "nbds+unix:///disk?socket=\(server.socket)&tls-certificates=\(pki)"
        let json = try parseJSON(try box.must("nbdinfo", "--json", uri).stdout) as? [String: Any]
        #expect(json?["TLS"] as? Bool == true, "\(String(describing: json))")
        let export = (json?["exports"] as? [[String: Any]])?.first
        #expect(export?["export-size"] as? Int == 64 << 20)
        #expect(export?["export-name"] as? String == "disk")
        #expect(export?["contexts"] as? [String] == ["base:allocation"])

        // A client without TLS is told TLS is required (ERR_TLS_REQD) and gets nothing.
        let plain = try box.run("nbdinfo", "--size", server.uri(export: "disk"))
        #expect(plain.status != 0 && plain.stdout.isEmpty, "\(plain)")
        #expect(plain.stderr.contains("server requires TLS"), "\(plain)")

        // The option rules, byte by byte.
        let wire = try box.python(Self.wireScript, [server.socket], timeout: 300)
        #expect(
            wire.status == 0 && !wire.stdout.contains("FAIL") && wire.stdout.components(separatedBy: "ok ").count == 11,
            "\(wire)")

        // QEMU's GnuTLS client: tls-creds-x509 (a Unix socket needs tls-hostname to check the certificate).
        let creds = "tls-creds-x509,id=tls0,dir=\(pki),endpoint=client"
        let image =
            "driver=nbd,server.type=unix,server.path=\(server.socket),export=disk,tls-creds=tls0,tls-hostname=localhost"
        let info = try box.must("qemu-img", "info", "--output=json", "--object", creds, "--image-opts", image)
        let infoJSON = try parseJSON(info.stdout) as? [String: Any]
        #expect(infoJSON?["virtual-size"] as? Int == 64 << 20, "\(info)")
        let io = try box.must(
            "qemu-io", "--object", creds, "--image-opts", image,
            "-c", "write -P 0x5a 1M 192k", "-c", "read -P 0x5a 1M 192k", "-c", "read -P 0 0 1M")
        #expect(
            io.stdout.contains("wrote 196608/196608") && io.stdout.contains("read 196608/196608")
                && !io.stdout.contains("Pattern verification failed"), "\(io)")
        // A client that does not trust the server's CA refuses it. (qemu checks the chain on a Unix socket
        // given tls-hostname; libnbd 1.14 checks it only over TCP, where it has a host name.)
        let otherCA = try Self.makePKI(box, "other", caName: "someone else")
        let untrusted = try box.run(
            "qemu-img",
            [
                "info", "--object", "tls-creds-x509,id=tls0,dir=\(otherCA),endpoint=client",
                "--image-opts", image,
            ])
        #expect(untrusted.status != 0 && untrusted.stderr.contains("certificate"), "\(untrusted)")
        #expect(server.isRunning, "the server survives refused and broken clients: \(server.log)")
        #expect(server.terminate() == 0, "\(server.log)")
        #expect(
            try nbdReadImage(box.path("a.qed"), at: 1 << 20, count: 192 << 10)
                == [UInt8](repeating: 0x5a, count: 192 << 10))
    }

    /// The data path over TLS: nbdcopy in, libnbd's Python binding out (with a FLUSH and a FUA write),
    /// compared byte for byte, and the image is consistent afterwards.
    @Test func x509DataRoundTripIsByteIdentical() throws {
        let box = try NBDSandbox()
        let pki = try Self.makePKI(box, "pki")
        try box.makeQED("d.qed", size: "16M")
        var pattern = [UInt8](repeating: 0, count: 6 << 20)
        for i in stride(from: 0, to: pattern.count, by: 8) {
            withUnsafeBytes(of: (UInt64(i) &* 0x9E37_79B9_7F4A_7C15).bigEndian) {
                pattern.replaceSubrange(i..<i + 8, with: $0)
            }
        }
        try Data(pattern).write(to: URL(fileURLWithPath: box.path("in.bin")))
        let server = try box.startServer(["-t", "--tls-certificates", pki], image: "d.qed")
        let uri = Self.tlsURI(server, "tls-certificates=\(pki)")
        try box.must("nbdcopy", box.path("in.bin"), uri)

        let script = #"""
            import sys, nbd
            h = nbd.NBD()
            h.set_tls(nbd.TLS_REQUIRE)
            h.set_tls_certificates(sys.argv[2])
            h.connect_unix(sys.argv[1])
            assert h.get_tls_negotiated(), "TLS not negotiated"
            data = h.pread(6 << 20, 0)
            open(sys.argv[3], "wb").write(data)
            h.pwrite(b"\xa5" * 4096, (12 << 20) + 512, nbd.CMD_FLAG_FUA)
            h.flush()
            assert h.pread(4096, (12 << 20) + 512) == b"\xa5" * 4096
            h.shutdown()
            print("done")
            """#
        let outcome = try box.python(script, [server.socket, pki, box.path("out.bin")], timeout: 300)
        #expect(outcome.status == 0 && outcome.stdout == "done\n", "\(outcome)")
        #expect(try box.bytes("out.bin") == pattern, "data read back over TLS differs")
        #expect(server.terminate() == 0, "\(server.log)")

        try box.must("qemu-img", "check", box.path("d.qed"))
        #expect(
            try nbdReadImage(box.path("d.qed"), at: 0, count: pattern.count) == pattern,
            "the image holds what nbdcopy sent")
        #expect(
            try nbdReadImage(box.path("d.qed"), at: (12 << 20) + 512, count: 4096)
                == [UInt8](repeating: 0xa5, count: 4096))
    }

    @Test func verifyPeerRequiresAClientCertificateFromTheCA() throws {
        let box = try NBDSandbox()
        let pki = try Self.makePKI(box, "pki")
        // Another CA with the same name: GnuTLS offers its client certificate (the issuer name matches the
        // server's CA list) and the server must reject the signature.
        let stranger = try Self.makePKI(box, "stranger")
        // A client directory trusting the server's CA but holding a certificate from the other CA, and one
        // with no client certificate at all.
        let mixed = box.path("mixed"), anonymous = box.path("anonymous")
        for dir in [mixed, anonymous] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: pki + "/ca-cert.pem", toPath: dir + "/ca-cert.pem")
        }
        for name in ["client-cert.pem", "client-key.pem"] {
            try FileManager.default.copyItem(atPath: stranger + "/" + name, toPath: mixed + "/" + name)
        }
        try box.makeQED("v.qed", size: "8M")
        let server = try box.startServer(["-t", "-v", "--tls-certificates", pki, "--tls-verify-peer"], image: "v.qed")
        let ok = try box.must("nbdinfo", "--size", Self.tlsURI(server, "tls-certificates=\(pki)"))
        #expect(ok.stdout == "8388608\n")
        for dir in [anonymous, mixed] {
            let refused = try box.run("nbdinfo", "--size", Self.tlsURI(server, "tls-certificates=\(dir)"))
            #expect(refused.status != 0 && refused.stdout.isEmpty, "\(dir): \(refused)")
        }
        #expect(server.terminate() == 0, "\(server.log)")
        #expect(server.log.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE"), "\(server.log)")
        #expect(server.log.contains("CERTIFICATE_VERIFY_FAILED"), "\(server.log)")
    }

    @Test func pskServesLibnbdAndQEMUAndRefusesUnknownKeys() throws {
        let box = try NBDSandbox()
        let aliceKey = Self.hexKey(32)
        try box.write("keys.psk", "alice:\(aliceKey)\n\nbob:\(Self.hexKey(16))\n")
        try box.makeQED("p.qed", size: "8M")
        let server = try box.startServer(["-t", "--tls-psk", box.path("keys.psk")], image: "p.qed")

        let script = #"""
            import sys, nbd
            def attempt(user, keyfile, write=False):
                h = nbd.NBD()
                h.set_tls(nbd.TLS_REQUIRE)
                h.set_tls_psk_file(keyfile)
                h.set_tls_username(user)
                try:
                    h.connect_unix(sys.argv[1])
                except nbd.Error as e:
                    return "refused"
                if write:
                    h.pwrite(b"\x3c" * 65536, 65536)
                    h.flush()
                size = h.get_size()
                data = h.pread(65536, 65536)
                h.shutdown()
                return "size %d data %s" % (size, data == b"\x3c" * 65536)
            print("alice:", attempt("alice", sys.argv[2], write=True))
            print("wrong key:", attempt("alice", sys.argv[3]))
            print("unknown user:", attempt("carol", sys.argv[4]))
            """#
        let wrongKey = try box.write("wrong.psk", "alice:\(Self.hexKey(32))\n")
        let unknown = try box.write("carol.psk", "carol:\(aliceKey)\n")
        let outcome = try box.python(script, [server.socket, box.path("keys.psk"), wrongKey, unknown], timeout: 300)
        #expect(
            outcome.stdout == "alice: size 8388608 data True\nwrong key: refused\nunknown user: refused\n", "\(outcome)"
        )

        // nbdinfo (user in the URI) and a plain client.
        let size = try box.must(
            "nbdinfo", "--size", "nbds+unix://bob@/?socket=\(server.socket)&tls-psk-file=\(box.path("keys.psk"))")
        #expect(size.stdout == "8388608\n")
        let plain = try box.run("nbdinfo", "--size", server.uri())
        #expect(plain.status != 0 && plain.stderr.contains("server requires TLS"), "\(plain)")

        // QEMU's tls-creds-psk reads DIR/keys.psk.
        let qemuDir = box.path("qemu-psk")
        try FileManager.default.createDirectory(atPath: qemuDir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: box.path("keys.psk"), toPath: qemuDir + "/keys.psk")
        let io = try box.must(
            "qemu-io", "--object", "tls-creds-psk,id=tls0,dir=\(qemuDir),endpoint=client,username=alice",
            "--image-opts", "driver=nbd,server.type=unix,server.path=\(server.socket),tls-creds=tls0",
            "-c", "read -P 0x3c 64k 64k", "-c", "write -P 0x3d 1M 4k")
        #expect(io.stdout.contains("read 65536/65536") && !io.stdout.contains("Pattern verification failed"), "\(io)")
        #expect(server.terminate() == 0, "\(server.log)")
        try box.must("qemu-img", "check", box.path("p.qed"))
        #expect(try nbdReadImage(box.path("p.qed"), at: 1 << 20, count: 4096) == [UInt8](repeating: 0x3d, count: 4096))
    }

    /// Unusable credentials stop qed-nbd before it serves, with a message naming the file.
    @Test func badCredentialsAreReportedWithTheFile() throws {
        let box = try NBDSandbox()
        let pki = try Self.makePKI(box, "pki")
        try box.makeQED("c.qed", size: "1M")
        let partial = box.path("partial")
        try FileManager.default.createDirectory(atPath: partial, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: pki + "/server-cert.pem", toPath: partial + "/server-cert.pem")
        let mismatched = box.path("mismatched")
        try FileManager.default.createDirectory(atPath: mismatched, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: pki + "/server-cert.pem", toPath: mismatched + "/server-cert.pem")
        try FileManager.default.copyItem(atPath: pki + "/client-key.pem", toPath: mismatched + "/server-key.pem")
        try box.write("bad.psk", "alice:00112233\nbob:xyz\n")
        try box.write("empty.psk", "\n")

        let cases: [([String], String)] = [
            (["--tls-certificates", box.path("nowhere")], "\(box.path("nowhere")): No such file or directory"),
            (["--tls-certificates", partial], "\(partial)/server-key.pem: No such file or directory"),
            (
                ["--tls-certificates", mismatched],
                "\(mismatched)/server-key.pem: cannot be used with \(mismatched)/server-cert.pem"
            ),
            (["--tls-certificates", partial, "--tls-verify-peer"], "\(partial)/server-key.pem"),
            (
                ["--tls-psk", box.path("bad.psk")],
                "\(box.path("bad.psk")): line 2: the key is not an even number of hex digits"
            ),
            (["--tls-psk", box.path("empty.psk")], "\(box.path("empty.psk")): holds no key"),
            (["--tls-verify-peer"], "--tls-verify-peer needs --tls-certificates"),
            (["--tls-psk", box.path("bad.psk"), "--tls-certificates", pki], "mutually exclusive"),
        ]
        for (arguments, message) in cases {
            let outcome = try box.run(
                NBDSandbox.qedNBD, arguments + ["-k", box.path("x.sock"), box.path("c.qed")], timeout: 120)
            #expect(outcome.status != 0 && outcome.stderr.contains(message), "\(arguments): \(outcome)")
            #expect(!FileManager.default.fileExists(atPath: box.path("x.sock")), "\(arguments) listened anyway")
        }
        // With verify-peer and no ca-cert.pem, the CA is what is missing.
        try FileManager.default.removeItem(atPath: pki + "/ca-cert.pem")
        let noCA = try box.run(
            NBDSandbox.qedNBD,
            ["--tls-certificates", pki, "--tls-verify-peer", "-k", box.path("x.sock"), box.path("c.qed")])
        #expect(
            noCA.status == 1
                && noCA.stderr.contains(
                    "\(pki)/ca-cert.pem: No such file or directory (needed to verify client certificates)"),
            "\(noCA)")
    }
}
