/* conf_yaml: the pool file. Loads twemproxy's YAML pool format, plus
 * Strata's tier keys, into the model of strata/conf.h and validates it.
 *
 * The whole file is first loaded as one libyaml document. Working on the
 * tree rather than on the event stream lets a pool's keys come in any
 * order (settings are applied before servers and tiers, because those
 * inherit them) and lets validation point at the line of any key.
 *
 *   file or text ─► libyaml document ─► per pool: check keys ─► apply settings
 *        ─► check kind (memcached or redis keys) ─► check shape (servers
 *        vs tiers) ─► apply servers/tiers ─► validate pool (redis: slaves
 *        match master) ─► finish (defaults known only now)
 *        ─► validate across pools ─► struct conf
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <yaml.h>

#include "strata/conf.h"

/* memcached reads an exptime above 30 days as a unix timestamp, so a
 * larger backfill_ttl would make written-back values expire at once. */
#define CONF_MAX_BACKFILL_TTL 2592000
/* twemproxy keeps numbers in an int. */
#define CONF_MAX_NUM          INT_MAX
/* libmemcached's rule, kept by twemproxy: port 11211 is left out of an
 * unnamed server's name. */
#define CONF_KETAMA_PORT      11211
#define CONF_WHERE_LEN        256
#define CONF_IDENT_LEN        512

#define CONF_FIELD(base, off, type) ((type *)(void *)((char *)(base) + (off)))

/* Loader state; the document lives until the end of conf_parse. */
struct conf_ctx {
    const char      *path;                  /* file name for messages */
    yaml_document_t *doc;                   /* the loaded file */
    char            *err;                   /* caller's buffer */
    size_t           errlen;
    char             where[CONF_WHERE_LEN]; /* "pool 'a'", "pool 'b' tier 'l1[0]'" */
};

/* A pool's keys are applied in two phases: settings first, because the
 * servers and tiers that follow inherit them. */
enum conf_phase {
    CONF_PHASE_SETTING,
    CONF_PHASE_TIER,
};

/* One accepted key: twemproxy's conf_commands, with the phase added. */
struct conf_key {
    const char     *name;
    int           (*set)(struct conf_ctx *ctx, const struct conf_key *key,
                         yaml_node_t *value, void *base);
    size_t          offset;   /* field in struct conf_pool or conf_tier */
    size_t          aux;      /* second field: has_hash_tag, a tier count */
    enum conf_phase phase;
};

/* ---- messages ---------------------------------------------------------- */

static int conf_line(const yaml_node_t *node)
{
    return node != NULL ? (int)node->start_mark.line + 1 : 0;
}

/* Writes "FILE:LINE: message" into the caller's buffer; returns -1 so
 * that callers can `return conf_error_at(...)`. */
static int conf_verror(struct conf_ctx *ctx, int line, const char *fmt, va_list ap)
{
    if (ctx->err == NULL || ctx->errlen == 0) {
        return -1;
    }
    int n = snprintf(ctx->err, ctx->errlen, "%s:%d: ", ctx->path, line);
    if (n >= 0 && (size_t)n < ctx->errlen) {
        vsnprintf(ctx->err + n, ctx->errlen - (size_t)n, fmt, ap);
    }
    return -1;
}

__attribute__((format(printf, 3, 4)))
static int conf_error_at(struct conf_ctx *ctx, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conf_verror(ctx, line, fmt, ap);
    va_end(ap);
    return -1;
}

__attribute__((format(printf, 3, 4)))
static int conf_error(struct conf_ctx *ctx, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conf_verror(ctx, conf_line(node), fmt, ap);
    va_end(ap);
    return -1;
}

static int conf_nomem(struct conf_ctx *ctx, const yaml_node_t *node)
{
    return conf_error(ctx, node, "out of memory in %s", ctx->where);
}

/* Appends " tier 'name'" to ctx->where; returns the length to give back
 * to conf_where_pop. */
static size_t conf_where_push(struct conf_ctx *ctx, const char *name)
{
    size_t len = strlen(ctx->where);
    snprintf(ctx->where + len, sizeof(ctx->where) - len, " tier '%s'", name);
    return len;
}

static void conf_where_pop(struct conf_ctx *ctx, size_t len)
{
    ctx->where[len] = '\0';
}

/* ---- document helpers -------------------------------------------------- */

static yaml_node_t *conf_node(struct conf_ctx *ctx, int index)
{
    return yaml_document_get_node(ctx->doc, index);
}

/* The text of a scalar node, or NULL for a mapping, a sequence, or a
 * scalar with an embedded NUL (which C strings cannot carry). */
static const char *conf_scalar(const yaml_node_t *node)
{
    if (node == NULL || node->type != YAML_SCALAR_NODE) {
        return NULL;
    }
    const char *s = (const char *)node->data.scalar.value;
    return strlen(s) == node->data.scalar.length ? s : NULL;
}

