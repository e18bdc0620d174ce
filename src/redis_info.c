/* redis_info: INFO and COMMAND as a Redis pool's proxy answers them,
 * composed from the counters and the command table it is handed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "strata/redis_info.h"

/* INFO's sections, in the order they are written. */
#define REDIS_INFO_SERVER  (1u << 0)
#define REDIS_INFO_CLIENTS (1u << 1)
#define REDIS_INFO_STATS   (1u << 2)
#define REDIS_INFO_SERVERS (1u << 3)
#define REDIS_INFO_TIERS   (1u << 4)
#define REDIS_INFO_BACKENDS (1u << 5)
#define REDIS_INFO_ALL     0x3fu

static const struct {
    const char *name;
    unsigned    mask;
} redis_info_sections[] = {
    { "server", REDIS_INFO_SERVER },   { "clients", REDIS_INFO_CLIENTS },
    { "stats", REDIS_INFO_STATS },     { "servers", REDIS_INFO_SERVERS },
    { "tiers", REDIS_INFO_TIERS },     { "backends", REDIS_INFO_BACKENDS },
    { "all", REDIS_INFO_ALL },
    { "default", REDIS_INFO_ALL },     { "everything", REDIS_INFO_ALL },
};

#define REDIS_INFO_NAME(name, kind, desc) #name,
static const char *const redis_info_pool_names[] = { STATS_POOL_LIST(REDIS_INFO_NAME) };
static const char *const redis_info_server_names[] = { STATS_SERVER_LIST(REDIS_INFO_NAME) };
static const char *const redis_info_tier_names[] = { STATS_TIER_LIST(REDIS_INFO_NAME) };
#undef REDIS_INFO_NAME
#define REDIS_INFO_LIMIT_NAME(name, desc) #name,
static const char *const redis_info_limit_names[] = { STATS_LIMIT_LIST(REDIS_INFO_LIMIT_NAME) };
#undef REDIS_INFO_LIMIT_NAME

/* The sections args[1..) of req ask for: all when none is named; an
 * unknown name asks for nothing. */
static unsigned redis_info_mask(const struct redis_req *req)
{
    unsigned mask = 0;
    if (req->nargs < 2)
        return REDIS_INFO_ALL;
    for (uint32_t a = 1; a < req->nargs; a++) {
        const char *p = req->buf + req->args[a].off;
        size_t len = req->args[a].len;
        for (size_t i = 0; i < sizeof(redis_info_sections) / sizeof(redis_info_sections[0]); i++)
            if (strlen(redis_info_sections[i].name) == len &&
                strncasecmp(redis_info_sections[i].name, p, len) == 0)
                mask |= redis_info_sections[i].mask;
    }
    return mask;
}

static int64_t redis_info_read(const int64_t *field)
{
    return __atomic_load_n(field, __ATOMIC_RELAXED);
}

/* "# Name\r\n", after a blank line unless it is the first section. */
static void redis_info_header(struct evbuffer *text, const char *name)
{
    if (evbuffer_get_length(text) > 0)
        evbuffer_add(text, "\r\n", 2);
    evbuffer_add_printf(text, "# %s\r\n", name);
}

/* Appends s with the bytes INFO's "k=v,k=v" values cannot carry (',',
 * '=', ':' in a key, control characters) replaced by '_'. */
static void redis_info_word(struct evbuffer *text, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == ',' || ch == '=' || (unsigned char)ch < 0x20 || ch == 0x7f)
            ch = '_';
        evbuffer_add(text, &ch, 1);
    }
}

