/// Raw-socket NBD client pieces in Python (fixed newstyle, `NBD_OPT_GO`, simple replies), for the
/// interop scripts that send what libnbd will not or hold connections libnbd would finish. Every
/// socket has a timeout, so a server that stops answering makes a script fail instead of hang.
enum NBDRawClient {
    /// The Python functions: `connect`, `recv_exact`, `greeting`, `go`, `negotiated`, `request`,
    /// `simple_reply`, `read`, `disconnect`, `served`, `wait_for_eof`.
    static let python = #"""
        import json, random, socket, struct, sys, time

        def connect(path, timeout):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(path)
            return s

        def recv_exact(s, n):
            data = b""
            while len(data) < n:
                chunk = s.recv(n - len(data))
                if not chunk:
                    raise EOFError("EOF after %d of %d bytes" % (len(data), n))
                data += chunk
            return data

        def greeting(s):
            g = recv_exact(s, 18)
            assert g[:16] == b"NBDMAGICIHAVEOPT", g

        def go(s):
            """Reads the greeting, negotiates NBD_OPT_GO for the default export; returns its size."""
            greeting(s)
            s.sendall(struct.pack(">I", 3))
            data = struct.pack(">IH", 0, 0)
            s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, len(data)) + data)
            size = None
            while True:
                magic, option, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
                payload = recv_exact(s, length)
                if rtype == 3 and length >= 12 and struct.unpack(">H", payload[:2])[0] == 0:
                    size = struct.unpack(">Q", payload[2:10])[0]
                if rtype == 1:
                    return size
                if rtype & 0x80000000:
                    raise RuntimeError("GO refused: 0x%x" % rtype)

        def negotiated(path, timeout):
            """A connection to `path` in the transmission phase (GO done)."""
            s = connect(path, timeout)
            go(s)
            return s

        def request(s, cmd, cookie, offset=0, length=0, flags=0, payload=b""):
            s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, cmd, cookie, offset, length) + payload)

        def simple_reply(s):
            """The next simple reply's (error, cookie); raises on another magic."""
            magic, error, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
            if magic != 0x67446698:
                raise RuntimeError("bad reply magic 0x%x" % magic)
            return error, cookie

        def read(s, cookie, offset, length):
            request(s, 0, cookie, offset, length)
            error, got = simple_reply(s)
            if got != cookie or error != 0:
                raise RuntimeError("bad reply: error %d cookie %d" % (error, got))
            return recv_exact(s, length)

        def disconnect(s):
            request(s, 2, 0)

        def served(path, timeout):
            """A complete session (GO, one READ, DISC); returns the seconds it took."""
            start = time.monotonic()
            s = connect(path, timeout)
            try:
                go(s)
                read(s, 1, 0, 512)
                disconnect(s)
            finally:
                s.close()
            return time.monotonic() - start

        def wait_for_eof(s):
            """Returns once the server closed `s` (EOF); raises socket.timeout if it does not in time."""
            while s.recv(4096):
                pass
        """#

    /// The client code followed by `body` (a multi-line literal has no final newline).
    static func script(_ body: String) -> String { python + "\n" + body }
}
