/* fuzz_memfd: hands a fuzz input to a loader that opens a path, without
 * touching the disk: the bytes go into a memfd named by /proc/self/fd/N. */
#ifndef STRATA_FUZZ_MEMFD_H
#define STRATA_FUZZ_MEMFD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Writes d[0..n) into a new memfd and its path into path. Returns the fd
 * (the caller closes it); aborts on failure, which is no finding. */
static inline int fuzz_memfd(const uint8_t *d, size_t n, char *path, size_t pathlen)
{
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    size_t off = 0;

    if (fd < 0)
        abort();
    while (off < n) {
        ssize_t w = write(fd, d + off, n - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    snprintf(path, pathlen, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
