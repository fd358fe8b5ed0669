import CQEDSys

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How an open image takes QEMU's byte-range locks (file-posix's scheme).
///
/// QEMU locks one byte per permission: byte 100+i while it *holds* permission i, byte 200+i while
/// it *refuses to share* permission i with others. Permissions: 0 consistent read, 1 write,
/// 2 write unchanged, 3 resize. All locks are shared (read) locks on the open file description
/// (OFD locks on Linux), so they exclude QEMU processes and other opens in this process alike.
public enum LockMode: Sendable, Equatable {
    /// A writer, like `qemu-io` read-write: holds read, write, resize; shares neither write nor resize.
    case readWrite
    /// A reader that forbids writers, like `qemu-io -r`: holds read; shares neither write nor resize.
    case readOnly
    /// A reader that shares everything (`-U`/force-share, and backing files): holds read only.
    case shared
    /// Take no locks at all.
    case none

    /// Permission bits held (bit i = permission i).
    var held: UInt8 {
        switch self {
        case .readWrite: return 0b1011
        case .readOnly, .shared: return 0b0001
        case .none: return 0
        }
    }

    /// Permission bits not shared with others.
    var unshared: UInt8 {
        switch self {
        case .readWrite, .readOnly: return 0b1010
        case .shared, .none: return 0
        }
    }
}

/// Takes and checks QEMU-compatible image locks on a file descriptor. The locks live as long as
/// the descriptor (closing it drops them), so there is nothing to release explicitly.
public enum ImageLock {
    static let permByteBase: Int64 = 100
    static let sharedByteBase: Int64 = 200
    static let permissionNames = ["consistent read", "write", "write unchanged", "resize"]

    /// Locks the bytes for `mode` on `fd`, then verifies no other holder conflicts; on conflict the
    /// bytes just taken are released and ``QEDError/Code/locked`` is thrown with QEMU's wording.
    public static func acquire(fd: Int32, mode: LockMode, path: String) throws {
        guard mode != .none else { return }
        var taken: [Int64] = []
        func rollback() { for byte in taken { _ = qedsys_lock_byte(fd, byte, 0) } }
        for i in 0..<4 {
            let bit = UInt8(1) << UInt8(i)
            if mode.held & bit != 0 { taken.append(permByteBase + Int64(i)) }
            if mode.unshared & bit != 0 { taken.append(sharedByteBase + Int64(i)) }
        }
        for byte in taken where qedsys_lock_byte(fd, byte, 1) != 0 {
            let e = errno
            rollback()
            throw QEDError(
                .locked, "Failed to lock byte \(byte): \(String(cString: strerror(e)))",
                value: UInt64(byte), path: path, errno: e, syscall: "fcntl")
        }
        // A conflict may be a ghost: a descriptor this process just closed keeps its OFD locks
        // while a child forked by any thread has not yet exec'd (the child shares the open file
        // description until then). Re-test briefly before calling it a real conflict.
        var attempt = 0
        while let conflict = firstConflict(fd: fd, mode: mode, path: path) {
            attempt += 1
            if attempt >= conflictRetries {
                rollback()
                throw conflict
            }
            usleep(conflictRetryMicroseconds)
        }
    }

    /// How often a conflict is re-tested, and how long apart (about 100 ms in all).
    static let conflictRetries = 20
    static let conflictRetryMicroseconds: UInt32 = 5_000

    /// The first conflict with another holder, in QEMU's order, or nil.
    private static func firstConflict(fd: Int32, mode: LockMode, path: String) -> QEDError? {
        // Another holder refusing to share a permission we hold?
        for i in 0..<4 where mode.held & (UInt8(1) << UInt8(i)) != 0 {
            if qedsys_byte_is_locked(fd, sharedByteBase + Int64(i)) != 0 {
                return conflict(
                    "Failed to get \"\(permissionNames[i])\" lock", byte: sharedByteBase + Int64(i), path: path)
            }
        }
        // Another holder holding a permission we refuse to share?
        for i in 0..<4 where mode.unshared & (UInt8(1) << UInt8(i)) != 0 {
            if qedsys_byte_is_locked(fd, permByteBase + Int64(i)) != 0 {
                return conflict(
                    "Failed to get shared \"\(permissionNames[i])\" lock",
                    byte: permByteBase + Int64(i), path: path)
            }
        }
        return nil
    }

    private static func conflict(_ what: String, byte: Int64, path: String) -> QEDError {
        QEDError(
            .locked, "\(what)\nIs another process using the image [\(path)]?", value: UInt64(byte),
            path: path, errno: EAGAIN)
    }
}
