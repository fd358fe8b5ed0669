#define _GNU_SOURCE
#include "qedsys.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

int qedsys_punch_hole(int fd, long long offset, long long length) {
#ifdef __linux__
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
#else
    (void)fd; (void)offset; (void)length; errno = EOPNOTSUPP; return -1;
#endif
}

int qedsys_zero_range(int fd, long long offset, long long length) {
#ifdef __linux__
    return fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
#else
    (void)fd; (void)offset; (void)length; errno = EOPNOTSUPP; return -1;
#endif
}

long long qedsys_seek_data(int fd, long long offset) {
#ifdef SEEK_DATA
    return (long long)lseek(fd, (off_t)offset, SEEK_DATA);
#else
    (void)fd; return offset;
#endif
}

long long qedsys_seek_hole(int fd, long long offset) {
#ifdef SEEK_HOLE
    return (long long)lseek(fd, (off_t)offset, SEEK_HOLE);
#else
    return (long long)lseek(fd, 0, SEEK_END);
#endif
}

int qedsys_has_ofd_locks(void) {
#ifdef F_OFD_SETLK
    return 1;
#else
    return 0;
#endif
}

int qedsys_lock_byte(int fd, long long byte, int shared) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)byte;
    fl.l_len = 1;
    fl.l_type = shared ? F_RDLCK : F_UNLCK;
#ifdef F_OFD_SETLK
    return fcntl(fd, F_OFD_SETLK, &fl);
#else
    return fcntl(fd, F_SETLK, &fl);
#endif
}

int qedsys_byte_is_locked(int fd, long long byte) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)byte;
    fl.l_len = 1;
    fl.l_type = F_WRLCK;
#ifdef F_OFD_GETLK
    int rc = fcntl(fd, F_OFD_GETLK, &fl);
#else
    int rc = fcntl(fd, F_GETLK, &fl);
#endif
    if (rc < 0) return -1;
    return fl.l_type == F_UNLCK ? 0 : 1;
}

void *qedsys_map_read(int fd, long long offset, size_t length) {
    void *p = mmap(NULL, length, PROT_READ, MAP_SHARED, fd, (off_t)offset);
    return p == MAP_FAILED ? NULL : p;
}

int qedsys_populate_read(void *address, size_t length) {
#if defined(__linux__)
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
    return madvise(address, length, MADV_POPULATE_READ);
#else
    (void)address; (void)length; errno = EINVAL; return -1;
#endif
}

int qedsys_unmap(void *address, size_t length) {
    return munmap(address, length);
}

int qedsys_preallocate(int fd, long long offset, long long length) {
#ifdef __linux__
    return fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
#else
    (void)fd; (void)offset; (void)length; errno = EOPNOTSUPP; return -1;
#endif
}

long long qedsys_pwrite_durable(int fd, const void *buffer, size_t length, long long offset) {
#if defined(__linux__) && defined(RWF_DSYNC)
    struct iovec iov = { .iov_base = (void *)buffer, .iov_len = length };
    return (long long)pwritev2(fd, &iov, 1, (off_t)offset, RWF_DSYNC);
#else
    (void)fd; (void)buffer; (void)length; (void)offset; errno = EOPNOTSUPP; return -1;
#endif
}

long long qedsys_pread_cached(int fd, void *buffer, size_t length, long long offset) {
#if defined(__linux__) && defined(RWF_NOWAIT)
    struct iovec iov = { .iov_base = buffer, .iov_len = length };
    return (long long)preadv2(fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
#else
    (void)fd; (void)buffer; (void)length; (void)offset; errno = EAGAIN; return -1;
#endif
}
