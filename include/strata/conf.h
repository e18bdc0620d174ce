/* conf: the in-memory configuration model: pools from the YAML pool file
 * (twemproxy's keys plus Strata's tiers) and process settings from the
 * libconfig daemon settings file. */
#ifndef STRATA_CONF_H
#define STRATA_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "strata/hashkit.h"

/* twemproxy's defaults (nc_conf.h) and ours. */
#define CONF_DEFAULT_HASH                 HASHKIT_HASH_FNV1A_64
#define CONF_DEFAULT_DIST                 HASHKIT_DIST_KETAMA
#define CONF_DEFAULT_TIMEOUT_MS           -1     /* none, as twemproxy */
#define CONF_DEFAULT_BACKLOG              512
#define CONF_DEFAULT_CLIENT_CONNECTIONS   0      /* unlimited */
#define CONF_DEFAULT_SERVER_CONNECTIONS   1
#define CONF_DEFAULT_SERVER_RETRY_MS      30000
#define CONF_DEFAULT_SERVER_FAILURE_LIMIT 2
#define CONF_DEFAULT_BACKFILL_TTL         0
#define CONF_DEFAULT_SENTINEL_INTERVAL_MS 1000
#define CONF_DEFAULT_SENTINEL_TIMEOUT_MS  1000

struct conf_addr {
    char     *host;       /* host name or address; NULL for a unix socket */
    uint16_t  port;
    char     *path;       /* unix socket path; NULL for TCP */
    char     *resolved;   /* host's address pinned by dns_app (numeric);
                             NULL: host is resolved where it is used */
};

struct conf_listen {
    struct conf_addr addr;
    mode_t           perm;     /* unix socket permissions, 0 if not given */
    char            *text;     /* as written, e.g. "127.0.0.1:22121" */
};

struct conf_server {
    struct conf_addr addr;
    uint32_t         weight;
    char            *name;     /* optional name, NULL if not given */
    char            *text;     /* "host:port:weight" as written (no name) */
    int              line;     /* line in the pool file */
};

/* One tier: a set of servers with its own routing and failure settings.
 * Settings a tier does not give are inherited from its pool. */
struct conf_tier {
    struct conf_server *servers;
    uint32_t            nservers;
    enum hashkit_hash   hash;
    enum hashkit_dist   distribution;
    char                hash_tag[2];         /* valid if has_hash_tag */
    bool                has_hash_tag;
    int                 timeout_ms;          /* -1: none */
    uint32_t            server_connections;
    bool                auto_eject_hosts;
    int64_t             server_retry_timeout_ms;
    uint32_t            server_failure_limit;
};

struct conf_pool {
    char              *name;
    int                line;
    struct conf_listen listen;
    /* twemproxy's pool keys */
    enum hashkit_hash  hash;
    char               hash_tag[2];
    bool               has_hash_tag;
    enum hashkit_dist  distribution;
    int                timeout_ms;
    int                backlog;
    bool               preconnect;
    bool               redis;
    char              *redis_auth;
    int                redis_db;
    uint32_t           server_connections;
    bool               auto_eject_hosts;
    int64_t            server_retry_timeout_ms;
    uint32_t           server_failure_limit;
    uint32_t           client_connections;   /* 0: unlimited */
    bool               tcpkeepalive;
    /* Strata's pool keys */
    bool               allow_flush;          /* forward flush_all */
    uint32_t           backfill_ttl;         /* seconds, 0: no expiry */
    bool               tiered;               /* master: given */
    struct conf_tier   master;               /* `servers:` of a plain pool */
    struct conf_tier  *slave;                /* NULL if none */
    struct conf_tier  *l1;
    uint32_t           nl1;
    struct conf_tier  *replicas;
    uint32_t           nreplicas;
    /* Redis pools: `slaves:`, a list of tiers, each one copy of every
     * master shard (same names and weights, named "slaves[0]", ...);
     * reads go to them unless `read_from: master`. */
    struct conf_tier  *slaves;
    uint32_t           nslaves;
    bool               read_from_master;
    /* As loaded: slaves[k].servers[i] is the copy of master.servers[i]
     * (the loader puts each slave tier in master's order), so route on
     * master and take the same index; slave tiers carry master's hash,
     * distribution and hash_tag. read_from_master is true whenever
     * nslaves is 0. */
    /* Redis pools that follow Sentinel (docs/configuration.md,
     * "Sentinel"): nsentinels > 0. master.servers[i] is named
     * master_names[i] (the shard keeps its ketama point across a
     * failover); its address is what the Sentinels say (sentinel_app
     * fills it in before a configuration runs; as loaded it is the
     * placeholder 0.0.0.0:0). With sentinel_read_replicas the replicas
     * the Sentinels list become `slaves` tiers. */
    struct conf_server *sentinels;           /* host:port, weight unused */
    uint32_t           nsentinels;
    char             **master_names;
    uint32_t           nmaster_names;
    char              *sentinel_auth;        /* AUTH to the Sentinels; NULL: none */
    bool               sentinel_read_replicas;
    int                sentinel_interval_ms; /* poll period */
    int                sentinel_timeout_ms;  /* connect and reply, per Sentinel */
};

