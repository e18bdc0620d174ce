/* sentinel: Sentinel replies read into a state, and the pool
 * configuration made from it (see sentinel.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata/sentinel.h"

/* ---- RESP replies ------------------------------------------------------ */

static enum sentinel_status resp_value(const char *buf, size_t len, size_t *pos,
                                       struct sentinel_val *out, int depth);

/* The line at buf[*pos..] without its CRLF: its length in *n and *pos past
 * it; AGAIN without a CRLF yet. */
static enum sentinel_status resp_line(const char *buf, size_t len, size_t *pos,
                                      const char **line, size_t *n)
{
    const char *start = buf + *pos;
    const char *lf = memchr(start, '\n', len - *pos);
    if (lf == NULL)
        return SENTINEL_AGAIN;
    if (lf == start || lf[-1] != '\r')
        return SENTINEL_ERROR;
    *line = start;
    *n = (size_t)(lf - 1 - start);
    *pos = (size_t)(lf + 1 - buf);
    return SENTINEL_OK;
}

/* A signed decimal of the whole line, or ERROR. */
static enum sentinel_status resp_int(const char *s, size_t n, int64_t *out)
{
    bool neg = n > 0 && s[0] == '-';
    size_t i = neg ? 1 : 0;
    int64_t v = 0;
    if (i == n || n - i > 18)
        return SENTINEL_ERROR;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return SENTINEL_ERROR;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return SENTINEL_OK;
}

static enum sentinel_status resp_string(struct sentinel_val *out, const char *s, size_t n)
{
    out->str = malloc(n + 1);
    if (out->str == NULL)
        return SENTINEL_ERROR;
    memcpy(out->str, s, n);
    out->str[n] = '\0';
    out->len = n;
    return SENTINEL_OK;
}

/* $N: N bytes and CRLF after the header line; $-1 is nil. */
static enum sentinel_status resp_bulk(const char *buf, size_t len, size_t *pos, int64_t n,
                                      struct sentinel_val *out)
{
    if (n < 0) {
        out->type = SENTINEL_V_NIL;
        return SENTINEL_OK;
    }
    if (n > SENTINEL_MAX_BULK)
        return SENTINEL_ERROR;
    if (len - *pos < (size_t)n + 2)
        return SENTINEL_AGAIN;
    if (buf[*pos + (size_t)n] != '\r' || buf[*pos + (size_t)n + 1] != '\n')
        return SENTINEL_ERROR;
    out->type = SENTINEL_V_BULK;
    enum sentinel_status st = resp_string(out, buf + *pos, (size_t)n);
    *pos += (size_t)n + 2;
    return st;
}

/* *N: N values; *-1 is nil. */
static enum sentinel_status resp_array(const char *buf, size_t len, size_t *pos, int64_t n,
                                       struct sentinel_val *out, int depth)
{
    if (n < 0) {
        out->type = SENTINEL_V_NIL;
        return SENTINEL_OK;
    }
    if (n > SENTINEL_MAX_ELEMS || depth >= SENTINEL_MAX_DEPTH)
        return SENTINEL_ERROR;
    out->type = SENTINEL_V_ARRAY;
    out->elems = calloc((size_t)n + 1, sizeof(*out->elems));
    if (out->elems == NULL)
        return SENTINEL_ERROR;
    for (int64_t i = 0; i < n; i++) {
        enum sentinel_status st = resp_value(buf, len, pos, &out->elems[i], depth + 1);
        out->n = (size_t)i + 1;   /* counted first: deinit frees it */
        if (st != SENTINEL_OK)
            return st;
    }
    return SENTINEL_OK;
}

/* One value at buf[*pos..]; on anything but OK, *out holds what must be
 * freed. */
static enum sentinel_status resp_value(const char *buf, size_t len, size_t *pos,
                                       struct sentinel_val *out, int depth)
{
    const char *line;
    size_t n;
    int64_t num = 0;
    memset(out, 0, sizeof(*out));
    if (*pos >= len)
        return SENTINEL_AGAIN;
    char kind = buf[*pos];
    (*pos)++;
    enum sentinel_status st = resp_line(buf, len, pos, &line, &n);
    if (st != SENTINEL_OK)
        return st;
    switch (kind) {
    case '+':
        out->type = SENTINEL_V_STATUS;
        return resp_string(out, line, n);
    case '-':
        out->type = SENTINEL_V_ERROR;
        return resp_string(out, line, n);
    case ':':
        out->type = SENTINEL_V_INT;
        return resp_int(line, n, &out->integer);
    case '$':
        st = resp_int(line, n, &num);
        return st == SENTINEL_OK ? resp_bulk(buf, len, pos, num, out) : st;
    case '*':
        st = resp_int(line, n, &num);
        return st == SENTINEL_OK ? resp_array(buf, len, pos, num, out, depth) : st;
    default:
        return SENTINEL_ERROR;
    }
}