static size_t conf_map_size(const yaml_node_t *map)
{
    return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

static size_t conf_seq_size(const yaml_node_t *seq)
{
    return (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

static yaml_node_t *conf_seq_item(struct conf_ctx *ctx, const yaml_node_t *seq, size_t i)
{
    return conf_node(ctx, seq->data.sequence.items.start[i]);
}

/* The key node of `name` in mapping `map`, or NULL. */
static yaml_node_t *conf_map_key(struct conf_ctx *ctx, const yaml_node_t *map, const char *name)
{
    for (size_t i = 0; map != NULL && i < conf_map_size(map); i++) {
        yaml_node_t *key = conf_node(ctx, map->data.mapping.pairs.start[i].key);
        const char *s = conf_scalar(key);
        if (s != NULL && strcmp(s, name) == 0) {
            return key;
        }
    }
    return NULL;
}

/* The value node of `name` in mapping `map`, or NULL. */
static yaml_node_t *conf_map_value(struct conf_ctx *ctx, const yaml_node_t *map, const char *name)
{
    for (size_t i = 0; map != NULL && i < conf_map_size(map); i++) {
        yaml_node_pair_t *pair = &map->data.mapping.pairs.start[i];
        const char *s = conf_scalar(conf_node(ctx, pair->key));
        if (s != NULL && strcmp(s, name) == 0) {
            return conf_node(ctx, pair->value);
        }
    }
    return NULL;
}

/* ---- value parsing ----------------------------------------------------- */

/* "key 'timeout' in pool 'alpha' is not a number: 'abc'" */
static int conf_bad(struct conf_ctx *ctx, const char *name, const yaml_node_t *node,
                    const char *reason)
{
    const char *v = conf_scalar(node);
    if (v != NULL) {
        return conf_error(ctx, node, "key '%s' in %s %s: '%s'", name, ctx->where, reason, v);
    }
    return conf_error(ctx, node, "key '%s' in %s %s", name, ctx->where, reason);
}

/* The scalar text of a key's value, or NULL after writing an error. */
static const char *conf_text(struct conf_ctx *ctx, const char *name, const yaml_node_t *node)
{
    const char *v = conf_scalar(node);
    if (v == NULL && node->type == YAML_SCALAR_NODE) {
        conf_bad(ctx, name, node, "contains a NUL character");
    } else if (v == NULL) {
        conf_bad(ctx, name, node, "must be a single value, not a list or a mapping");
    }
    return v;
}

static bool conf_all_digits(const char *s, size_t len)
{
    if (len == 0) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
    }
    return true;
}

/* Decimal digits s[0..len) as a number; stops above `cap` and returns
 * cap + 1 so that overflow cannot happen. */
static uint64_t conf_atou(const char *s, size_t len, uint64_t cap)
{
    uint64_t n = 0;
    for (size_t i = 0; i < len && n <= cap; i++) {
        n = n * 10 + (uint64_t)(s[i] - '0');
    }
    return n <= cap ? n : cap + 1;
}

/* Parses a non-negative decimal in [min, max], as twemproxy's nc_atoi
 * (digits only: no sign, no spaces). */
static int conf_num(struct conf_ctx *ctx, const char *name, const yaml_node_t *node,
                    uint64_t min, uint64_t max, uint64_t *out)
{
    const char *v = conf_text(ctx, name, node);
    if (v == NULL) {
        return -1;
    }
    if (!conf_all_digits(v, strlen(v))) {
        return conf_bad(ctx, name, node, "is not a number");
    }
    uint64_t n = conf_atou(v, strlen(v), max);
    if (n < min || n > max) {
        return conf_error(ctx, node, "key '%s' in %s is out of range %llu..%llu: '%s'",
                          name, ctx->where, (unsigned long long)min,
                          (unsigned long long)max, v);
    }
    *out = n;
    return 0;
}

static bool conf_port(const char *s, size_t len, uint16_t *out)
{
    if (!conf_all_digits(s, len)) {
        return false;
    }
    uint64_t n = conf_atou(s, len, UINT16_MAX);
    if (n == 0 || n > UINT16_MAX) {
        return false;
    }
    *out = (uint16_t)n;
    return true;
}

static const char *conf_memrchr(const char *s, char c, size_t len)
{
    while (len > 0) {
        if (s[--len] == c) {
            return s + len;
        }
    }
    return NULL;
}

/* "host:port" in s[0..len) into addr. "[v6]:port" loses its brackets; as
 * in twemproxy, the port is after the last colon, so "::1:22121" works
 * too. Returns NULL or the reason it is invalid. */
static const char *conf_parse_inet(const char *s, size_t len, struct conf_addr *addr)
{
    const char *colon = conf_memrchr(s, ':', len);
    if (colon == NULL) {
        return "has no port (\"host:port\")";
    }
    if (!conf_port(colon + 1, len - (size_t)(colon + 1 - s), &addr->port)) {
        return "has an invalid port (1..65535)";
    }
    size_t hlen = (size_t)(colon - s);
    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
        s++;
        hlen -= 2;
    }
    if (hlen == 0) {
        return "has an empty host";
    }
    addr->host = strndup(s, hlen);
    return addr->host != NULL ? NULL : "could not be stored: out of memory";
}

static const char *conf_parse_path(const char *s, size_t len, struct conf_addr *addr)
{
    if (len >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        return "has a unix socket path that is too long";
    }
    addr->path = strndup(s, len);
    return addr->path != NULL ? NULL : "could not be stored: out of memory";
}

/* "/path/sock 0666": the permissions are optional and octal. */
static const char *conf_parse_unix_listen(const char *s, struct conf_listen *l)
{
    const char *sp = strrchr(s, ' ');
    size_t plen = sp != NULL ? (size_t)(sp - s) : strlen(s);
    while (plen > 0 && s[plen - 1] == ' ') {
        plen--;
    }
    if (sp != NULL) {
        const char *perm = sp + 1;
        size_t n = strspn(perm, "01234567");
        if (n == 0 || perm[n] != '\0' || strtoul(perm, NULL, 8) > 0777) {
            return "has invalid permissions (\"/path/socket 0666\")";
        }
        l->perm = (mode_t)strtoul(perm, NULL, 8);
    }
    return conf_parse_path(s, plen, &l->addr);
}

#define CONF_SERVER_FORMAT "is not \"host:port:weight [name]\" or \"/path:weight [name]\""

/* The weight after the last colon of s[0..len); *colon gets its place. */
static const char *conf_parse_weight(const char *s, size_t len, struct conf_server *srv,
                                     const char **colon)
{
    *colon = conf_memrchr(s, ':', len);
    if (*colon == NULL) {
        return CONF_SERVER_FORMAT;
    }
    const char *w = *colon + 1;
    size_t wlen = len - (size_t)(w - s);
    if (!conf_all_digits(w, wlen)) {
        return "has an invalid weight";
    }
    uint64_t weight = conf_atou(w, wlen, CONF_MAX_NUM);
    if (weight == 0) {
        return "has a zero weight";
    }
    if (weight > CONF_MAX_NUM) {
        return "has an invalid weight";
    }
    srv->weight = (uint32_t)weight;
    return NULL;
}

/* "host:port:weight [name]" or "/path:weight [name]", as twemproxy. */
static const char *conf_parse_server(const char *s, struct conf_server *srv)
{
    size_t alen = strcspn(s, " ");
    const char *name = s + alen + strspn(s + alen, " ");
    if (alen == 0 || strchr(name, ' ') != NULL) {
        return CONF_SERVER_FORMAT;
    }
    srv->text = strndup(s, alen);
    srv->name = *name != '\0' ? strdup(name) : NULL;
    if (srv->text == NULL || (*name != '\0' && srv->name == NULL)) {
        return "could not be stored: out of memory";
    }
    const char *colon;
    const char *reason = conf_parse_weight(s, alen, srv, &colon);
    if (reason != NULL) {
        return reason;
    }
    size_t hlen = (size_t)(colon - s);
    if (s[0] == '/') {
        return conf_parse_path(s, hlen, &srv->addr);
    }
    if (conf_memrchr(s, ':', hlen) == NULL) {
        return CONF_SERVER_FORMAT;
    }
    return conf_parse_inet(s, hlen, &srv->addr);
}

/* ---- setters: one per kind of value ------------------------------------ */

static int conf_set_int(struct conf_ctx *ctx, const struct conf_key *key,
                        yaml_node_t *value, void *base)
{
    uint64_t n = 0;
    if (conf_num(ctx, key->name, value, 0, CONF_MAX_NUM, &n) != 0) {
        return -1;
    }
    *CONF_FIELD(base, key->offset, int) = (int)n;
    return 0;
}

static int conf_set_u32(struct conf_ctx *ctx, const struct conf_key *key,
                        yaml_node_t *value, void *base)
{
    uint64_t n = 0;
    if (conf_num(ctx, key->name, value, 0, CONF_MAX_NUM, &n) != 0) {
        return -1;
    }
    *CONF_FIELD(base, key->offset, uint32_t) = (uint32_t)n;
    return 0;
}

/* twemproxy arms no timer for a timeout <= 0, so `timeout: 0` means no
 * timeout; it is stored as -1 so that users of the model test only < 0. */
static int conf_set_timeout(struct conf_ctx *ctx, const struct conf_key *key,
                            yaml_node_t *value, void *base)
{
    uint64_t n = 0;
    if (conf_num(ctx, key->name, value, 0, CONF_MAX_NUM, &n) != 0) {
        return -1;
    }
    *CONF_FIELD(base, key->offset, int) = n > 0 ? (int)n : CONF_DEFAULT_TIMEOUT_MS;
    return 0;
}

/* server_connections: twemproxy refuses 0. */
static int conf_set_conns(struct conf_ctx *ctx, const struct conf_key *key,
                          yaml_node_t *value, void *base)
{
    uint64_t n = 0;
    if (conf_num(ctx, key->name, value, 1, CONF_MAX_NUM, &n) != 0) {
        return -1;
    }
    *CONF_FIELD(base, key->offset, uint32_t) = (uint32_t)n;
    return 0;
}

static int conf_set_msec(struct conf_ctx *ctx, const struct conf_key *key,
                         yaml_node_t *value, void *base)
{
    uint64_t n = 0;
    if (conf_num(ctx, key->name, value, 0, CONF_MAX_NUM, &n) != 0) {
        return -1;
    }
    *CONF_FIELD(base, key->offset, int64_t) = (int64_t)n;
    return 0;
}

static int conf_set_ttl(struct conf_ctx *ctx, const struct conf_key *key,
                        yaml_node_t *value, void *base)
{
    uint64_t n = 0;
    if (conf_num(ctx, key->name, value, 0, CONF_MAX_BACKFILL_TTL, &n) != 0) {
        return -1;
    }
    *CONF_FIELD(base, key->offset, uint32_t) = (uint32_t)n;
    return 0;
}

/* A value that is exactly one of two words, stored as a bool that is
 * true for `yes`. */
static int conf_set_either(struct conf_ctx *ctx, const struct conf_key *key,
                           yaml_node_t *value, void *base, const char *yes, const char *no)
{
    const char *v = conf_text(ctx, key->name, value);
    if (v == NULL) {
        return -1;
    }
    if (strcmp(v, yes) != 0 && strcmp(v, no) != 0) {
        char reason[64];
        snprintf(reason, sizeof(reason), "is not \"%s\" or \"%s\"", yes, no);
        return conf_bad(ctx, key->name, value, reason);
    }
    *CONF_FIELD(base, key->offset, bool) = strcmp(v, yes) == 0;
    return 0;
}

/* Only "true" and "false", as twemproxy: "yes" or "on" are refused. */
static int conf_set_bool(struct conf_ctx *ctx, const struct conf_key *key,
                         yaml_node_t *value, void *base)
{
    return conf_set_either(ctx, key, value, base, "true", "false");
}

static int conf_set_string(struct conf_ctx *ctx, const struct conf_key *key,
                           yaml_node_t *value, void *base)
{
    const char *v = conf_text(ctx, key->name, value);
    if (v == NULL) {
        return -1;
    }
    char **field = CONF_FIELD(base, key->offset, char *);
    *field = strdup(v);
    return *field != NULL ? 0 : conf_nomem(ctx, value);
}

static int conf_set_hash(struct conf_ctx *ctx, const struct conf_key *key,
                         yaml_node_t *value, void *base)
{
    const char *v = conf_text(ctx, key->name, value);
    if (v == NULL) {
        return -1;
    }
    if (!hashkit_hash_parse(v, CONF_FIELD(base, key->offset, enum hashkit_hash))) {
        return conf_bad(ctx, key->name, value, "is not a valid hash");
    }
    return 0;
}

static int conf_set_dist(struct conf_ctx *ctx, const struct conf_key *key,
                         yaml_node_t *value, void *base)
{
    const char *v = conf_text(ctx, key->name, value);
    if (v == NULL) {
        return -1;
    }
    if (!hashkit_dist_parse(v, CONF_FIELD(base, key->offset, enum hashkit_dist))) {
        return conf_bad(ctx, key->name, value,
                        "is not a valid distribution (ketama, modula, random)");
    }
    return 0;
}

static int conf_set_hash_tag(struct conf_ctx *ctx, const struct conf_key *key,
                             yaml_node_t *value, void *base)
{
    const char *v = conf_text(ctx, key->name, value);
    if (v == NULL) {
        return -1;
    }
    if (strlen(v) != 2) {
        return conf_bad(ctx, key->name, value, "is not a hash tag of exactly two characters");
    }
    memcpy(CONF_FIELD(base, key->offset, char), v, 2);
    *CONF_FIELD(base, key->aux, bool) = true;
    return 0;
}

static int conf_set_listen(struct conf_ctx *ctx, const struct conf_key *key,
                           yaml_node_t *value, void *base)
{
    struct conf_listen *l = CONF_FIELD(base, key->offset, struct conf_listen);
    const char *v = conf_text(ctx, key->name, value);
    if (v == NULL) {
        return -1;
    }
    l->text = strdup(v);
    if (l->text == NULL) {
        return conf_nomem(ctx, value);
    }
    const char *reason = v[0] == '/' ? conf_parse_unix_listen(v, l)
                                     : conf_parse_inet(v, strlen(v), &l->addr);
    return reason == NULL ? 0 : conf_bad(ctx, key->name, value, reason);
}

/* Fills tier->servers from a sequence; an empty one is left for
 * validation to report. */
static int conf_set_servers(struct conf_ctx *ctx, const struct conf_key *key,
                            yaml_node_t *value, void *base)
{
    struct conf_tier *tier = CONF_FIELD(base, key->offset, struct conf_tier);
    if (value->type != YAML_SEQUENCE_NODE) {
        return conf_bad(ctx, key->name, value, "must be a list of servers");
    }
    size_t n = conf_seq_size(value);
    if (n == 0) {
        return 0;
    }
    tier->servers = calloc(n, sizeof(*tier->servers));
    if (tier->servers == NULL) {
        return conf_nomem(ctx, value);
    }
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = conf_seq_item(ctx, value, i);
        struct conf_server *srv = &tier->servers[i];
        tier->nservers = (uint32_t)i + 1;   /* counted first: destroy frees it */
        srv->line = conf_line(item);
        const char *v = conf_text(ctx, key->name, item);
        if (v == NULL) {
            return -1;
        }
        const char *reason = conf_parse_server(v, srv);
        if (reason != NULL) {
            return conf_bad(ctx, key->name, item, reason);
        }
    }
    return 0;
}

