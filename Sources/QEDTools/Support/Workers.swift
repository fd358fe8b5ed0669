import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs `count` worker threads executing `body(workerIndex)` and waits for all of them. Real
/// threads (not a task pool): the workers block on file I/O. The first error thrown is rethrown
/// after every worker has returned.
func runWorkers(count: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
    final class Errors: Sendable {
        let list = Mutex<[any Error]>([])
        func add(_ e: any Error) { list.withLock { $0.append(e) } }
    }
    final class Box: Sendable {
        let body: @Sendable (Int) throws -> Void
        let index: Int
        let errors: Errors
        init(body: @escaping @Sendable (Int) throws -> Void, index: Int, errors: Errors) {
            self.body = body
            self.index = index
            self.errors = errors
        }
        func run() {
            do { try body(index) } catch { errors.add(error) }
        }
    }
    if count <= 1 {
        try body(0)
        return
    }
    let errors = Errors()
    var threads: [pthread_t] = []
    for index in 0..<count {
        let box = Box(body: body, index: index, errors: errors)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(box).toOpaque()
        let rc = pthread_create(
            &thread, nil,
            { raw in
                Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().run()
                return nil
            }, context)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(context).release()
            box.run()
            continue
        }
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
    let list = errors.list.withLock { $0 }
    // A cancellation is less interesting than a real failure.
    if let real = list.first(where: { !($0 is OperationCancelled) }) { throw real }
    if let first = list.first { throw first }
}