enum sentinel_status sentinel_resp_parse(const char *buf, size_t len, size_t *used,
                                         struct sentinel_val *out)
{
    size_t pos = 0;
    enum sentinel_status st = resp_value(buf, len, &pos, out, 0);
    if (st != SENTINEL_OK) {
        sentinel_val_deinit(out);
        return st;
    }
    *used = pos;
    return SENTINEL_OK;
}

void sentinel_val_deinit(struct sentinel_val *v)
{
    for (size_t i = 0; i < v->n; i++)
        sentinel_val_deinit(&v->elems[i]);
    free(v->elems);
    free(v->str);
    memset(v, 0, sizeof(*v));
}

char *sentinel_command(uint32_t argc, const char *const *argv, size_t *len)
{
    size_t cap = 16;
    for (uint32_t i = 0; i < argc; i++)
        cap += strlen(argv[i]) + 32;
    char *buf = malloc(cap);
    if (buf == NULL)
        return NULL;
    size_t n = (size_t)snprintf(buf, cap, "*%u\r\n", argc);
    for (uint32_t i = 0; i < argc; i++)
        n += (size_t)snprintf(buf + n, cap - n, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    *len = n;
    return buf;
}

/* ---- Sentinel's replies ------------------------------------------------ */

static bool val_is_text(const struct sentinel_val *v)
{
    return v->type == SENTINEL_V_BULK || v->type == SENTINEL_V_STATUS;
}

/* host and a decimal port into out: 0 or -1. */
static int node_set(struct sentinel_node *out, const char *host, const char *port)
{
    char *end;
    long p = strtol(port, &end, 10);
    if (host[0] == '\0' || strlen(host) >= sizeof(out->host) || *end != '\0' || end == port ||
        p < 1 || p > 65535)
        return -1;
    snprintf(out->host, sizeof(out->host), "%s", host);
    out->port = (uint16_t)p;
    return 0;
}

int sentinel_master_reply(const struct sentinel_val *v, struct sentinel_node *out)
{
    if (v->type != SENTINEL_V_ARRAY || v->n != 2 || !val_is_text(&v->elems[0]) ||
        !val_is_text(&v->elems[1]))
        return -1;
    return node_set(out, v->elems[0].str, v->elems[1].str);
}

/* The value of `key` in a flat key-value array, or NULL. */
static const char *flat_get(const struct sentinel_val *v, const char *key)
{
    for (size_t i = 0; i + 1 < v->n; i += 2)
        if (val_is_text(&v->elems[i]) && val_is_text(&v->elems[i + 1]) &&
            strcmp(v->elems[i].str, key) == 0)
            return v->elems[i + 1].str;
    return NULL;
}

/* Whether the comma-separated `flags` holds `flag`. */
static bool flag_has(const char *flags, const char *flag)
{
    size_t n = strlen(flag);
    for (const char *p = flags; p != NULL; p = strchr(p, ',') != NULL ? strchr(p, ',') + 1 : NULL)
        if (strncmp(p, flag, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

/* One replica's entry: true with *out when it can serve reads. */
static bool replica_usable(const struct sentinel_val *e, struct sentinel_node *out)
{
    if (e->type != SENTINEL_V_ARRAY)
        return false;
    const char *ip = flat_get(e, "ip"), *port = flat_get(e, "port");
    const char *flags = flat_get(e, "flags"), *link = flat_get(e, "master-link-status");
    if (ip == NULL || port == NULL || flags == NULL || node_set(out, ip, port) != 0)
        return false;
    if (flag_has(flags, "s_down") || flag_has(flags, "o_down") ||
        flag_has(flags, "disconnected"))
        return false;
    return link == NULL || strcmp(link, "ok") == 0;
}

static int node_cmp(const void *a, const void *b)
{
    const struct sentinel_node *x = a, *y = b;
    int c = strcmp(x->host, y->host);
    return c != 0 ? c : (int)x->port - (int)y->port;
}

int sentinel_replicas_reply(const struct sentinel_val *v, struct sentinel_shard *shard)
{
    if (v->type != SENTINEL_V_ARRAY)
        return -1;
    shard->nreplicas = 0;
    for (size_t i = 0; i < v->n && shard->nreplicas < SENTINEL_MAX_REPLICAS; i++)
        if (replica_usable(&v->elems[i], &shard->replicas[shard->nreplicas]))
            shard->nreplicas++;
    qsort(shard->replicas, shard->nreplicas, sizeof(shard->replicas[0]), node_cmp);
    return 0;
}

bool sentinel_role_is_master(const struct sentinel_val *v)
{
    return v->type == SENTINEL_V_ARRAY && v->n >= 1 && val_is_text(&v->elems[0]) &&
           strcmp(v->elems[0].str, "master") == 0;
}

bool sentinel_event(const struct sentinel_val *v, char *channel, size_t len)
{
    if (v->type != SENTINEL_V_ARRAY || v->n != 3 || !val_is_text(&v->elems[0]) ||
        !val_is_text(&v->elems[1]) || strcmp(v->elems[0].str, "message") != 0)
        return false;
    snprintf(channel, len, "%s", v->elems[1].str);
    return true;
}

int sentinel_instance_event(const char *payload, struct sentinel_node *node, char *master,
                            size_t len)
{
    char type[32], name[300], ip[SENTINEL_HOST_LEN], port[8], at[2], mname[256];
    if (strlen(payload) >= 1024 ||
        sscanf(payload, "%31s %299s %255s %7s %1s %255s", type, name, ip, port, at,
               mname) != 6 || strcmp(at, "@") != 0 || node_set(node, ip, port) != 0)
        return -1;
    snprintf(master, len, "%s", mname);
    return 0;
}

bool sentinel_shard_equal(const struct sentinel_shard *a, const struct sentinel_shard *b)
{
    if (node_cmp(&a->master, &b->master) != 0 || a->nreplicas != b->nreplicas)
        return false;
    for (uint32_t i = 0; i < a->nreplicas; i++)
        if (node_cmp(&a->replicas[i], &b->replicas[i]) != 0)
            return false;
    return true;
}

/* ---- the pool from a state --------------------------------------------- */

/* Points srv at node ("host:port:weight" as its text). 0 or -1. */
static int server_set(struct conf_server *srv, const struct sentinel_node *node)
{
    char text[SENTINEL_HOST_LEN + 32];
    bool v6 = strchr(node->host, ':') != NULL;
    snprintf(text, sizeof(text), v6 ? "[%s]:%u:%u" : "%s:%u:%u", node->host,
             (unsigned)node->port, (unsigned)srv->weight);
    char *host = strdup(node->host), *t = strdup(text);
    if (host == NULL || t == NULL) {
        free(host);
        free(t);
        return -1;
    }
    free(srv->addr.host);
    free(srv->addr.path);
    free(srv->text);
    srv->addr.host = host;
    srv->addr.path = NULL;
    srv->addr.port = node->port;
    srv->text = t;
    return 0;
}

static void slaves_free(struct conf_pool *pool)
{
    for (uint32_t k = 0; k < pool->nslaves; k++)
        conf_tier_deinit(&pool->slaves[k]);
    free(pool->slaves);
    pool->slaves = NULL;
    pool->nslaves = 0;
    pool->read_from_master = true;
}

/* Slave tier k: master's settings, replica k mod n of every shard. */
static int slave_tier_fill(struct conf_tier *tier, const struct conf_pool *pool,
                           const struct sentinel_state *st, uint32_t k)
{
    *tier = pool->master;
    tier->servers = calloc(st->nshards, sizeof(*tier->servers));
    tier->nservers = 0;
    if (tier->servers == NULL)
        return -1;
    for (uint32_t i = 0; i < st->nshards; i++) {
        const struct sentinel_shard *sh = &st->shards[i];
        struct conf_server *srv = &tier->servers[i];
        tier->nservers = i + 1;
        srv->weight = pool->master.servers[i].weight;
        srv->line = pool->master.servers[i].line;
        srv->name = strdup(pool->master.servers[i].name);
        const struct sentinel_node *node =
            sh->nreplicas > 0 ? &sh->replicas[k % sh->nreplicas] : &sh->master;
        if (srv->name == NULL || server_set(srv, node) != 0)
            return -1;
    }
    return 0;
}

static int slaves_fill(struct conf_pool *pool, const struct sentinel_state *st)
{
    uint32_t n = 0;
    slaves_free(pool);
    for (uint32_t i = 0; i < st->nshards && pool->sentinel_read_replicas; i++)
        n = st->shards[i].nreplicas > n ? st->shards[i].nreplicas : n;
    if (n == 0)
        return 0;
    pool->slaves = calloc(n, sizeof(*pool->slaves));
    if (pool->slaves == NULL)
        return -1;
    for (uint32_t k = 0; k < n; k++) {
        pool->nslaves = k + 1;   /* counted first: destroy frees it */
        if (slave_tier_fill(&pool->slaves[k], pool, st, k) != 0)
            return -1;
    }
    pool->read_from_master = false;
    return 0;
}

int sentinel_pool_fill(struct conf_pool *pool, const struct sentinel_state *st)
{
    if (pool->nsentinels == 0 || pool->master.nservers != st->nshards)
        return -1;
    for (uint32_t i = 0; i < st->nshards; i++)
        if (server_set(&pool->master.servers[i], &st->shards[i].master) != 0)
            return -1;
    return slaves_fill(pool, st);
}

struct conf *sentinel_conf_switch(const struct conf *running, const char *name,
                                  const struct sentinel_state *st)
{
    struct conf *conf = conf_copy(running);
    struct conf_pool *pool = conf != NULL ? conf_pool_find(conf, name) : NULL;
    if (pool == NULL || sentinel_pool_fill(pool, st) != 0)
        conf_destroy(&conf);
    return conf;
}