/* A tier starts with its pool's settings; its own keys then override. */
static void conf_tier_inherit(struct conf_tier *tier, const struct conf_pool *pool)
{
    tier->hash = pool->hash;
    tier->distribution = pool->distribution;
    memcpy(tier->hash_tag, pool->hash_tag, sizeof(tier->hash_tag));
    tier->has_hash_tag = pool->has_hash_tag;
    tier->timeout_ms = pool->timeout_ms;
    tier->server_connections = pool->server_connections;
    tier->auto_eject_hosts = pool->auto_eject_hosts;
    tier->server_retry_timeout_ms = pool->server_retry_timeout_ms;
    tier->server_failure_limit = pool->server_failure_limit;
}

/* `servers:` of a plain pool: one tier, pool->master, with the pool's
 * settings. */
static int conf_set_pool_servers(struct conf_ctx *ctx, const struct conf_key *key,
                                 yaml_node_t *value, void *base)
{
    struct conf_pool *pool = base;
    conf_tier_inherit(&pool->master, pool);
    return conf_set_servers(ctx, key, value, base);
}

static int conf_tier_parse(struct conf_ctx *ctx, struct conf_tier *tier,
                           yaml_node_t *map, const char *name);

static int conf_set_master(struct conf_ctx *ctx, const struct conf_key *key,
                           yaml_node_t *value, void *base)
{
    struct conf_pool *pool = base;
    pool->tiered = true;
    conf_tier_inherit(&pool->master, pool);
    return conf_tier_parse(ctx, &pool->master, value, key->name);
}

static int conf_set_slave(struct conf_ctx *ctx, const struct conf_key *key,
                          yaml_node_t *value, void *base)
{
    struct conf_pool *pool = base;
    pool->slave = calloc(1, sizeof(*pool->slave));
    if (pool->slave == NULL) {
        return conf_nomem(ctx, value);
    }
    conf_tier_inherit(pool->slave, pool);
    return conf_tier_parse(ctx, pool->slave, value, key->name);
}

/* l1 and replicas: a list of tiers, named "l1[0]", "l1[1]"... */
static int conf_set_tier_list(struct conf_ctx *ctx, const struct conf_key *key,
                              yaml_node_t *value, void *base)
{
    struct conf_tier **tiers = CONF_FIELD(base, key->offset, struct conf_tier *);
    uint32_t *count = CONF_FIELD(base, key->aux, uint32_t);
    if (value->type != YAML_SEQUENCE_NODE || conf_seq_size(value) == 0) {
        return conf_bad(ctx, key->name, value, "must be a non-empty list of tiers");
    }
    size_t n = conf_seq_size(value);
    *tiers = calloc(n, sizeof(**tiers));
    if (*tiers == NULL) {
        return conf_nomem(ctx, value);
    }
    for (size_t i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof(name), "%s[%zu]", key->name, i);
        *count = (uint32_t)i + 1;           /* counted first: destroy frees it */
        conf_tier_inherit(&(*tiers)[i], base);
        if (conf_tier_parse(ctx, &(*tiers)[i], conf_seq_item(ctx, value, i), name) != 0) {
            return -1;
        }
    }
    return 0;
}

/* read_from: "master" or "slaves" (the default, applied once the pool's
 * slaves are known: see conf_pool_finish). */
static int conf_set_read_from(struct conf_ctx *ctx, const struct conf_key *key,
                              yaml_node_t *value, void *base)
{
    return conf_set_either(ctx, key, value, base, "master", "slaves");
}

/* ---- setters: Sentinel ------------------------------------------------- */

/* sentinels: a non-empty list of "host:port". */
static int conf_set_sentinels(struct conf_ctx *ctx, const struct conf_key *key,
                              yaml_node_t *value, void *base)
{
    struct conf_pool *pool = base;
    if (value->type != YAML_SEQUENCE_NODE || conf_seq_size(value) == 0) {
        return conf_bad(ctx, key->name, value, "must be a non-empty list of host:port");
    }
    size_t n = conf_seq_size(value);
    pool->sentinels = calloc(n, sizeof(*pool->sentinels));
    if (pool->sentinels == NULL) {
        return conf_nomem(ctx, value);
    }
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = conf_seq_item(ctx, value, i);
        struct conf_server *srv = &pool->sentinels[i];
        pool->nsentinels = (uint32_t)i + 1;   /* counted first: destroy frees it */
        srv->line = conf_line(item);
        srv->weight = 1;
        const char *v = conf_text(ctx, key->name, item);
        if (v == NULL) {
            return -1;
        }
        const char *reason = conf_parse_inet(v, strlen(v), &srv->addr);
        if (reason != NULL) {
            return conf_bad(ctx, key->name, item, reason);
        }
        if ((srv->text = strdup(v)) == NULL) {
            return conf_nomem(ctx, item);
        }
    }
    return 0;
}

