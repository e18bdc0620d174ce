/* dns: server host names followed (docs/operations.md, "Host names
 * followed"), the part without threads or events: which servers are
 * written with a host name, what one lookup answers, which address a
 * server keeps, and the configuration that moves the servers whose name
 * now resolves elsewhere. dns_app runs it on the main thread. */
#ifndef STRATA_DNS_H
#define STRATA_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "strata/conf.h"

#define DNS_ADDR_LEN   INET6_ADDRSTRLEN  /* one numeric address, NUL included */
#define DNS_ADDRS_MAX  16                /* addresses kept from one answer */
#define DNS_WHY_LEN    160
#define DNS_LOOKUP_MS  5000              /* one lookup's bound; then it failed */

/* What one lookup of a host name gave. */
struct dns_answer {
    char     host[256];                       /* the name asked */
    bool     ok;                              /* false: failed, see why */
    uint32_t naddrs;                          /* >= 1 when ok */
    char     addrs[DNS_ADDRS_MAX][DNS_ADDR_LEN]; /* numeric, in the resolver's order */
    char     why[DNS_WHY_LEN];
};

/* A resolver: fills *out for `host` (out->host is set by the caller).
 * dns_resolve_system is the real one; a test passes its own. */
typedef void (*dns_resolve_fn)(const char *host, struct dns_answer *out);

/* getaddrinfo (TCP, any family; through getaddrinfo_a), addresses as
 * numeric text. Blocks for DNS_LOOKUP_MS at most: a lookup still running
 * then is abandoned (freed when it ends) and answered as failed. Only
 * off the main thread's event loop, or at start-up and reload. */
void dns_resolve_system(const char *host, struct dns_answer *out);

/* Whether `addr` is a TCP address written with a host name (not a
 * literal IPv4 or IPv6 address, not a unix path): the ones followed. */
bool dns_addr_is_name(const struct conf_addr *addr);

/* Whether the servers of `pool` are followed: every pool but those that
 * follow Sentinel (their addresses come from the Sentinels). */
bool dns_pool_followed(const struct conf_pool *pool);

/* The distinct host names of the followed servers of `conf`: a new
 * array of *n new strings (free each, then the array); NULL when none. */
char **dns_hosts(const struct conf *conf, uint32_t *n);
void dns_hosts_free(char ***hosts, uint32_t n);

/* The address a server resolved to `in_use` (NULL: none yet) should use
 * after `answer`: in_use while the answer still lists it (a name with
 * several addresses does not flap between them), else the answer's
 * first; NULL when the answer failed (keep the last address). */
const char *dns_pick(const char *in_use, const struct dns_answer *answer);

/* A copy of `running` in which every followed server whose host has an
 * answer among `answers` and whose dns_pick differs from its pinned
 * address is pinned to the new one (its text and name unchanged, so it
 * keeps its place on the ring); each move is logged at notice as "pool
 * P tier T server NAME: HOST now resolves to A (was B)". NULL when
 * nothing moves (or out of memory, logged). */
struct conf *dns_conf_follow(const struct conf *running, const struct dns_answer *answers,
                             uint32_t nanswers);

/* Pins every followed server of `conf` that is not pinned yet: to the
 * address a server of the same host has in `running` (may be NULL) or
 * in `conf` already, else to what `resolve` answers now (left unpinned
 * when that fails: it is then resolved where it is used, as without
 * following). Returns how many lookups it made. */
uint32_t dns_conf_pin(struct conf *conf, const struct conf *running, dns_resolve_fn resolve);

#endif