struct conf {
    char             *path;
    struct conf_pool *pools;
    uint32_t          npools;
};

/* Parses and validates the pool file at `path`. On error returns -1,
 * writes "FILE:LINE: message" into err and leaves *out NULL. */
int conf_yaml_load(const char *path, struct conf **out, char *err, size_t errlen);
/* The same loader and validation for a pool file held in memory (the
 * text of a ZooKeeper node): `len` bytes of `text`, NUL not needed;
 * `origin` (e.g. a zk:// URL) takes the place of FILE in "ORIGIN:LINE:
 * message" and becomes conf->path. */
int conf_yaml_load_text(const char *text, size_t len, const char *origin,
                        struct conf **out, char *err, size_t errlen);
void conf_destroy(struct conf **conf);
/* The pool of `conf` named `name`, or NULL (conf_copy.c). */
struct conf_pool *conf_pool_find(const struct conf *conf, const char *name);
/* A deep copy of `conf` (conf_copy.c), or NULL when out of memory. */
struct conf *conf_copy(const struct conf *conf);
/* Frees what a tier owns and zeroes it (conf_yaml.c). */
void conf_tier_deinit(struct conf_tier *tier);

/* Process-level settings: defaults, then the -C file, then the command
 * line. */
/* fence_replies: where the meta no-op goes (the values of proto_mc.h's
 * enum mc_fence). */
#define SETTINGS_FENCE_OFF     0
#define SETTINGS_FENCE_REQUEST 1
#define SETTINGS_FENCE_BATCH   2

struct settings {
    char    *conf_file;          /* -c, pool file */
    uint32_t workers;            /* 0: number of online cores */
    bool     daemonize;          /* -d */
    int      log_level;          /* -v, 0..11 as nutcracker */
    char    *log_file;           /* -o, NULL: stderr */
    char    *pid_file;           /* -p, NULL: none */
    char    *user;               /* -u, NULL: keep the starting user */
    char    *stats_addr;         /* -a */
    uint16_t stats_port;         /* -s */
    int      stats_interval_ms;  /* -i */
    size_t   mbuf_size;          /* -m, read chunk size in bytes */
    uint32_t max_value_size;     /* largest value a client may store */
    size_t   max_line_size;      /* longest request line (multiget keys) */
    size_t   client_max_pending; /* reply bytes queued before reads pause */
    uint32_t async_queue_limit;  /* per worker and destination */
    size_t   max_reply_size;     /* largest reply one retrieval may gather */
    /* Redis pools: Redis's own limits, not memcached's (values of 512 MB) */
    uint32_t redis_max_value_size;   /* one bulk of a request */
    size_t   redis_max_request_size; /* one whole request */
    size_t   redis_max_reply_size;   /* one whole reply (a split MGET's too) */
    size_t   max_memory;         /* buffered bytes of the process; 0: default */
    int      client_request_timeout_ms; /* a partial request may idle; 0: none */
    uint32_t max_clients;        /* client connections of the process; 0: default */
    uint32_t reload_max_server_loss; /* percent of a tier's servers one reload
                                    may remove (conf_guard); 100: any */
    bool     share_listen_ports; /* skip the start-up probe that refuses a
                                    port another process listens on */
    int      backend_stats_interval_ms; /* the servers' own stats collected
                                    (backend_stats); 0: never */
    /* -c zk://HOST:PORT/PATH (the configuration center) */
    char    *zk_cache_file;      /* last good pool file; NULL: per stats port */
    int      zk_session_timeout_ms; /* ZooKeeper session; also the start-up wait */
    bool     zk_register;        /* register this proxy under PATH/proxies */
    char    *zk_auth_file;       /* digest USER:PASSWORD for ZooKeeper; NULL: none */
    char    *zk_acl;             /* ACL of the nodes Strata creates; NULL: default */
    char    *unix_socket_dir;    /* where a unix listen from ZooKeeper may be; NULL: nowhere */
    int      fence_replies;      /* memcached servers: SETTINGS_FENCE_* */
    bool     redis_fence_replies; /* Redis servers: an ECHO fence per batch */
    char    *metrics_listen;     /* Prometheus HOST:PORT; NULL: off */
    int      dns_refresh_interval_ms; /* server host names re-resolved; 0: off */
};