/* Appends one master name, refusing an empty or repeated one. */
static int conf_master_name_add(struct conf_ctx *ctx, struct conf_pool *pool,
                                const char *name, yaml_node_t *node)
{
    if (name[0] == '\0' || strchr(name, ' ') != NULL) {
        return conf_bad(ctx, "master_names", node, "must be a name without spaces");
    }
    for (uint32_t i = 0; i < pool->nmaster_names; i++) {
        if (strcmp(pool->master_names[i], name) == 0) {
            return conf_bad(ctx, "master_names", node, "names a master twice");
        }
    }
    char **names = realloc(pool->master_names,
                           (pool->nmaster_names + 1) * sizeof(*pool->master_names));
    if (names == NULL) {
        return conf_nomem(ctx, node);
    }
    pool->master_names = names;
    if ((names[pool->nmaster_names] = strdup(name)) == NULL) {
        return conf_nomem(ctx, node);
    }
    pool->nmaster_names++;
    return 0;
}

/* master_name (one) and master_names (one per shard) fill the same list,
 * so a pool gives one of them. */
static int conf_set_master_name(struct conf_ctx *ctx, const struct conf_key *key,
                                yaml_node_t *value, void *base)
{
    struct conf_pool *pool = base;
    if (pool->nmaster_names > 0) {
        return conf_error(ctx, value, "keys 'master_name' and 'master_names' in %s cannot "
                          "be used together", ctx->where);
    }
    const char *v = conf_text(ctx, key->name, value);
    return v != NULL ? conf_master_name_add(ctx, pool, v, value) : -1;
}

static int conf_set_master_names(struct conf_ctx *ctx, const struct conf_key *key,
                                 yaml_node_t *value, void *base)
{
    struct conf_pool *pool = base;
    if (pool->nmaster_names > 0) {
        return conf_error(ctx, value, "keys 'master_name' and 'master_names' in %s cannot "
                          "be used together", ctx->where);
    }
    if (value->type != YAML_SEQUENCE_NODE || conf_seq_size(value) == 0) {
        return conf_bad(ctx, key->name, value, "must be a non-empty list of master names");
    }
    for (size_t i = 0; i < conf_seq_size(value); i++) {
        yaml_node_t *item = conf_seq_item(ctx, value, i);
        const char *v = conf_text(ctx, key->name, item);
        if (v == NULL || conf_master_name_add(ctx, pool, v, item) != 0) {
            return -1;
        }
    }
    return 0;
}

/* sentinel_interval, sentinel_timeout: milliseconds, at least 10. */
static int conf_set_sentinel_ms(struct conf_ctx *ctx, const struct conf_key *key,
                                yaml_node_t *value, void *base)
{
    uint64_t n = 0;
    if (conf_num(ctx, key->name, value, 10, CONF_MAX_NUM, &n) != 0) {
        return -1;
    }
    *CONF_FIELD(base, key->offset, int) = (int)n;
    return 0;
}

/* ---- key tables -------------------------------------------------------- */

#define POOL(f) offsetof(struct conf_pool, f)
#define TIER(f) offsetof(struct conf_tier, f)
#define SETTING CONF_PHASE_SETTING
#define TIERS   CONF_PHASE_TIER

static const struct conf_key conf_pool_keys[] = {
    /* twemproxy's keys */
    { "listen",               conf_set_listen,       POOL(listen),                  0,                  SETTING },
    { "hash",                 conf_set_hash,         POOL(hash),                    0,                  SETTING },
    { "hash_tag",             conf_set_hash_tag,     POOL(hash_tag),                POOL(has_hash_tag), SETTING },
    { "distribution",         conf_set_dist,         POOL(distribution),            0,                  SETTING },
    { "timeout",              conf_set_timeout,      POOL(timeout_ms),              0,                  SETTING },
    { "backlog",              conf_set_int,          POOL(backlog),                 0,                  SETTING },
    { "preconnect",           conf_set_bool,         POOL(preconnect),              0,                  SETTING },
    { "redis",                conf_set_bool,         POOL(redis),                   0,                  SETTING },
    { "redis_auth",           conf_set_string,       POOL(redis_auth),              0,                  SETTING },
    { "redis_db",             conf_set_int,          POOL(redis_db),                0,                  SETTING },
    { "server_connections",   conf_set_conns,        POOL(server_connections),      0,                  SETTING },
    { "auto_eject_hosts",     conf_set_bool,         POOL(auto_eject_hosts),        0,                  SETTING },
    { "server_retry_timeout", conf_set_msec,         POOL(server_retry_timeout_ms), 0,                  SETTING },
    { "server_failure_limit", conf_set_u32,          POOL(server_failure_limit),    0,                  SETTING },
    { "client_connections",   conf_set_u32,          POOL(client_connections),      0,                  SETTING },
    { "tcpkeepalive",         conf_set_bool,         POOL(tcpkeepalive),            0,                  SETTING },
    { "servers",              conf_set_pool_servers, POOL(master),                  0,                  TIERS },
    /* Strata's keys */
    { "allow_flush",          conf_set_bool,         POOL(allow_flush),             0,                  SETTING },
    { "backfill_ttl",         conf_set_ttl,          POOL(backfill_ttl),            0,                  SETTING },
    { "master",               conf_set_master,       POOL(master),                  0,                  TIERS },
    { "slave",                conf_set_slave,        POOL(slave),                   0,                  TIERS },
    { "l1",                   conf_set_tier_list,    POOL(l1),                      POOL(nl1),          TIERS },
    { "replicas",             conf_set_tier_list,    POOL(replicas),                POOL(nreplicas),    TIERS },
    { "read_from",            conf_set_read_from,    POOL(read_from_master),        0,                  SETTING },
    { "slaves",               conf_set_tier_list,    POOL(slaves),                  POOL(nslaves),      TIERS },
    { "sentinels",            conf_set_sentinels,    0,                             0,                  SETTING },
    { "master_name",          conf_set_master_name,  0,                             0,                  SETTING },
    { "master_names",         conf_set_master_names, 0,                             0,                  SETTING },
    { "sentinel_auth",        conf_set_string,       POOL(sentinel_auth),           0,                  SETTING },
    { "sentinel_read_replicas", conf_set_bool,       POOL(sentinel_read_replicas),  0,                  SETTING },
    { "sentinel_interval",    conf_set_sentinel_ms,  POOL(sentinel_interval_ms),    0,                  SETTING },
    { "sentinel_timeout",     conf_set_sentinel_ms,  POOL(sentinel_timeout_ms),     0,                  SETTING },
};

static const struct conf_key conf_tier_keys[] = {
    { "hash",                 conf_set_hash,         TIER(hash),                    0,                  SETTING },
    { "hash_tag",             conf_set_hash_tag,     TIER(hash_tag),                TIER(has_hash_tag), SETTING },
    { "distribution",         conf_set_dist,         TIER(distribution),            0,                  SETTING },
    { "timeout",              conf_set_timeout,      TIER(timeout_ms),              0,                  SETTING },
    { "server_connections",   conf_set_conns,        TIER(server_connections),      0,                  SETTING },
    { "auto_eject_hosts",     conf_set_bool,         TIER(auto_eject_hosts),        0,                  SETTING },
    { "server_retry_timeout", conf_set_msec,         TIER(server_retry_timeout_ms), 0,                  SETTING },
    { "server_failure_limit", conf_set_u32,          TIER(server_failure_limit),    0,                  SETTING },
    { "servers",              conf_set_servers,      0,                             0,                  TIERS },
};

#undef POOL
#undef TIER
#undef SETTING
#undef TIERS

#define CONF_NKEYS(t) (sizeof(t) / sizeof((t)[0]))

/* The keys a tier may not carry, for the shape check. */
static const char *const conf_tier_names[] = { "master", "slave", "l1", "replicas", "slaves" };

/* Pool keys that belong to one kind of pool: memcached (redis false) or
 * Redis (redis true). */
struct conf_kind_key {
    const char *name;
    bool        redis;
    const char *hint;     /* appended to the message */
};

static const struct conf_kind_key conf_kind_keys[] = {
    { "slave",        false, ": a redis pool's copies are 'slaves', a list of tiers" },
    { "l1",           false, "" },
    { "replicas",     false, "" },
    { "allow_flush",  false, "" },
    { "backfill_ttl", false, "" },
    { "slaves",       true,  "" },
    { "read_from",    true,  "" },
};

/* ---- mappings ---------------------------------------------------------- */

static const struct conf_key *conf_key_find(const struct conf_key *keys, size_t nkeys,
                                            const char *name)
{
    for (size_t i = 0; i < nkeys; i++) {
        if (strcmp(keys[i].name, name) == 0) {
            return &keys[i];
        }
    }
    return NULL;
}