static void redis_info_server(struct evbuffer *text, const struct redis_info_proc *proc,
                              const struct conf_pool *pool)
{
    redis_info_header(text, "Server");
    evbuffer_add_printf(text,
        "strata_version:%s\r\nproxy_mode:%s\r\nprocess_id:%ld\r\n"
        "uptime_in_seconds:%lld\r\nuptime_in_days:%lld\r\nworkers:%u\r\npool:",
        proc->version, "strata", proc->pid, (long long)proc->uptime_s,
        (long long)(proc->uptime_s / 86400), proc->workers);
    redis_info_word(text, pool->name, strlen(pool->name));
    evbuffer_add_printf(text,
        "\r\nconfig_generation:%llu\r\nconfig_loaded_at:%lld\r\nconfig_source:",
        (unsigned long long)proc->generation, (long long)proc->loaded_at);
    if (proc->source != NULL)
        redis_info_word(text, proc->source, strlen(proc->source));
    evbuffer_add_printf(text, "\r\nreloads:%llu\r\nreload_failures:%llu\r\n"
                        "dns_failures:%llu\r\n", (unsigned long long)proc->reloads,
                        (unsigned long long)proc->reload_failures,
                        (unsigned long long)proc->dns_failures);
}

/* Pool field f summed over the workers' stats. */
static int64_t redis_info_pool_sum(const struct redis_info_pool *pool, int f)
{
    int64_t sum = 0;
    for (uint32_t w = 0; w < pool->nstats; w++)
        sum += redis_info_read(&pool->stats[w]->f[f]);
    return sum;
}

static void redis_info_clients(struct evbuffer *text, const struct redis_info_proc *proc,
                               const struct redis_info_pool *pool)
{
    redis_info_header(text, "Clients");
    evbuffer_add_printf(text, "connected_clients:%lld\r\ntotal_connections_received:%lld\r\n",
                        (long long)redis_info_pool_sum(pool, STATS_client_connections),
                        (long long)proc->total_connections);
}

/* The pool's counters (its client_connections gauge is in Clients),
 * then its limit counters. */
static void redis_info_stats(struct evbuffer *text, const struct redis_info_pool *pool)
{
    redis_info_header(text, "Stats");
    for (int f = 0; f < STATS_POOL_NFIELDS; f++)
        if (f != STATS_client_connections)
            evbuffer_add_printf(text, "%s:%lld\r\n", redis_info_pool_names[f],
                                (long long)redis_info_pool_sum(pool, f));
    for (int f = 0; f < STATS_LIMIT_NFIELDS; f++) {
        int64_t sum = 0;
        for (uint32_t w = 0; w < pool->nstats; w++)
            sum += redis_info_read(&pool->stats[w]->limits[f]);
        evbuffer_add_printf(text, "%s:%lld\r\n", redis_info_limit_names[f], (long long)sum);
    }
}

/* Server field f of flat server s: counters summed over workers, the
 * ejection time the latest any worker saw. */
static int64_t redis_info_server_sum(const struct redis_info_pool *pool, uint32_t s, int f)
{
    int64_t sum = 0;
    for (uint32_t w = 0; w < pool->nstats; w++) {
        if (s >= pool->stats[w]->nservers)
            continue;
        int64_t v = redis_info_read(&pool->stats[w]->servers[s].f[f]);
        if (f == STATS_server_ejected_at)
            sum = v > sum ? v : sum;
        else
            sum += v;
    }
    return sum;
}

/* One "serverN:k=v,..." line. ejected is 1 while the latest ejection
 * (server_ejected_at, usec) is less than server_retry_timeout ago. */
static void redis_info_server_line(struct evbuffer *text, const struct redis_info_pool *pool,
                                   const struct redis_info_proc *proc, uint32_t s,
                                   const struct conf_tier *tier, const char *tier_name,
                                   const struct conf_server *cs)
{
    static const int fields[] = { STATS_requests, STATS_responses, STATS_server_err,
                                  STATS_server_timedout, STATS_server_eof,
                                  STATS_server_connections, STATS_server_ejected_at };
    const char *weight = strrchr(cs->text, ':');   /* text is "addr:weight" */
    size_t alen = weight != NULL ? (size_t)(weight - cs->text) : strlen(cs->text);
    char *label = stats_server_label(cs);
    evbuffer_add_printf(text, "server%u:tier=%s,name=", s, tier_name);
    redis_info_word(text, label, strlen(label));
    free(label);
    evbuffer_add(text, ",addr=", 6);
    redis_info_word(text, cs->text, alen);
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        evbuffer_add_printf(text, ",%s=%lld", redis_info_server_names[fields[i]],
                            (long long)redis_info_server_sum(pool, s, fields[i]));
    int64_t at_ms = redis_info_server_sum(pool, s, STATS_server_ejected_at) / 1000;
    bool ejected = at_ms > 0 && proc->now_ms < at_ms + tier->server_retry_timeout_ms;
    evbuffer_add_printf(text, ",ejected=%d\r\n", ejected ? 1 : 0);
}