/* No -c and no pool_file: the pool file is the first of these that exists
 * (settings_conf_file_default): the installed daemon's, Debian's
 * nutcracker's, and twemproxy's own default, relative to the working
 * directory (a source tree); else the first. */
#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define SETTINGS_DEFAULT_CONF_FILES \
    { SYSCONFDIR "/strata/pools.yml", "/etc/nutcracker/nutcracker.yml", "conf/nutcracker.yml" }
#define SETTINGS_DEFAULT_LOG_LEVEL      5
#define SETTINGS_DEFAULT_STATS_ADDR     "0.0.0.0"
#define SETTINGS_DEFAULT_STATS_PORT     22222
#define SETTINGS_DEFAULT_STATS_INTERVAL 30000
#define SETTINGS_DEFAULT_MBUF_SIZE      16384
#define SETTINGS_DEFAULT_MAX_VALUE      (1024 * 1024)
#define SETTINGS_DEFAULT_MAX_LINE       (256 * 1024)
#define SETTINGS_DEFAULT_CLIENT_PENDING (4 * 1024 * 1024)
#define SETTINGS_DEFAULT_ASYNC_QUEUE    10000
#define SETTINGS_DEFAULT_MAX_REPLY      (64 * 1024 * 1024)
/* Redis's proto-max-bulk-len and client-query-buffer-limit */
#define SETTINGS_DEFAULT_REDIS_MAX_VALUE   (512 * 1024 * 1024)
#define SETTINGS_DEFAULT_REDIS_MAX_REQUEST (1024 * 1024 * 1024)
#define SETTINGS_DEFAULT_REDIS_MAX_REPLY   (1024 * 1024 * 1024)
#define SETTINGS_DEFAULT_MAX_MEMORY     0   /* a quarter of physical memory */
#define SETTINGS_DEFAULT_REQUEST_TIMEOUT 30000   /* ms */
#define SETTINGS_DEFAULT_RELOAD_MAX_SERVER_LOSS 49   /* percent: half refused */
#define SETTINGS_DEFAULT_BACKEND_STATS_INTERVAL 0     /* ms; off: it opens connections */
#define SETTINGS_DEFAULT_ZK_SESSION_TIMEOUT 10000 /* ms */
#define SETTINGS_DEFAULT_DNS_REFRESH_INTERVAL 30000 /* ms; dns_app */
#define SETTINGS_DEFAULT_FENCE       SETTINGS_FENCE_OFF   /* docs/benchmarks.md, issue 14 */
#define SETTINGS_DEFAULT_REDIS_FENCE true                 /* docs/benchmarks.md, issue 14 */
/* Without zk_cache_file the cache is DIR/zk-<stats port>.yml: one file
 * per proxy on a host (two proxies cannot share a stats port), found at
 * the same place after every restart. */
#define SETTINGS_DEFAULT_ZK_CACHE_DIR   "/var/lib/strata"

/* Fills defaults (strings are heap copies); conf_file is NULL until -c,
 * pool_file or settings_conf_file_default sets it. */
void settings_init(struct settings *s);
/* When no pool file was given (conf_file NULL), sets conf_file to the
 * first of SETTINGS_DEFAULT_CONF_FILES that exists, else to the first;
 * `as_nutcracker` (the binary runs under the name nutcracker, as in place
 * of /usr/sbin/nutcracker under Debian's nutcracker.service) tries
 * Debian's nutcracker's file first. */
void settings_conf_file_default(struct settings *s, bool as_nutcracker);
void settings_deinit(struct settings *s);
/* Overrides fields with the keys present in the libconfig file at `path`.
 * Unknown keys and bad values are errors: -1, "FILE:LINE: message". */
int settings_load(struct settings *s, const char *path, char *err, size_t errlen);
/* The ZooKeeper cache file: zk_cache_file, or the per-stats-port default
 * under SETTINGS_DEFAULT_ZK_CACHE_DIR (call once the command line is
 * applied). */
void settings_zk_cache_file(const struct settings *s, char *buf, size_t len);

#endif