/* Whether a pair before pairs[i] of `map` has the key `name`. */
static bool conf_map_seen(struct conf_ctx *ctx, const yaml_node_t *map, size_t i,
                          const char *name)
{
    for (size_t j = 0; j < i; j++) {
        const char *s = conf_scalar(conf_node(ctx, map->data.mapping.pairs.start[j].key));
        if (s != NULL && strcmp(s, name) == 0) {
            return true;
        }
    }
    return false;
}

/* Every key of `map` is a string, known, and given once. */
static int conf_map_check(struct conf_ctx *ctx, const yaml_node_t *map,
                          const struct conf_key *keys, size_t nkeys)
{
    for (size_t i = 0; i < conf_map_size(map); i++) {
        yaml_node_t *key = conf_node(ctx, map->data.mapping.pairs.start[i].key);
        const char *name = conf_scalar(key);
        if (name == NULL) {
            return conf_error(ctx, key, "a key in %s is not a string", ctx->where);
        }
        if (conf_key_find(keys, nkeys, name) == NULL) {
            return conf_error(ctx, key, "unknown key '%s' in %s", name, ctx->where);
        }
        if (conf_map_seen(ctx, map, i, name)) {
            return conf_error(ctx, key, "duplicate key '%s' in %s", name, ctx->where);
        }
    }
    return 0;
}

/* Applies the keys of `map` that belong to `phase`; conf_map_check ran. */
static int conf_map_apply(struct conf_ctx *ctx, const yaml_node_t *map,
                          const struct conf_key *keys, size_t nkeys, void *base,
                          enum conf_phase phase)
{
    for (size_t i = 0; i < conf_map_size(map); i++) {
        yaml_node_pair_t *pair = &map->data.mapping.pairs.start[i];
        const struct conf_key *key =
            conf_key_find(keys, nkeys, conf_scalar(conf_node(ctx, pair->key)));
        if (key->phase == phase && key->set(ctx, key, conf_node(ctx, pair->value), base) != 0) {
            return -1;
        }
    }
    return 0;
}

static int conf_tier_parse(struct conf_ctx *ctx, struct conf_tier *tier,
                           yaml_node_t *map, const char *name)
{
    if (map->type != YAML_MAPPING_NODE) {
        return conf_bad(ctx, name, map, "must be a mapping with a 'servers' key");
    }
    size_t len = conf_where_push(ctx, name);
    size_t n = CONF_NKEYS(conf_tier_keys);
    int rc = conf_map_check(ctx, map, conf_tier_keys, n);
    if (rc == 0) {
        rc = conf_map_apply(ctx, map, conf_tier_keys, n, tier, CONF_PHASE_SETTING);
    }
    if (rc == 0) {
        rc = conf_map_apply(ctx, map, conf_tier_keys, n, tier, CONF_PHASE_TIER);
    }
    conf_where_pop(ctx, len);
    return rc;
}

/* ---- validation -------------------------------------------------------- */

static const struct conf_kind_key *conf_kind_find(const char *name)
{
    for (size_t i = 0; i < CONF_NKEYS(conf_kind_keys); i++) {
        if (strcmp(conf_kind_keys[i].name, name) == 0) {
            return &conf_kind_keys[i];
        }
    }
    return NULL;
}

/* Keys of the other kind of pool are errors: a Redis pool has no L1,
 * replicas, flush or write-back; a memcached pool has no `slaves`.
 * Checked in file order, before the tiers are parsed. */
static int conf_validate_kind(struct conf_ctx *ctx, const struct conf_pool *pool,
                              const yaml_node_t *map)
{
    for (size_t i = 0; i < conf_map_size(map); i++) {
        yaml_node_t *key = conf_node(ctx, map->data.mapping.pairs.start[i].key);
        const char *name = conf_scalar(key);
        const struct conf_kind_key *k = conf_kind_find(name);
        if (k == NULL || k->redis == pool->redis) {
            continue;
        }
        if (pool->redis) {
            return conf_error(ctx, key, "key '%s' in %s is for memcached pools, "
                              "not redis pools%s", name, ctx->where, k->hint);
        }
        return conf_error(ctx, key, "key '%s' in %s is for redis pools only "
                          "('redis: true')%s", name, ctx->where, k->hint);
    }
    return 0;
}

/* Keys that only a pool with `sentinels` may have. */
static const char *const conf_sentinel_keys[] = {
    "master_name", "master_names", "sentinel_auth", "sentinel_read_replicas",
    "sentinel_interval", "sentinel_timeout",
};

/* Keys a pool with `sentinels` may not have: its servers come from them. */
static const char *const conf_sentinel_forbidden[] = {
    "servers", "master", "slave", "l1", "replicas", "slaves", "read_from",
};

/* A pool with `sentinels` is a Redis pool with master names and no
 * servers of its own; without `sentinels`, none of the Sentinel keys. */
static int conf_validate_sentinel_shape(struct conf_ctx *ctx, const struct conf_pool *pool,
                                        const yaml_node_t *map)
{
    yaml_node_t *key = conf_map_key(ctx, map, "sentinels");
    const char *const *names = key != NULL ? conf_sentinel_forbidden : conf_sentinel_keys;
    size_t n = key != NULL ? CONF_NKEYS(conf_sentinel_forbidden) : CONF_NKEYS(conf_sentinel_keys);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *bad = conf_map_key(ctx, map, names[i]);
        if (bad != NULL && key != NULL) {
            return conf_error(ctx, bad, "key '%s' in %s cannot be used together with "
                              "'sentinels' (the Sentinels name the servers)", names[i],
                              ctx->where);
        }
        if (bad != NULL) {
            return conf_error(ctx, bad, "key '%s' in %s needs 'sentinels'", names[i],
                              ctx->where);
        }
    }
    if (key != NULL && !pool->redis) {
        return conf_error(ctx, key, "key 'sentinels' in %s needs 'redis: true'", ctx->where);
    }
    if (key != NULL && pool->nmaster_names == 0) {
        return conf_error(ctx, key, "missing key 'master_name' in %s: a pool with "
                          "'sentinels' names the master they watch", ctx->where);
    }
    return 0;
}

/* The master tier of a Sentinel pool: one server per master name, named
 * by it, weight 1, at the placeholder 0.0.0.0:0 until sentinel_app says
 * where the master is. */
static int conf_sentinel_servers(struct conf_ctx *ctx, struct conf_pool *pool)
{
    conf_tier_inherit(&pool->master, pool);
    pool->master.servers = calloc(pool->nmaster_names, sizeof(*pool->master.servers));
    if (pool->master.servers == NULL) {
        return conf_error_at(ctx, pool->line, "out of memory in %s", ctx->where);
    }
    for (uint32_t i = 0; i < pool->nmaster_names; i++) {
        struct conf_server *srv = &pool->master.servers[i];
        pool->master.nservers = i + 1;
        srv->weight = 1;
        srv->line = pool->line;
        srv->name = strdup(pool->master_names[i]);
        srv->addr.host = strdup("0.0.0.0");
        srv->text = strdup("0.0.0.0:0:1");
        if (srv->name == NULL || srv->addr.host == NULL || srv->text == NULL) {
            return conf_error_at(ctx, pool->line, "out of memory in %s", ctx->where);
        }
    }
    return 0;
}

/* A plain pool has `servers`; a tiered one has `master` and never
 * `servers`. Checked before the tiers are parsed, since `servers` and
 * `master` both fill pool->master. */
static int conf_validate_shape(struct conf_ctx *ctx, const struct conf_pool *pool,
                               const yaml_node_t *map)
{
    if (conf_validate_sentinel_shape(ctx, pool, map) != 0) {
        return -1;
    }
    if (pool->nsentinels > 0) {
        return 0;
    }
    yaml_node_t *servers = conf_map_key(ctx, map, "servers");
    yaml_node_t *tier = NULL;
    for (size_t i = 0; i < CONF_NKEYS(conf_tier_names) && tier == NULL; i++) {
        tier = conf_map_key(ctx, map, conf_tier_names[i]);
    }
    if (servers != NULL && tier != NULL) {
        return conf_error(ctx, tier, "key '%s' in %s cannot be used together with 'servers'",
                          conf_scalar(tier), ctx->where);
    }
    if (servers == NULL && tier == NULL) {
        return conf_error_at(ctx, pool->line, "missing key 'servers' in %s", ctx->where);
    }
    if (tier != NULL && conf_map_key(ctx, map, "master") == NULL) {
        return conf_error(ctx, tier, "missing key 'master' in %s: key '%s' needs a master tier",
                          ctx->where, conf_scalar(tier));
    }
    return 0;
}

