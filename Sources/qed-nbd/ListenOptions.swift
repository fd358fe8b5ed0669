import ArgumentParser
import NBD
import NBDServer

/// `-b -p -k`: where the server listens when no socket was passed to it.
struct ListenOptions: ParsableArguments {
    @Option(name: [.customShort("b"), .customLong("bind")], help: "Address to listen on (default 127.0.0.1).")
    var bind: String?

    @Option(name: [.customShort("p"), .customLong("port")], help: "TCP port to listen on (default 10809).")
    var port: Int?

    @Option(name: [.customShort("k"), .customLong("socket")], help: "Listen on this Unix socket path instead.")
    var socket: String?

    func validate() throws {
        if let port = self.port, !(0...65535).contains(port) {
            throw ValidationError("invalid port \(port)")
        }
        if self.socket != nil && (bind != nil || self.port != nil) {
            throw ValidationError("-k/--socket cannot be combined with -b/--bind or -p/--port")
        }
    }

    /// The socket passed by socket activation (`activated`) if any, else the Unix socket of `-k`, else
    /// TCP on `-b` (127.0.0.1) and `-p` (10809).
    func address(activated: Int32?) -> NBDListenAddress {
        if let activated { return .inherited(descriptor: activated) }
        if let socket = self.socket { return .unix(path: socket) }
        return .tcp(host: bind ?? "127.0.0.1", port: self.port ?? NBD.defaultPort)
    }
}
