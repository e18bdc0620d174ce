/* zk: ZooKeeper as the configuration center. One job: the pool file's
 * YAML text held in one znode. Parses zk:// URLs, reads the node (once,
 * or watched), registers this proxy as an ephemeral node beside it, and
 * publishes a new text with a version check. Knows nothing of reloads:
 * the caller validates and applies what it is handed.
 *
 *   ZooKeeper threads (io, completion)        main thread (event_base)
 *   watcher / completions ──► slot (mutex) ──► event_active ──► zk_source_on_wake
 *                                                                ├─► zk_node_fn(text, version)
 *                                                                └─► next read, new session, logs
 *
 * Node layout for -c zk://HOSTS/PATH:
 *   PATH                      the pool file's YAML text (persistent)
 *   PATH/proxies              persistent parent, created when missing
 *   PATH/proxies/HOST:STATS   one ephemeral node per running proxy (JSON) */
#ifndef STRATA_ZK_H
#define STRATA_ZK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conf;
struct event_base;

#define ZK_URL_SCHEME   "zk://"
#define ZK_PROXIES      "proxies"     /* PATH/proxies: the registrations */
#define ZK_ANY_VERSION  (-1)
/* ZooKeeper's default jute.maxbuffer is 1 MiB per request: a node's data
 * must leave room for the request's framing. */
#define ZK_MAX_DATA     (1000 * 1000)

/* zk://HOST:PORT[,HOST:PORT...]/PATH */
struct zk_url {
    char *hosts;   /* "h1:2181,h2:2181", as zookeeper_init takes it */
    char *path;    /* "/strata/pools": absolute, no trailing slash */
};

/* A node's data as read. */
struct zk_node {
    char    *text;     /* the data, NUL-terminated (not counted in len) */
    size_t   len;
    int32_t  version;  /* the node's data version */
};

/* What a registration node says about a proxy. */
struct zk_reg_info {
    const struct conf *conf;        /* the running configuration */
    const char        *host;        /* gethostname() */
    long               pid;
    const char        *stats_addr;
    uint16_t           stats_port;
    const char        *version;     /* Strata's */
    uint64_t           generation;  /* the running configuration's */
    const char        *source;      /* where it came from: the URL */
};

/* True if `s` is a zk:// URL (the -c argument). */
bool zk_url_is(const char *s);
/* Parses `s` into *out (heap strings). Returns 0, or -1 with err and *out
 * left empty. */
int zk_url_parse(const char *s, struct zk_url *out, char *err, size_t errlen);
void zk_url_deinit(struct zk_url *url);

void zk_node_deinit(struct zk_node *node);

/* "PATH/proxies/HOST:STATS_PORT" into buf; -1 if it does not fit. */
int zk_reg_path(const struct zk_url *url, const char *host, uint16_t stats_port,
                char *buf, size_t len);
/* The registration node's JSON (heap, NUL-terminated). */
char *zk_reg_json(const struct zk_reg_info *info);

/* False when built without libzookeeper_mt (--without-zookeeper): every
 * call below then fails with "built without ZooKeeper support". */
bool zk_supported(void);

/* Connects, reads the node once and closes the session, waiting at most
 * timeout_ms in all. Returns 0 with *out filled, or -1 with err (a
 * missing node, ZooKeeper unreachable). Any thread; blocks. */
int zk_read(const struct zk_url *url, int timeout_ms, struct zk_node *out,
            char *err, size_t errlen);

/* Writes `len` bytes of `text` to the node: reads its version V and sets
 * the data only if the node is still at V; `expect` (ZK_ANY_VERSION or
 * the version the operator last read) must equal V. A missing node is
 * created with its parents (only when expect is ZK_ANY_VERSION). Returns
 * 0 with *new_version, or -1 with err (changed meanwhile, unreachable).
 * Blocks at most about timeout_ms. */
int zk_publish(const struct zk_url *url, const char *text, size_t len, int32_t expect,
               int timeout_ms, int32_t *new_version, char *err, size_t errlen);

/* ---- the watched source (main thread) ---------------------------------- */

/* Called on the main thread with every new text of the node (after each
 * change, and after each new session or reconnection: the caller skips a
 * text it already runs). The node is the callee's to keep or deinit. */
typedef void (*zk_node_fn)(struct zk_node *node, void *arg);

struct zk_source;

/* Starts a session to url->hosts on `base` and watches the node; never
 * blocks (ZooKeeper being away is handled inside: connection loss keeps
 * retrying, a session expiry starts a new session with backoff). Returns
 * NULL with err only when the client cannot be set up at all. */
struct zk_source *zk_source_create(struct event_base *base, const struct zk_url *url,
                                   int session_timeout_ms, zk_node_fn fn, void *arg,
                                   char *err, size_t errlen);
/* Closes the session (its ephemeral registration disappears at once) and
 * frees the source; accepts NULL; sets *src to NULL. */
void zk_source_destroy(struct zk_source **src);
/* Creates or updates the ephemeral node `path` with `json`, now if
 * connected and again after every reconnection and new session. */
void zk_source_register(struct zk_source *src, const char *path, const char *json);

#endif