/* The name twemproxy compares to find duplicate servers, and that ketama
 * hashes: the given name, else "host:port" ("host" for port 11211). */
static void conf_server_ident(const struct conf_server *srv, char *buf, size_t len)
{
    if (srv->name != NULL) {
        snprintf(buf, len, "%s", srv->name);
    } else if (srv->addr.path != NULL) {
        snprintf(buf, len, "%s", srv->addr.path);
    } else if (srv->addr.port == CONF_KETAMA_PORT) {
        snprintf(buf, len, "%s", srv->addr.host);
    } else {
        snprintf(buf, len, "%s:%u", srv->addr.host, (unsigned)srv->addr.port);
    }
}

/* An error if a server before servers[i] has the same name as it. */
static int conf_server_dup(struct conf_ctx *ctx, const struct conf_tier *tier,
                           char (*ids)[CONF_IDENT_LEN], uint32_t i)
{
    for (uint32_t j = 0; j < i; j++) {
        if (strcmp(ids[i], ids[j]) == 0) {
            return conf_error_at(ctx, tier->servers[i].line,
                                 "key 'servers' in %s has two servers named '%s'",
                                 ctx->where, ids[i]);
        }
    }
    return 0;
}

/* No two servers of a tier share a name. The names are built once: pools
 * of thousands of servers are compared pairwise. */
static int conf_validate_names(struct conf_ctx *ctx, const struct conf_tier *tier)
{
    char (*ids)[CONF_IDENT_LEN] = calloc(tier->nservers, sizeof(*ids));
    if (ids == NULL) {
        return conf_error_at(ctx, 0, "out of memory in %s", ctx->where);
    }
    for (uint32_t i = 0; i < tier->nservers; i++) {
        conf_server_ident(&tier->servers[i], ids[i], sizeof(ids[i]));
    }
    int rc = 0;
    for (uint32_t i = 1; i < tier->nservers && rc == 0; i++) {
        rc = conf_server_dup(ctx, tier, ids, i);
    }
    free(ids);
    return rc;
}

/* A tier has servers, and no two of them share a name. `map` is the
 * mapping that holds its `servers` key (the pool's, for a plain pool). */
static int conf_validate_tier(struct conf_ctx *ctx, const struct conf_tier *tier,
                              const yaml_node_t *map)
{
    yaml_node_t *key = conf_map_key(ctx, map, "servers");
    if (key == NULL) {
        return conf_error(ctx, map, "missing key 'servers' in %s", ctx->where);
    }
    if (tier->nservers == 0) {
        return conf_error(ctx, key, "key 'servers' in %s is an empty list", ctx->where);
    }
    return conf_validate_names(ctx, tier);
}

/* Validates `tier` under the name "where tier 'name'". */
static int conf_validate_named(struct conf_ctx *ctx, const struct conf_tier *tier,
                               const yaml_node_t *map, const char *name)
{
    size_t len = conf_where_push(ctx, name);
    int rc = conf_validate_tier(ctx, tier, map);
    conf_where_pop(ctx, len);
    return rc;
}

static int conf_validate_list(struct conf_ctx *ctx, const struct conf_tier *tiers,
                              uint32_t n, const yaml_node_t *seq, const char *name)
{
    for (uint32_t i = 0; i < n; i++) {
        char item[64];
        snprintf(item, sizeof(item), "%s[%u]", name, i);
        if (conf_validate_named(ctx, &tiers[i], conf_seq_item(ctx, seq, i), item) != 0) {
            return -1;
        }
    }
    return 0;
}

static int conf_validate_tiers(struct conf_ctx *ctx, const struct conf_pool *pool,
                               const yaml_node_t *map)
{
    if (!pool->tiered) {
        return conf_validate_tier(ctx, &pool->master, map);
    }
    if (conf_validate_named(ctx, &pool->master, conf_map_value(ctx, map, "master"),
                            "master") != 0) {
        return -1;
    }
    if (pool->slave != NULL &&
        conf_validate_named(ctx, pool->slave, conf_map_value(ctx, map, "slave"), "slave") != 0) {
        return -1;
    }
    if (conf_validate_list(ctx, pool->l1, pool->nl1, conf_map_value(ctx, map, "l1"),
                           "l1") != 0) {
        return -1;
    }
    if (conf_validate_list(ctx, pool->slaves, pool->nslaves,
                           conf_map_value(ctx, map, "slaves"), "slaves") != 0) {
        return -1;
    }
    return conf_validate_list(ctx, pool->replicas, pool->nreplicas,
                              conf_map_value(ctx, map, "replicas"), "replicas");
}

/* ---- validation: Redis slaves ------------------------------------------ */

/* How a server is called in messages: its name, else "host:port:weight". */
static const char *conf_server_label(const struct conf_server *srv)
{
    return srv->name != NULL ? srv->name : srv->text;
}

/* A `hash_tag` key that a slave tier gives must be master's. */
static int conf_slave_hash_tag(struct conf_ctx *ctx, const struct conf_tier *master,
                               const struct conf_tier *slave, const yaml_node_t *key)
{
    if (key == NULL ||
        (master->has_hash_tag && memcmp(slave->hash_tag, master->hash_tag, 2) == 0)) {
        return 0;
    }
    if (!master->has_hash_tag) {
        return conf_error(ctx, key, "key 'hash_tag' in %s is '%.2s', but master has none: "
                          "a slave tier routes as its master", ctx->where, slave->hash_tag);
    }
    return conf_error(ctx, key, "key 'hash_tag' in %s is '%.2s', but master's is '%.2s': "
                      "a slave tier routes as its master", ctx->where, slave->hash_tag,
                      master->hash_tag);
}

/* A slave tier routes as its master: the routing keys it gives (it
 * inherits the others from master) must equal master's. `item` is the
 * tier's mapping; ctx->where names the slave tier. */
static int conf_slave_routing(struct conf_ctx *ctx, const struct conf_tier *master,
                              const struct conf_tier *slave, const yaml_node_t *item)
{
    yaml_node_t *key = conf_map_key(ctx, item, "hash");
    if (key != NULL && slave->hash != master->hash) {
        return conf_error(ctx, key, "key 'hash' in %s is '%s', but master's is '%s': "
                          "a slave tier routes as its master", ctx->where,
                          hashkit_hash_name(slave->hash), hashkit_hash_name(master->hash));
    }
    key = conf_map_key(ctx, item, "distribution");
    if (key != NULL && slave->distribution != master->distribution) {
        return conf_error(ctx, key, "key 'distribution' in %s is '%s', but master's is '%s': "
                          "a slave tier routes as its master", ctx->where,
                          hashkit_dist_name(slave->distribution),
                          hashkit_dist_name(master->distribution));
    }
    return conf_slave_hash_tag(ctx, master, slave, conf_map_key(ctx, item, "hash_tag"));
}

/* The index of the server of `tier` named `name`, or tier->nservers. */
static uint32_t conf_server_find(const struct conf_tier *tier, const char *name)
{
    uint32_t i = 0;
    while (i < tier->nservers &&
           (tier->servers[i].name == NULL || strcmp(tier->servers[i].name, name) != 0)) {
        i++;
    }
    return i;
}

static int conf_slave_weight(struct conf_ctx *ctx, const struct conf_server *srv,
                             const struct conf_server *shard)
{
    if (srv->weight == shard->weight) {
        return 0;
    }
    return conf_error_at(ctx, srv->line, "key 'servers' in %s: server '%s': weight %u "
                         "differs from master's %u", ctx->where, conf_server_label(srv),
                         (unsigned)srv->weight, (unsigned)shard->weight);
}

/* Master's servers are named: every slave server names a master shard,
 * with its weight, and every shard has a copy. Names are unique within
 * a tier (checked before), so the tier is then a permutation of master. */
