// Thin wrappers for Linux calls that Swift's Glibc module does not expose (they need _GNU_SOURCE):
// fallocate hole punching, SEEK_DATA/SEEK_HOLE, and open-file-description (OFD) byte locks.
// Every function returns what the syscall returns (-1 with errno set on failure).
#ifndef QEDSYS_H
#define QEDSYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <endian.h>

/// Deallocates [offset, offset+length) keeping the file size. errno EOPNOTSUPP where unsupported.
int qedsys_punch_hole(int fd, long long offset, long long length);
/// Zeroes [offset, offset+length) in the file system (no data written), keeping the size.
int qedsys_zero_range(int fd, long long offset, long long length);
/// lseek(SEEK_DATA); -1/ENXIO when no data follows `offset`.
long long qedsys_seek_data(int fd, long long offset);
/// lseek(SEEK_HOLE); the end of file counts as a hole.
long long qedsys_seek_hole(int fd, long long offset);
/// Takes (shared = 1) or drops (shared = 0) a read lock on one byte, as an OFD lock when the
/// system has them, else a POSIX lock. Non-blocking: -1/EAGAIN on conflict.
int qedsys_lock_byte(int fd, long long byte, int shared);
/// Whether another open file description holds a lock on `byte` that would block a write lock:
/// 1 = held by someone else, 0 = free, -1 = error.
int qedsys_byte_is_locked(int fd, long long byte);
/// Allocates [offset, offset+length) as unwritten extents (reading zero), keeping the size.
int qedsys_preallocate(int fd, long long offset, long long length);
/// Writes up to `length` bytes at `offset` and makes them durable, with the metadata needed to
/// read them back (the file size), before returning — not the file's other dirty pages (pwritev2
/// RWF_DSYNC, Linux 4.7+: a ranged fdatasync). -1/EOPNOTSUPP where the system has no such write.
long long qedsys_pwrite_durable(int fd, const void *buffer, size_t length, long long offset);
/// Maps `length` bytes of `fd` at `offset` (a multiple of the page size) read-only and shared.
/// NULL on failure.
void *qedsys_map_read(int fd, long long offset, size_t length);
/// Fills the page tables for [address, address+length) of a mapping (MADV_POPULATE_READ, Linux
/// 5.14+), reading pages in as needed; -1 where the system cannot (faults then do it).
int qedsys_populate_read(void *address, size_t length);
/// Unmaps what qedsys_map_read mapped.
int qedsys_unmap(void *address, size_t length);
/// Reads up to `length` bytes at `offset` only from the page cache (preadv2 RWF_NOWAIT, Linux
/// 4.14+): -1/EAGAIN when that would wait for the disk, and where the system has no such read.
long long qedsys_pread_cached(int fd, void *buffer, size_t length, long long offset);
/// 1 if locks are OFD (per open file description), 0 if POSIX (per process).
int qedsys_has_ofd_locks(void);

/// Atomic 64-bit load with acquire ordering (table entries read without the table lock).
static inline uint64_t qedsys_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
/// Atomic 64-bit store with release ordering (table entries written under the table lock).
static inline void qedsys_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/// Index of the first entry of p[from..<end] that is not `value` (acquire loads), or `end`. One
/// tight loop: skipping the empty stretches of a big table without a Swift call per entry.
static inline size_t qedsys_find_unequal_u64(const uint64_t *p, size_t from, size_t end, uint64_t value) {
    size_t i = from;
    while (i < end && __atomic_load_n(p + i, __ATOMIC_ACQUIRE) == value) i++;
    return i;
}
/// Index of the first little-endian entry of p[from..<end] above 1 (neither unallocated nor a
/// zero cluster), or `end`: the check's skip over the empty part of an L2 table.
static inline size_t qedsys_find_allocated_le64(const uint64_t *p, size_t from, size_t end) {
    size_t i = from;
    while (i < end && le64toh(p[i]) <= 1) i++;
    return i;
}

#endif