/* Every server of every tier, in the order the stats index them
 * (master, then the other tiers; each as the pool file lists them). */
static void redis_info_servers(struct evbuffer *text, const struct redis_info_proc *proc,
                               const struct redis_info_pool *pool)
{
    const struct conf_tier *tier;
    uint32_t flat = 0;
    char name[32];
    redis_info_header(text, "Servers");
    for (uint32_t t = 0; (tier = stats_pool_tier(pool->conf, t)) != NULL; t++) {
        stats_tier_name(pool->conf, t, name, sizeof(name));
        for (uint32_t i = 0; i < tier->nservers; i++, flat++)
            redis_info_server_line(text, pool, proc, flat, tier, name, &tier->servers[i]);
    }
}

/* The Backends section: the servers' own counters per tier, from the
 * last background round (backend_stats). */
static void redis_info_backends(struct evbuffer *text, struct evbuffer *lines)
{
    redis_info_header(text, "Backends");
    evbuffer_add_buffer(text, lines);
}

/* Tiered pools: "tierN:name=...,servers=...,<the tier counters of the
 * pool's protocol>". */
static void redis_info_tiers(struct evbuffer *text, const struct redis_info_pool *pool)
{
    const struct conf_tier *tier;
    char name[32];
    redis_info_header(text, "Tiers");
    for (uint32_t t = 0; (tier = stats_pool_tier(pool->conf, t)) != NULL; t++) {
        stats_tier_name(pool->conf, t, name, sizeof(name));
        evbuffer_add_printf(text, "tier%u:name=%s,servers=%u", t, name, tier->nservers);
        for (int f = 0; f < STATS_TIER_NFIELDS; f++) {
            if (stats_tier_field_redis(f) != pool->conf->redis)
                continue;
            int64_t sum = 0;
            for (uint32_t w = 0; w < pool->nstats; w++)
                if (t < pool->stats[w]->ntiers)
                    sum += redis_info_read(&pool->stats[w]->tiers[t].f[f]);
            evbuffer_add_printf(text, ",%s=%lld", redis_info_tier_names[f], (long long)sum);
        }
        evbuffer_add(text, "\r\n", 2);
    }
}

int redis_info_compose(struct evbuffer *out, const struct redis_req *req,
                       const struct redis_info_proc *proc,
                       const struct redis_info_pool *pool)
{
    struct evbuffer *text = evbuffer_new();
    if (text == NULL)
        return -1;
    unsigned mask = redis_info_mask(req);
    if (mask & REDIS_INFO_SERVER)
        redis_info_server(text, proc, pool->conf);
    if (mask & REDIS_INFO_CLIENTS)
        redis_info_clients(text, proc, pool);
    if (mask & REDIS_INFO_STATS)
        redis_info_stats(text, pool);
    if (mask & REDIS_INFO_SERVERS)
        redis_info_servers(text, proc, pool);
    if ((mask & REDIS_INFO_TIERS) && pool->conf->tiered)
        redis_info_tiers(text, pool);
    if ((mask & REDIS_INFO_BACKENDS) && pool->backends != NULL &&
        evbuffer_get_length(pool->backends) > 0)
        redis_info_backends(text, pool->backends);
    int rc = redis_compose_bulk_buffer(out, text);
    evbuffer_free(text);
    return rc;
}

/* ---- COMMAND ---- */

