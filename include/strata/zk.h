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
    int      world_perms; /* ZK_PERM_* anyone has on it; -1: not known */
};

/* ZooKeeper's permission bits (zookeeper.h's ZOO_PERM_*, the server's). */
#define ZK_PERM_READ    1
#define ZK_PERM_WRITE   2
#define ZK_PERM_CREATE  4
#define ZK_PERM_DELETE  8
#define ZK_PERM_ADMIN   16
#define ZK_PERM_ALL     31
/* Entries of one ACL at most, and the longest credentials file. */
#define ZK_ACL_MAX      16
#define ZK_AUTH_MAX     1024
/* The ACL of the nodes Strata creates when zk_acl is not set: anyone
 * (ZOO_OPEN_ACL_UNSAFE, warned about), or, with credentials, only the
 * identity that created the node (ZOO_CREATOR_ALL_ACL). */
#define ZK_ACL_OPEN     "world:anyone:cdrwa"
#define ZK_ACL_CREATOR  "auth::cdrwa"

/* One ACL entry, "scheme:id:perms" as zkCli writes it. */
struct zk_acl_entry {
    char *scheme;   /* world, auth, digest, ip, sasl, x509 */
    char *id;       /* "anyone", "user:base64(sha1)", "10.0.0.0/8", "" (auth) */
    int   perms;    /* ZK_PERM_* */
};

struct zk_acl {
    struct zk_acl_entry entries[ZK_ACL_MAX];
    uint32_t            n;
};

/* Who Strata is to ZooKeeper and what it gives the nodes it creates. */
struct zk_access {
    const char          *auth;   /* digest "user:password", or NULL */
    const struct zk_acl *acl;    /* for every node created; never NULL */
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
/* 0 if the node's text fits a pool file in ZooKeeper (ZK_MAX_DATA
 * bytes), else -1 with err naming its size and version. */
int zk_node_check(const struct zk_node *node, char *err, size_t errlen);

/* Parses "scheme:id:perms[,scheme:id:perms...]" (perms: letters of
 * "cdrwa"; the id is everything between the first and the last ':').
 * Returns 0 with *out filled (heap strings), or -1 with err and *out
 * empty. */
int zk_acl_parse(const char *text, struct zk_acl *out, char *err, size_t errlen);
void zk_acl_deinit(struct zk_acl *acl);
/* The permissions anyone who reaches ZooKeeper has by `acl`:
 * world:anyone entries and ip entries for a /0 network. */
int zk_acl_world_perms(const struct zk_acl *acl);
/* True if `perms` let the holder change a node (write, create, delete,
 * or admin, which can change the ACL itself). */
bool zk_perms_writable(int perms);
/* "cdrwa"-style text of `perms` into buf (at least 6 bytes). */
void zk_perms_text(int perms, char *buf);
/* The credentials "user:password" of a digest identity from the text of
 * a credentials file (one line; a final newline is dropped). Returns 0
 * with *out (heap), or -1 with err, which never quotes the secret. */
int zk_auth_parse(const char *text, size_t len, char **out, char *err, size_t errlen);
/* zk_auth_parse of the file at `path`, which must not be readable or
 * writable by other users. */
int zk_auth_load(const char *path, char **out, char *err, size_t errlen);

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
int zk_read(const struct zk_url *url, const struct zk_access *access, int timeout_ms,
            struct zk_node *out, char *err, size_t errlen);

/* Writes `len` bytes of `text` to the node: reads its version V and sets
 * the data only if the node is still at V; `expect` (ZK_ANY_VERSION or
 * the version the operator last read) must equal V. A missing node is
 * created with its parents (only when expect is ZK_ANY_VERSION), with
 * access->acl; an existing node keeps its ACL. Returns 0 with *out
 * (version: the new one; world_perms: what anyone may do to the node
 * now), or -1 with err (changed meanwhile, unreachable, not allowed).
 * Blocks at most about timeout_ms. */
int zk_publish(const struct zk_url *url, const struct zk_access *access, const char *text,
               size_t len, int32_t expect, int timeout_ms, struct zk_node *out,
               char *err, size_t errlen);

/* ---- the watched source (main thread) ---------------------------------- */

/* Called on the main thread with every new text of the node (after each
 * change, and after each new session or reconnection: the caller skips a
 * text it already runs). The node is the callee's to keep or deinit. */
typedef void (*zk_node_fn)(struct zk_node *node, void *arg);

struct zk_source;

/* Starts a session to url->hosts on `base` and watches the node; never
 * blocks (ZooKeeper being away is handled inside: connection loss keeps
 * retrying, a session expiry starts a new session with backoff). Every
 * session authenticates with access->auth before its first request;
 * registration nodes get access->acl (`access` and what it points to
 * must outlive the source). Returns
 * NULL with err only when the client cannot be set up at all. */
struct zk_source *zk_source_create(struct event_base *base, const struct zk_url *url,
                                   const struct zk_access *access, int session_timeout_ms,
                                   zk_node_fn fn, void *arg, char *err, size_t errlen);
/* Closes the session (its ephemeral registration disappears at once) and
 * frees the source; accepts NULL; sets *src to NULL. */
void zk_source_destroy(struct zk_source **src);
/* Creates or updates the ephemeral node `path` with `json`, now if
 * connected and again after every reconnection and new session. */
void zk_source_register(struct zk_source *src, const char *path, const char *json);
/* Whether the session is connected now (main thread; false for NULL). */
bool zk_source_connected(const struct zk_source *src);

#endif
