/* util: clocks, address resolution, checked allocation. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "strata/log.h"
#include "strata/util.h"

int64_t util_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_wall_s(void)
{
    return (int64_t)time(NULL);
}

static int resolve_unix(const char *path, struct sockaddr_storage *ss,
                        socklen_t *len, char *err, size_t errlen)
{
    struct sockaddr_un *un = (struct sockaddr_un *)ss;
    if (strlen(path) >= sizeof(un->sun_path)) {
        snprintf(err, errlen, "unix socket path too long: %s", path);
        return -1;
    }
    memset(un, 0, sizeof(*un));
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, path);
    *len = sizeof(*un);
    return 0;
}

int util_resolve(const struct conf_addr *addr, struct sockaddr_storage *ss,
                 socklen_t *len, char *err, size_t errlen)
{
    if (addr->path != NULL)
        return resolve_unix(addr->path, ss, len, err, errlen);

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV | AI_PASSIVE };
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)addr->port);
    const char *host = addr->resolved != NULL ? addr->resolved : addr->host;
    if (addr->resolved != NULL)
        hints.ai_flags |= AI_NUMERICHOST;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(err, errlen, "cannot resolve '%s': %s", addr->host,
                 rc != 0 ? gai_strerror(rc) : "no address");
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

bool util_secret_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)(a[i] ^ b[blen > 0 ? i % blen : 0]);
    return diff == 0;
}

void *util_xrealloc(void *p, size_t n, size_t size)
{
    void *q = realloc(p, (n == 0 ? 1 : n) * (size == 0 ? 1 : size));
    if (q == NULL) {
        log_error("out of memory allocating %zu x %zu bytes", n, size);
        abort();
    }
    return q;
}

void *util_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n == 0 ? 1 : n, size == 0 ? 1 : size);
    if (p == NULL) {
        log_error("out of memory allocating %zu x %zu bytes", n, size);
        abort();
    }
    return p;
}

char *util_xstrdup(const char *s)
{
    char *p = strdup(s);
    if (p == NULL) {
        log_error("out of memory");
        abort();
    }
    return p;
}

size_t util_default_max_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || size <= 0)
        return (size_t)1 << 30;
    return (size_t)pages / 4 * (size_t)size;
}