/* One entry in Redis's short shape: name, arity, flags, first key, last
 * key, step. Flags: "readonly" for the table's read-only commands,
 * "fast" for the proxy's own, else "write". Keys as the table places
 * them; EVAL's keys move with numkeys: 0 0 0, as Redis writes a
 * movable-keys command. */
static int redis_info_command_entry(struct evbuffer *out, const struct redis_cmd *cmd)
{
    int64_t first = 1, last = 1, step = 1;
    const char *flag = cmd->readonly ? "readonly" : "write";
    if (cmd->kind == REDIS_KIND_PROXY) {
        flag = "fast";
        first = last = step = 0;
    } else if (cmd->kind == REDIS_KIND_EVAL) {
        first = last = step = 0;
    } else if (cmd->kind == REDIS_KIND_MULTI || cmd->kind == REDIS_KIND_PAIRS) {
        last = -1;
        step = cmd->kind == REDIS_KIND_PAIRS ? 2 : 1;
    }
    if (redis_compose_array_header(out, 6) != 0 ||
        redis_compose_bulk(out, cmd->name, strlen(cmd->name)) != 0 ||
        redis_compose_integer(out, cmd->arity) != 0 ||
        redis_compose_array_header(out, 1) != 0 ||
        redis_compose_status(out, flag) != 0 ||
        redis_compose_integer(out, first) != 0 ||
        redis_compose_integer(out, last) != 0)
        return -1;
    return redis_compose_integer(out, step);
}

/* Every command of the table (COMMAND), or only the names (LIST). */
static int redis_info_command_all(struct evbuffer *out, bool names_only)
{
    size_t n;
    const struct redis_cmd *t = redis_cmd_table(&n);
    if (redis_compose_array_header(out, (uint32_t)n) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int rc = names_only ? redis_compose_bulk(out, t[i].name, strlen(t[i].name))
                            : redis_info_command_entry(out, &t[i]);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* COMMAND INFO name...: an entry per name, nil for one not in the table. */
static int redis_info_command_info(struct evbuffer *out, const struct redis_req *req)
{
    if (redis_compose_array_header(out, req->nargs - 2) != 0)
        return -1;
    for (uint32_t a = 2; a < req->nargs; a++) {
        const struct redis_cmd *cmd =
            redis_cmd_lookup(req->buf + req->args[a].off, req->args[a].len);
        int rc = cmd != NULL ? redis_info_command_entry(out, cmd) : redis_compose_nil(out);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* Whether args[i] is `word`, in any case. */
static bool redis_info_arg_is(const struct redis_req *req, uint32_t i, const char *word)
{
    return req->args[i].len == strlen(word) &&
           strncasecmp(req->buf + req->args[i].off, word, req->args[i].len) == 0;
}

int redis_info_command(struct evbuffer *out, const struct redis_req *req)
{
    size_t n;
    if (req->nargs < 2)
        return redis_info_command_all(out, false);
    if (redis_info_arg_is(req, 1, "count") && req->nargs == 2) {
        redis_cmd_table(&n);
        return redis_compose_integer(out, (int64_t)n);
    }
    if (redis_info_arg_is(req, 1, "docs"))
        return redis_compose_array_header(out, 0);
    if (redis_info_arg_is(req, 1, "info") && req->nargs == 2)
        return redis_info_command_all(out, false);   /* as Redis 7: all */
    if (redis_info_arg_is(req, 1, "info"))
        return redis_info_command_info(out, req);
    if (redis_info_arg_is(req, 1, "list") && req->nargs == 2)
        return redis_info_command_all(out, true);
    /* as Redis: an error reply, the connection stays */
    if (evbuffer_add_printf(out, "-ERR unknown subcommand '") < 0)
        return -1;
    redis_info_word(out, req->buf + req->args[1].off,
                    req->args[1].len > 40 ? 40 : req->args[1].len);
    return evbuffer_add(out, "'. Try COMMAND HELP.\r\n", 22);
}