static int conf_slave_by_name(struct conf_ctx *ctx, const struct conf_tier *master,
                              const struct conf_tier *slave, const yaml_node_t *item)
{
    for (uint32_t j = 0; j < slave->nservers; j++) {
        const struct conf_server *srv = &slave->servers[j];
        if (srv->name == NULL) {
            return conf_error_at(ctx, srv->line, "key 'servers' in %s: server '%s' has no "
                                 "name, but master's servers are named: name it after the "
                                 "master shard it copies", ctx->where, srv->text);
        }
        uint32_t i = conf_server_find(master, srv->name);
        if (i == master->nservers) {
            return conf_error_at(ctx, srv->line, "key 'servers' in %s: server '%s' is not "
                                 "a master shard", ctx->where, srv->name);
        }
        if (conf_slave_weight(ctx, srv, &master->servers[i]) != 0) {
            return -1;
        }
    }
    for (uint32_t i = 0; i < master->nservers; i++) {
        if (conf_server_find(slave, master->servers[i].name) == slave->nservers) {
            return conf_error(ctx, item, "%s has no copy of master shard '%s'",
                              ctx->where, master->servers[i].name);
        }
    }
    return 0;
}

/* Master's servers have no names: the slave tier's servers copy them in
 * order, one for one, with the same weights. */
