#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// SIGTERM and SIGINT handling without handlers: the signals are blocked in all threads and taken with
/// `sigwait`, so they can never interrupt a system call or be lost to a thread that ignores them.
enum Signals {
    private static var terminationSet: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        return set
    }

    /// Blocks SIGTERM and SIGINT in the calling thread (and so in every thread it creates later) and
    /// ignores SIGPIPE.
    static func block() {
        var set = terminationSet
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
    }

    /// Starts a thread (a plain pthread: dispatch's workers reset their signal masks) that waits for
    /// SIGTERM or SIGINT and then calls `action` once.
    static func startWaiter(_ action: @escaping @Sendable () -> Void) {
        final class Box: Sendable {
            let action: @Sendable () -> Void
            init(_ action: @escaping @Sendable () -> Void) { self.action = action }
        }
        let context = Unmanaged.passRetained(Box(action)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(
            &thread, nil,
            { argument in
                guard let argument else { return nil }
                let box = Unmanaged<Box>.fromOpaque(argument).takeRetainedValue()
                var set = Signals.terminationSet
                var number: Int32 = 0
                while sigwait(&set, &number) != 0 {}
                box.action()
                return nil
            }, context)
        if status == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<Box>.fromOpaque(context).release()
        }
    }
}
