/* util: small helpers shared by the runtime modules. */
#ifndef STRATA_UTIL_H
#define STRATA_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "strata/conf.h"

#define UTIL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Milliseconds on the monotonic clock. */
int64_t util_now_ms(void);
/* Seconds since the epoch. */
int64_t util_wall_s(void);

/* Resolves a TCP host:port or a unix path into *ss: the address pinned
 * in addr->resolved when there is one (no lookup), else addr->host.
 * Returns 0, or -1 with a reason in err. */
int util_resolve(const struct conf_addr *addr, struct sockaddr_storage *ss,
                 socklen_t *len, char *err, size_t errlen);

/* xorshift64: cheap per-worker randomness (random distribution, L1
 * choice); *state must not be 0. Returns the high 32 bits. */
static inline uint32_t util_xorshift(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return (uint32_t)(x >> 32);
}

/* A quarter of the machine's physical memory (sysconf), or 1 GB when it
 * cannot be known: the default of max_memory. */
size_t util_default_max_memory(void);

/* Whether a[0..alen) equals b[0..blen), in a time that depends on the
 * lengths only (passwords: no early exit at the first differing byte). */
bool util_secret_equal(const char *a, size_t alen, const char *b, size_t blen);

/* Allocation that aborts on failure: the proxy cannot serve without it. */
void *util_xcalloc(size_t n, size_t size);
void *util_xrealloc(void *p, size_t n, size_t size);
char *util_xstrdup(const char *s);

#endif