static int conf_slave_by_position(struct conf_ctx *ctx, const struct conf_tier *master,
                                  const struct conf_tier *slave, const yaml_node_t *item)
{
    if (slave->nservers > master->nservers) {
        const struct conf_server *srv = &slave->servers[master->nservers];
        return conf_error_at(ctx, srv->line, "key 'servers' in %s: server '%s' is not a "
                             "master shard: master has %u servers", ctx->where,
                             conf_server_label(srv), (unsigned)master->nservers);
    }
    if (slave->nservers < master->nservers) {
        return conf_error(ctx, item, "%s has %u server(s), master has %u: a slave tier is "
                          "one copy of every master shard", ctx->where,
                          (unsigned)slave->nservers, (unsigned)master->nservers);
    }
    for (uint32_t i = 0; i < slave->nservers; i++) {
        if (conf_slave_weight(ctx, &slave->servers[i], &master->servers[i]) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Slaves are matched to master by name when every master server has
 * one, by position when none has; a mix is an error. */
static int conf_master_named(struct conf_ctx *ctx, const struct conf_tier *master,
                             bool *named)
{
    *named = master->servers[0].name != NULL;
    for (uint32_t i = 1; i < master->nservers; i++) {
        const struct conf_server *srv = &master->servers[i];
        if ((srv->name != NULL) != *named) {
            return conf_error_at(ctx, srv->line, "key 'servers' in %s tier 'master' names "
                                 "some servers and not others: with 'slaves', name every "
                                 "master server or none", ctx->where);
        }
    }
    return 0;
}

static int conf_validate_slave(struct conf_ctx *ctx, const struct conf_pool *pool,
                               uint32_t k, const yaml_node_t *item, bool named)
{
    char name[64];
    snprintf(name, sizeof(name), "slaves[%u]", (unsigned)k);
    size_t len = conf_where_push(ctx, name);
    const struct conf_tier *slave = &pool->slaves[k];
    int rc = conf_slave_routing(ctx, &pool->master, slave, item);
    if (rc == 0 && named) {
        rc = conf_slave_by_name(ctx, &pool->master, slave, item);
    } else if (rc == 0) {
        rc = conf_slave_by_position(ctx, &pool->master, slave, item);
    }
    conf_where_pop(ctx, len);
    return rc;
}

/* A Redis pool: `read_from: slaves` needs slaves; each slave tier is one
 * copy of every master shard and routes as master. */
static int conf_validate_redis(struct conf_ctx *ctx, const struct conf_pool *pool,
                               const yaml_node_t *map)
{
    yaml_node_t *key = conf_map_key(ctx, map, "read_from");
    if (key != NULL && !pool->read_from_master && pool->nslaves == 0) {
        return conf_error(ctx, key, "key 'read_from' in %s is 'slaves', but the pool has "
                          "no 'slaves' tiers", ctx->where);
    }
    if (pool->nslaves == 0) {
        return 0;
    }
    bool named;
    if (conf_master_named(ctx, &pool->master, &named) != 0) {
        return -1;
    }
    yaml_node_t *seq = conf_map_value(ctx, map, "slaves");
    for (uint32_t k = 0; k < pool->nslaves; k++) {
        if (conf_validate_slave(ctx, pool, k, conf_seq_item(ctx, seq, k), named) != 0) {
            return -1;
        }
    }
    return 0;
}

static int conf_validate_pool(struct conf_ctx *ctx, const struct conf_pool *pool,
                              const yaml_node_t *map)
{
    if (pool->listen.text == NULL) {
        return conf_error_at(ctx, pool->line, "missing key 'listen' in %s", ctx->where);
    }
    if (pool->nsentinels > 0) {
        return 0;
    }
    if (conf_validate_tiers(ctx, pool, map) != 0) {
        return -1;
    }
    return pool->redis ? conf_validate_redis(ctx, pool, map) : 0;
}

static bool conf_listen_same(const struct conf_listen *a, const struct conf_listen *b)
{
    if (a->addr.path != NULL || b->addr.path != NULL) {
        return a->addr.path != NULL && b->addr.path != NULL &&
               strcmp(a->addr.path, b->addr.path) == 0;
    }
    return a->addr.port == b->addr.port && strcmp(a->addr.host, b->addr.host) == 0;
}

/* No two pools listen on the same address. */
static int conf_validate_listens(struct conf_ctx *ctx, const struct conf *conf,
                                 const yaml_node_t *root)
{
    for (uint32_t i = 1; i < conf->npools; i++) {
        const struct conf_pool *p = &conf->pools[i];
        for (uint32_t j = 0; j < i; j++) {
            if (!conf_listen_same(&p->listen, &conf->pools[j].listen)) {
                continue;
            }
            yaml_node_t *map = conf_node(ctx, root->data.mapping.pairs.start[i].value);
            return conf_error(ctx, conf_map_key(ctx, map, "listen"),
                              "key 'listen' in pool '%s' has the same address as pool '%s': '%s'",
                              p->name, conf->pools[j].name, p->listen.text);
        }
    }
    return 0;
}

/* Pool names are non-empty strings, given once, each naming a mapping. */
static int conf_validate_root(struct conf_ctx *ctx, const yaml_node_t *root)
{
    if (root == NULL) {
        return conf_error_at(ctx, 1, "the pool file has no pools");
    }
    if (root->type != YAML_MAPPING_NODE || conf_map_size(root) == 0) {
        return conf_error(ctx, root, "the pool file must be a mapping of pool names to pools");
    }
    for (size_t i = 0; i < conf_map_size(root); i++) {
        yaml_node_pair_t *pair = &root->data.mapping.pairs.start[i];
        yaml_node_t *key = conf_node(ctx, pair->key);
        const char *name = conf_scalar(key);
        if (name == NULL || name[0] == '\0') {
            return conf_error(ctx, key, "a pool name must be a non-empty string");
        }
        if (conf_map_seen(ctx, root, i, name)) {
            return conf_error(ctx, key, "duplicate pool name '%s'", name);
        }
        if (conf_node(ctx, pair->value)->type != YAML_MAPPING_NODE) {
            return conf_error(ctx, key, "pool '%s' must be a mapping of keys", name);
        }
    }
    return 0;
}

/* ---- pools ------------------------------------------------------------- */

static void conf_pool_init(struct conf_pool *pool)
{
    memset(pool, 0, sizeof(*pool));
    pool->hash = CONF_DEFAULT_HASH;
    pool->distribution = CONF_DEFAULT_DIST;
    pool->timeout_ms = CONF_DEFAULT_TIMEOUT_MS;
    pool->backlog = CONF_DEFAULT_BACKLOG;
    pool->server_connections = CONF_DEFAULT_SERVER_CONNECTIONS;
    pool->server_retry_timeout_ms = CONF_DEFAULT_SERVER_RETRY_MS;
    pool->server_failure_limit = CONF_DEFAULT_SERVER_FAILURE_LIMIT;
    pool->client_connections = CONF_DEFAULT_CLIENT_CONNECTIONS;
    pool->backfill_ttl = CONF_DEFAULT_BACKFILL_TTL;
    pool->sentinel_interval_ms = CONF_DEFAULT_SENTINEL_INTERVAL_MS;
    pool->sentinel_timeout_ms = CONF_DEFAULT_SENTINEL_TIMEOUT_MS;
}

/* Puts the servers of a valid slave tier in master's order, so that
 * slave->servers[i] is the copy of master->servers[i]. Named servers
 * only: unnamed ones are in that order already. */
static void conf_slave_order(struct conf_tier *slave, const struct conf_tier *master)
{
    for (uint32_t i = 0; i < master->nservers && master->servers[i].name != NULL; i++) {
        uint32_t j = conf_server_find(slave, master->servers[i].name);
        struct conf_server tmp = slave->servers[i];
        slave->servers[i] = slave->servers[j];
        slave->servers[j] = tmp;
    }
}

/* After validation: `read_from` defaults to slaves when there are some
 * (read_from_master is true whenever a pool has none); slave tiers take
 * master's routing and order. */
static void conf_pool_finish(struct conf_pool *pool)
{
    pool->read_from_master = pool->read_from_master || pool->nslaves == 0;
    for (uint32_t k = 0; k < pool->nslaves; k++) {
        struct conf_tier *slave = &pool->slaves[k];
        slave->hash = pool->master.hash;
        slave->distribution = pool->master.distribution;
        memcpy(slave->hash_tag, pool->master.hash_tag, sizeof(slave->hash_tag));
        slave->has_hash_tag = pool->master.has_hash_tag;
        conf_slave_order(slave, &pool->master);
    }
}

/* Parses and validates one pool: the pair `pair` of the root mapping. */
static int conf_pool_load(struct conf_ctx *ctx, struct conf_pool *pool,
                          const yaml_node_pair_t *pair)
{
    yaml_node_t *key = conf_node(ctx, pair->key);
    yaml_node_t *map = conf_node(ctx, pair->value);
    size_t n = CONF_NKEYS(conf_pool_keys);

    conf_pool_init(pool);
    pool->line = conf_line(key);
    pool->name = strdup(conf_scalar(key));
    if (pool->name == NULL) {
        return conf_nomem(ctx, key);
    }
    snprintf(ctx->where, sizeof(ctx->where), "pool '%s'", pool->name);

    if (conf_map_check(ctx, map, conf_pool_keys, n) != 0 ||
        conf_map_apply(ctx, map, conf_pool_keys, n, pool, CONF_PHASE_SETTING) != 0 ||
        conf_validate_kind(ctx, pool, map) != 0 ||
        conf_validate_shape(ctx, pool, map) != 0 ||
        conf_map_apply(ctx, map, conf_pool_keys, n, pool, CONF_PHASE_TIER) != 0 ||
        conf_validate_pool(ctx, pool, map) != 0 ||
        (pool->nsentinels > 0 && conf_sentinel_servers(ctx, pool) != 0)) {
        return -1;
    }
    conf_pool_finish(pool);
    return 0;
}

static int conf_pools_load(struct conf_ctx *ctx, struct conf *conf, const yaml_node_t *root)
{
    if (conf_validate_root(ctx, root) != 0) {
        return -1;
    }
    size_t n = conf_map_size(root);
    conf->pools = calloc(n, sizeof(*conf->pools));
    if (conf->pools == NULL) {
        return conf_error(ctx, root, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        conf->npools = (uint32_t)i + 1;    /* counted first: destroy frees it */
        if (conf_pool_load(ctx, &conf->pools[i], &root->data.mapping.pairs.start[i]) != 0) {
            return -1;
        }
    }
    return conf_validate_listens(ctx, conf, root);
}

/* ---- file -------------------------------------------------------------- */

static int conf_syntax_error(struct conf_ctx *ctx, const yaml_parser_t *parser)
{
    const char *problem = parser->problem != NULL ? parser->problem : "cannot be parsed";
    if (parser->context != NULL) {
        return conf_error_at(ctx, (int)parser->problem_mark.line + 1,
                             "YAML syntax error: %s %s", problem, parser->context);
    }
    return conf_error_at(ctx, (int)parser->problem_mark.line + 1,
                         "YAML syntax error: %s", problem);
}

/* Loads the first document into *doc and makes sure no other follows,
 * as twemproxy does. Returns 0, or -1 with *doc freed. */
static int conf_doc_read(struct conf_ctx *ctx, yaml_parser_t *parser, yaml_document_t *doc)
{
    yaml_document_t next;
    if (!yaml_parser_load(parser, doc)) {
        return conf_syntax_error(ctx, parser);
    }
    if (!yaml_parser_load(parser, &next)) {
        yaml_document_delete(doc);
        return conf_syntax_error(ctx, parser);
    }
    bool more = yaml_document_get_root_node(&next) != NULL;
    int line = (int)next.start_mark.line + 1;
    yaml_document_delete(&next);
    if (more) {
        yaml_document_delete(doc);
        return conf_error_at(ctx, line, "the pool file must hold a single YAML document");
    }
    return 0;
}

/* The shared path of both loaders: reads the parser's single document,
 * builds the model and validates it. ctx->path names the origin (a file
 * or a zk:// URL) in messages and in conf->path. Returns 0 with *out set,
 * or -1 with the error in ctx and *out NULL. */
static int conf_parse(struct conf_ctx *ctx, yaml_parser_t *parser, struct conf **out)
{
    yaml_document_t doc;

    *out = NULL;
    if (conf_doc_read(ctx, parser, &doc) != 0) {
        return -1;
    }
    ctx->doc = &doc;

    struct conf *conf = calloc(1, sizeof(*conf));
    int rc = -1;
    if (conf == NULL || (conf->path = strdup(ctx->path)) == NULL) {
        conf_error_at(ctx, 0, "out of memory");
    } else {
        rc = conf_pools_load(ctx, conf, yaml_document_get_root_node(&doc));
    }
    yaml_document_delete(&doc);
    ctx->doc = NULL;
    if (rc != 0) {
        conf_destroy(&conf);
        return -1;
    }
    *out = conf;
    return 0;
}

int conf_yaml_load(const char *path, struct conf **out, char *err, size_t errlen)
{
    struct conf_ctx ctx = { .path = path, .err = err, .errlen = errlen };
    yaml_parser_t parser;

    *out = NULL;
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        return conf_error_at(&ctx, 0, "cannot open the pool file: %s", strerror(errno));
    }
    if (!yaml_parser_initialize(&parser)) {
        fclose(fp);
        return conf_error_at(&ctx, 0, "out of memory");
    }
    yaml_parser_set_input_file(&parser, fp);
    int rc = conf_parse(&ctx, &parser, out);
    yaml_parser_delete(&parser);
    fclose(fp);
    return rc;
}

int conf_yaml_load_text(const char *text, size_t len, const char *origin,
                        struct conf **out, char *err, size_t errlen)
{
    struct conf_ctx ctx = { .path = origin, .err = err, .errlen = errlen };
    yaml_parser_t parser;

    *out = NULL;
    if (!yaml_parser_initialize(&parser)) {
        return conf_error_at(&ctx, 0, "out of memory");
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = conf_parse(&ctx, &parser, out);
    yaml_parser_delete(&parser);
    return rc;
}

/* ---- destroy ----------------------------------------------------------- */

static void conf_addr_deinit(struct conf_addr *addr)
{
    free(addr->host);
    free(addr->path);
    free(addr->resolved);
}

void conf_tier_deinit(struct conf_tier *tier)
{
    for (uint32_t i = 0; i < tier->nservers; i++) {
        struct conf_server *srv = &tier->servers[i];
        conf_addr_deinit(&srv->addr);
        free(srv->name);
        free(srv->text);
    }
    free(tier->servers);
    tier->servers = NULL;
    tier->nservers = 0;
}

static void conf_tiers_free(struct conf_tier *tiers, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        conf_tier_deinit(&tiers[i]);
    }
    free(tiers);
}

static void conf_pool_deinit(struct conf_pool *pool)
{
    free(pool->name);
    conf_addr_deinit(&pool->listen.addr);
    free(pool->listen.text);
    free(pool->redis_auth);
    conf_tier_deinit(&pool->master);
    conf_tiers_free(pool->slave, pool->slave != NULL ? 1 : 0);
    conf_tiers_free(pool->l1, pool->nl1);
    conf_tiers_free(pool->replicas, pool->nreplicas);
    conf_tiers_free(pool->slaves, pool->nslaves);
    for (uint32_t i = 0; i < pool->nsentinels; i++) {
        conf_addr_deinit(&pool->sentinels[i].addr);
        free(pool->sentinels[i].text);
    }
    free(pool->sentinels);
    for (uint32_t i = 0; i < pool->nmaster_names; i++) {
        free(pool->master_names[i]);
    }
    free(pool->master_names);
    free(pool->sentinel_auth);
}

void conf_destroy(struct conf **conf)
{
    if (conf == NULL || *conf == NULL) {
        return;
    }
    for (uint32_t i = 0; i < (*conf)->npools; i++) {
        conf_pool_deinit(&(*conf)->pools[i]);
    }
    free((*conf)->pools);
    free((*conf)->path);
    free(*conf);
    *conf = NULL;
}
