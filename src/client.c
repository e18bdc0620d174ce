/* client: a client connection (see client.h for the picture). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "strata/backend_stats.h"
#include "strata/client.h"
#include "strata/conn.h"
#include "strata/log.h"
#include "strata/redis_info.h"
#include "strata/util.h"
#include "strata/worker.h"

struct client {
    TAILQ_ENTRY(client) link;
    struct worker_pool *wp;
    struct conn        *conn;
    struct msg_list     msgs;        /* request order; head replies first */
    uint32_t            nmsgs;
    struct msg_budget   budget;      /* reply bytes held: done msgs behind
                                        the head, gathered for msgs in
                                        flight (msg_admit reads it) */
    size_t              units;       /* units (client_units) of msgs not
                                        yet done */
    size_t              sending;     /* request bytes of msgs not yet done
                                        (a set's value on its way) */
    size_t              expect;      /* reply bytes expected per unit:
                                        running average */
    bool                learned;     /* a reply has set `expect` */
    bool                framed;      /* `parsing` holds a whole request
                                        waiting for room in the budget */
    enum mc_status      framed_st;   /* ... its framing outcome */
    enum redis_status   framed_rst;
    const char         *framed_err;
    struct msg         *parsing;     /* request being framed */
    int64_t             input_ms;    /* when bytes last came in (util_now_ms) */
    bool                in_process;  /* client_process is on the stack */
    bool                paused;      /* stopped reading: backpressure */
    bool                quitting;    /* quit or fatal input: no more requests */
    bool                eof_seen;    /* the peer closed its side (counted) */
    bool                closing;     /* waiting for output to drain */
    bool                draining;    /* the worker stops: read no more */
    bool                lingering;   /* drained, write side shut: waiting
                                        for the peer's close */
    bool                authed;      /* Redis: AUTH accepted (or none needed) */
    size_t              reserved;    /* Redis: bytes of the request being
                                        framed announced but not arrived,
                                        counted in the worker's buffered */
    uint8_t             auth_failures; /* Redis: wrong passwords on this
                                        connection (closed at the limit) */
    bool                counted;     /* in wp->shared->clients (client_connections) */
};

static bool client_process(struct client *c);
static void client_unreserve(struct client *c);
static void client_msg_done(struct msg *msg);
static void client_write_done(struct client *c);

static void client_close(struct client *c)
{
    struct worker *w = c->wp->worker;
    struct msg *msg;
    while ((msg = TAILQ_FIRST(&c->msgs)) != NULL) {
        TAILQ_REMOVE(&c->msgs, msg, link);
        msg->client = NULL;
        msg->budget = NULL;
        if (msg->done)
            msg_put(msg);
        /* else: the policy still holds it; client_msg_done releases it */
    }
    if (c->parsing != NULL)
        msg_put(c->parsing);
    client_unreserve(c);
    TAILQ_REMOVE(&w->clients, c, link);
    stats_pool_add(c->wp->stats, client_connections, -1);
    stats_add(&w->stats.curr_connections, -1);
    if (c->counted)
        __atomic_fetch_sub(&c->wp->shared->clients, 1, __ATOMIC_RELAXED);
    c->wp->nclients--;
    conn_destroy(&c->conn);
    free(c);
}

static bool client_maybe_close(struct client *c);

/* Drain: no new request is read or framed; what was framed is answered
 * and written, then the client closes (client_maybe_close). Bytes read
 * but not yet framed are dropped with the connection. wp NULL: every
 * client of the worker, else those of that pool. */
static void client_stop_reading(struct worker *w, const struct worker_pool *wp)
{
    struct client *c, *next;
    for (c = TAILQ_FIRST(&w->clients); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (wp != NULL && c->wp != wp)
            continue;
        c->quitting = true;
        c->draining = true;
        conn_want_read(c->conn, false);
        client_write_done(c);
        client_maybe_close(c);
    }
}

void client_stop_reading_all(struct worker *w)
{
    client_stop_reading(w, NULL);
}

void client_stop_reading_pool(struct worker *w, const struct worker_pool *wp)
{
    client_stop_reading(w, wp);
}

void client_close_pool(struct worker *w, const struct worker_pool *wp)
{
    struct client *c, *next;
    for (c = TAILQ_FIRST(&w->clients); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->wp == wp)
            client_close(c);
    }
}

/* A client holds a partial request: bytes it sent that cannot be framed
 * yet, while we are not the ones holding them back (pause, close). */
static bool client_partial(struct client *c)
{
    return !c->paused && !c->closing && !c->lingering && !c->quitting &&
           evbuffer_get_length(conn_input(c->conn)) > 0;
}

void client_sweep(struct worker *w)
{
    int timeout = w->rt->settings->client_request_timeout_ms;
    int64_t now = util_now_ms();
    struct client *c, *next;
    for (c = TAILQ_FIRST(&w->clients); timeout > 0 && c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (!client_partial(c) || now - c->input_ms < timeout)
            continue;
        log_info("client: partial request idle for %d ms, closing", timeout);
        stats_limit_add(c->wp->stats, request_timeout, 1);
        client_close(c);
    }
}

bool client_lingering(struct worker *w)
{
    struct client *c;
    TAILQ_FOREACH(c, &w->clients, link)
        if (c->lingering)
            return true;
    return false;
}

/* Closes a drained client whose replies are all written. Closing a socket
 * with unread bytes makes the kernel answer with a reset that can destroy
 * replies not yet delivered, so a client that kept sending gets its write
 * side shut (FIN after the last reply) and its input discarded until it
 * closes (or the worker's drain deadline). Returns true if it is gone. */
static bool client_close_drained(struct client *c)
{
    int fd = conn_fd(c->conn), unread = 0;
    struct evbuffer *in = conn_input(c->conn);
    if (conn_eof(c->conn) || ioctl(fd, FIONREAD, &unread) != 0 || unread == 0) {
        client_close(c);
        return true;
    }
    shutdown(fd, SHUT_WR);
    c->lingering = true;
    c->closing = false;
    evbuffer_drain(in, evbuffer_get_length(in));   /* so reading resumes */
    conn_want_read(c->conn, true);
    return false;
}

void client_close_all(struct worker *w)
{
    struct client *c;
    while ((c = TAILQ_FIRST(&w->clients)) != NULL)
        client_close(c);
}

bool client_output_pending(struct worker *w)
{
    struct client *c;
    TAILQ_FOREACH(c, &w->clients, link)
        if (evbuffer_get_length(conn_output(c->conn)) > 0)
            return true;
    return false;
}

uint32_t client_requests_in_flight(struct worker *w)
{
    uint32_t framing = 0;
    struct client *c;
    TAILQ_FOREACH(c, &w->clients, link)
        framing += c->parsing != NULL;
    return w->msgs.busy - framing;
}

/* Moves the replies of finished requests at the head of the queue to the
 * socket's output, in request order. */
static void client_write_done(struct client *c)
{
    struct evbuffer *out = conn_output(c->conn);
    struct msg *msg;
    bool wrote = false;
    while ((msg = TAILQ_FIRST(&c->msgs)) != NULL && msg->done) {
        TAILQ_REMOVE(&c->msgs, msg, link);
        metrics_hist_observe(&c->wp->stats->latency,
                             conn_loop_now_ns(&c->wp->worker->loop) - msg->parsed_ns);
        c->nmsgs--;
        c->budget.held -= evbuffer_get_length(msg->reply);
        if (!msg->req.noreply && evbuffer_get_length(msg->reply) > 0) {
            evbuffer_add_buffer(out, msg->reply);
            wrote = true;
        }
        msg_put(msg);
    }
    if (wrote)
        conn_send(c->conn);
}

/* Learns the reply size per unit from a whole reply of `units` units:
 * the first reply sets it, later ones move a running average; a reply
 * of no units (a memcached line) teaches nothing. */
static void client_learn(struct client *c, size_t len, uint32_t units)
{
    if (units == 0)
        return;
    size_t per = len / units;
    c->expect = c->learned ? (3 * c->expect + per) / 4 : per;
    c->learned = true;
}

/* The done callback of every msg: its reply is whole. Writes what can be
 * written in order and resumes reading; a msg whose client has gone is
 * released. */
static void client_msg_done(struct msg *msg)
{
    struct client *c = msg->client;
    msg->done = true;
    if (c == NULL) {
        msg_put(msg);
        return;
    }
    size_t len = evbuffer_get_length(msg->reply);
    c->budget.gathered -= msg->gathered;
    msg->budget = NULL;
    c->budget.held += len;
    c->units -= msg->units;
    c->sending -= msg->req_bytes;
    client_learn(c, len, msg->units);
    client_write_done(c);
    if (!c->in_process)
        client_process(c);
}

static void msg_reply_now(struct msg *msg, const char *fmt, const char *arg)
{
    evbuffer_add_printf(msg->reply, fmt, arg);
    client_msg_done(msg);
}

static void reply_stats(struct client *c, struct msg *msg)
{
    const struct runtime *rt = c->wp->worker->rt;
    int64_t now = util_wall_s(), total = 0, curr = 0;
    for (uint32_t i = 0; i < rt->nworkers; i++) {
        total += __atomic_load_n(&rt->stats[i]->total_connections, __ATOMIC_RELAXED);
        curr += __atomic_load_n(&rt->stats[i]->curr_connections, __ATOMIC_RELAXED);
    }
    evbuffer_add_printf(msg->reply,
        "STAT pid %ld\r\nSTAT uptime %lld\r\nSTAT time %lld\r\n"
        "STAT version %s\r\nSTAT threads %u\r\nSTAT curr_connections %lld\r\n"
        "STAT total_connections %lld\r\n",
        (long)getpid(), (long long)(now - rt->start_time_s), (long long)now,
        PACKAGE_VERSION, rt->nworkers, (long long)curr, (long long)total);
    stats_limits_stat_lines(msg->reply, rt->stats, rt->nworkers);
    /* the configuration this worker serves (reload) */
    const struct config_gen *gen = c->wp->worker->gen;
    if (gen != NULL)
        evbuffer_add_printf(msg->reply,
            "STAT config_generation %llu\r\nSTAT config_source %s\r\n"
            "STAT config_loaded_at %lld\r\nSTAT reloads %llu\r\n"
            "STAT reload_failures %llu\r\nSTAT dns_failures %llu\r\n",
            (unsigned long long)gen->generation, gen->source, (long long)gen->loaded_at,
            (unsigned long long)__atomic_load_n(&rt->reloads, __ATOMIC_RELAXED),
            (unsigned long long)__atomic_load_n(&rt->reload_failures, __ATOMIC_RELAXED),
            (unsigned long long)__atomic_load_n(&rt->dns_failures, __ATOMIC_RELAXED));
    evbuffer_add(msg->reply, "END\r\n", 5);
    client_msg_done(msg);
}

/* "stats backends": the pool's servers' own counters, summed per tier,
 * from the last round of backend_stats (empty when it is off). */
static void reply_stats_backends(struct client *c, struct msg *msg)
{
    const struct runtime *rt = c->wp->worker->rt;
    struct backend_stats *bs = __atomic_load_n(&rt->backend_stats, __ATOMIC_ACQUIRE);
    backend_stats_stat_lines(bs, c->wp->conf->name, msg->reply);
    evbuffer_add(msg->reply, "END\r\n", 5);
    client_msg_done(msg);
}

/* Whether the process may take more work: its buffered bytes are under
 * max_memory (msg_memory_ok). */
static bool client_memory_ok(const struct worker *w)
{
    return msg_memory_ok(&w->msgs, 0);
}

/* Redis: the bytes a request's heads announce are counted in the
 * worker's buffered bytes as soon as they are announced (c->reserved,
 * less what has arrived), so max_memory bounds what large requests will
 * hold before they hold it. A request larger than memcached's limits
 * (max_line_size + max_value_size) that the process has no room for is
 * refused: false. Smaller ones are always let through (they are refused
 * with "out of memory" when whole, as before). */
static bool client_reserve(struct client *c, const struct redis_req *req)
{
    struct worker *w = c->wp->worker;
    const struct mc_limits *lim = &w->rt->limits;
    size_t have = evbuffer_get_length(conn_input(c->conn));
    size_t need = req->want > have ? req->want - have : 0;
    if (need > c->reserved && req->want > lim->max_line + lim->max_value &&
        !msg_memory_ok(&w->msgs, need - c->reserved))
        return false;
    stats_add(&w->stats.buffered, (int64_t)need - (int64_t)c->reserved);
    c->reserved = need;
    return true;
}

static void client_unreserve(struct client *c)
{
    stats_add(&c->wp->worker->stats.buffered, -(int64_t)c->reserved);
    c->reserved = 0;
}

/* Over max_memory: the request is refused before any backend is asked. */
static void client_shed(struct client *c, struct msg *msg)
{
    stats_limit_add(c->wp->stats, out_of_memory, 1);
    msg_reply_now(msg, "%s", "SERVER_ERROR out of memory\r\n");
}

/* Runs one parsed request: the proxy answers version, verbosity, stats,
 * quit and a gat without keys itself; everything else goes to the pool's
 * policy. */
static void client_execute(struct client *c, struct msg *msg)
{
    switch (msg->req.cmd) {
    case MC_CMD_QUIT:
        c->quitting = true;
        msg->req.noreply = true;
        client_msg_done(msg);
        break;
    case MC_CMD_VERSION:
        msg_reply_now(msg, "VERSION %s\r\n", PACKAGE_VERSION);
        break;
    case MC_CMD_VERBOSITY:
        msg_reply_now(msg, "%s\r\n", "OK");
        break;
    case MC_CMD_STATS:
        /* Only plain "stats" is the proxy's; sub-commands and noreply
         * are unknown here, as memcached answers unknown ones. */
        if (msg->req.arg.len == 8 && memcmp(msg->req.line + msg->req.arg.off, "backends", 8) == 0)
            reply_stats_backends(c, msg);
        else if (msg->req.arg.len > 0)
            msg_reply_now(msg, "%s", "ERROR\r\n");
        else
            reply_stats(c, msg);
        break;
    default:
        if (msg->req.nkeys == 0 && mc_cmd_kind(msg->req.cmd) == MC_KIND_RETRIEVAL)
            msg_reply_now(msg, "%s", "END\r\n");   /* "gat 10", as memcached */
        else if (!client_memory_ok(c->wp->worker))
            client_shed(c, msg);
        else
            policy_dispatch(c->wp->policy, msg, client_msg_done);
        break;
    }
}

/* A request that could not be run. Under noreply the error is counted
 * and not written, as memcached does; a stream that can no longer be
 * framed (fatal) is closed, its error written only when a reply is
 * awaited, so a noreply client is never answered out of step. */
static void client_reject(struct client *c, struct msg *msg, enum mc_status st,
                          const char *err)
{
    if (st == MC_UNKNOWN) {
        msg->req.noreply = false;
        msg_reply_now(msg, "%s", "ERROR\r\n");
        return;
    }
    if (st == MC_FATAL)
        c->quitting = true;
    if (st == MC_FATAL || msg->req.noreply)
        stats_pool_add(c->wp->stats, client_err, 1);
    msg_reply_now(msg, "CLIENT_ERROR %s\r\n", err != NULL ? err : "bad request");
}

/* ---- Redis pools ---- */

/* The peer's address as text ("127.0.0.1:5000"), or "?" . */
static void client_peer(const struct client *c, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    char host[64] = "?";
    uint16_t port = 0;
    snprintf(buf, len, "?");
    if (getpeername(conn_fd(c->conn), (struct sockaddr *)&ss, &sslen) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    } else {
        snprintf(buf, len, "a unix socket client");
        return;
    }
    snprintf(buf, len, "%s:%u", host, (unsigned)port);
}

/* A wrong AUTH password: counted (auth_failures), logged at most once a
 * second per worker and pool with the count and the latest peer, and the
 * connection is closed after its CLIENT_AUTH_MAX_FAILURES-th (after the
 * reply), so guessing costs a connection every few tries. */
static void client_auth_failed(struct client *c)
{
    struct worker_pool *wp = c->wp;
    char peer[96];
    c->authed = false;
    stats_limit_add(wp->stats, auth_failures, 1);
    wp->auth_failed++;
    if (++c->auth_failures >= CLIENT_AUTH_MAX_FAILURES)
        c->quitting = true;
    int64_t now = util_now_ms();
    if (now - wp->auth_warned_ms < 1000)
        return;
    client_peer(c, peer, sizeof(peer));
    log_warn("pool %s: %llu failed AUTH attempt(s) since the last report, the latest from %s "
             "(a connection is closed after %d)", wp->conf->name,
             (unsigned long long)wp->auth_failed, peer, CLIENT_AUTH_MAX_FAILURES);
    wp->auth_warned_ms = now;
    wp->auth_failed = 0;
}

/* This pool's counters of every worker that serves the configuration
 * this worker serves (as reply_stats and the stats JSON read them), into
 * out[] (room for rt->nworkers); a pool a reload removed, draining here,
 * has only this worker's. Returns how many. */
static uint32_t client_pool_stats(const struct client *c, const struct stats_pool **out)
{
    const struct worker *w = c->wp->worker;
    const struct stats_view *own = w->stats.view;
    if (c->wp->stats < own->pools || c->wp->stats >= own->pools + own->npools) {
        out[0] = c->wp->stats;
        return 1;
    }
    size_t p = (size_t)(c->wp->stats - own->pools);
    const struct stats_view **views = util_xcalloc(w->rt->nworkers + 1, sizeof(*views));
    uint32_t n = stats_views_of(own->conf, w->rt->stats, w->rt->nworkers, views);
    for (uint32_t i = 0; i < n; i++)
        out[i] = &views[i]->pools[p];
    free(views);
    return n;
}

/* INFO: the process, this pool and its servers (redis_info_compose). */
static void client_reply_info(struct client *c, struct msg *msg)
{
    const struct worker *w = c->wp->worker;
    const struct runtime *rt = w->rt;
    const struct config_gen *gen = w->gen;
    struct redis_info_proc proc = {
        .version = PACKAGE_VERSION, .pid = (long)getpid(),
        .uptime_s = util_wall_s() - rt->start_time_s, .workers = rt->nworkers,
        .generation = gen != NULL ? gen->generation : 0,
        .source = gen != NULL ? gen->source : NULL,
        .loaded_at = gen != NULL ? gen->loaded_at : 0,
        .reloads = __atomic_load_n(&rt->reloads, __ATOMIC_RELAXED),
        .reload_failures = __atomic_load_n(&rt->reload_failures, __ATOMIC_RELAXED),
        .dns_failures = __atomic_load_n(&rt->dns_failures, __ATOMIC_RELAXED),
    };
    struct timeval tv;
    gettimeofday(&tv, NULL);   /* as server_ejected_at */
    proc.now_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    for (uint32_t i = 0; i < rt->nworkers; i++)
        proc.total_connections += __atomic_load_n(&rt->stats[i]->total_connections,
                                                   __ATOMIC_RELAXED);
    const struct stats_pool **stats = util_xcalloc(rt->nworkers + 1, sizeof(*stats));
    struct redis_info_pool pool = { .conf = c->wp->conf, .stats = stats,
                                    .backends = evbuffer_new() };
    pool.nstats = client_pool_stats(c, stats);
    if (pool.backends != NULL)
        backend_stats_info_lines(__atomic_load_n(&rt->backend_stats, __ATOMIC_ACQUIRE),
                                 c->wp->conf->name, pool.backends);
    redis_info_compose(msg->reply, &msg->redis, &proc, &pool);
    if (pool.backends != NULL)
        evbuffer_free(pool.backends);
    free(stats);
    client_msg_done(msg);
}

/* Runs one RESP request: the proxy answers PING, QUIT, AUTH, INFO and
 * COMMAND, and until a pool's redis_auth password is given, nothing is forwarded. */
static void client_execute_redis(struct client *c, struct msg *msg)
{
    const struct conf_pool *pool = c->wp->conf;
    const struct redis_req *req = &msg->redis;
    const char *name = req->cmd->name;
    if (strcmp(name, "auth") == 0) {
        const struct redis_token *pw = &req->args[1];
        if (pool->redis_auth == NULL) {
            msg_reply_now(msg, "%s", "-ERR Client sent AUTH, but no password is set\r\n");
        } else if (util_secret_equal(req->buf + pw->off, pw->len, pool->redis_auth,
                                     strlen(pool->redis_auth))) {
            c->authed = true;
            msg_reply_now(msg, "%s", "+OK\r\n");
        } else {
            client_auth_failed(c);
            msg_reply_now(msg, "%s", "-ERR invalid password\r\n");
        }
    } else if (strcmp(name, "quit") == 0) {
        c->quitting = true;   /* closed with no reply, as nutcracker, authed or not */
        client_msg_done(msg);
    } else if (pool->redis_auth != NULL && !c->authed) {
        msg_reply_now(msg, "%s", "-NOAUTH Authentication required\r\n");
    } else if (strcmp(name, "ping") == 0) {
        msg_reply_now(msg, "%s", "+PONG\r\n");
    } else if (strcmp(name, "info") == 0) {
        client_reply_info(c, msg);
    } else if (strcmp(name, "command") == 0) {
        redis_info_command(msg->reply, req);
        client_msg_done(msg);
    } else if (!client_memory_ok(c->wp->worker)) {
        stats_limit_add(c->wp->stats, out_of_memory, 1);
        msg_reply_now(msg, "%s", "-ERR out of memory\r\n");
    } else {
        policy_dispatch(c->wp->policy, msg, client_msg_done);
    }
}

/* " 'keys'": the command name of a framed request, quoted, printable
 * characters only and cut short; "" when there is none (bad RESP). */
static void client_redis_name(const struct redis_req *req, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    if (req->nargs == 0 || req->buf == NULL || len < 8)
        return;
    const struct redis_token *t = &req->args[0];
    n = (size_t)snprintf(buf, len, " '");
    for (uint32_t i = 0; i < t->len && n + 3 < len; i++) {
        char ch = req->buf[t->off + i];
        buf[n++] = ch >= 0x20 && ch < 0x7f ? ch : '?';
    }
    buf[n++] = '\'';
    buf[n] = '\0';
}

/* A request that cannot run (unsupported, a wrong argument count, bad
 * RESP): as nutcracker, the connection is closed without a reply to it,
 * after the replies to the requests before it. Logged at WARN with the
 * command and the peer, at most once a second per worker and pool, with
 * the count ("unsupported command 'keys' from 127.0.0.1:5000"). */
static void client_reject_redis(struct client *c, struct msg *msg, const char *err)
{
    struct worker_pool *wp = c->wp;
    char name[40], peer[96];
    int64_t now = util_now_ms();
    c->quitting = true;
    stats_pool_add(wp->stats, client_err, 1);
    wp->rejected++;
    if (now - wp->reject_warned_ms >= 1000) {
        client_redis_name(&msg->redis, name, sizeof(name));
        client_peer(c, peer, sizeof(peer));
        log_warn("pool %s: %s%s from %s, connection closed (%llu such request(s) since the "
                 "last report)", wp->conf->name, err != NULL ? err : "bad request", name, peer,
                 (unsigned long long)wp->rejected);
        wp->reject_warned_ms = now;
        wp->rejected = 0;
    }
    client_msg_done(msg);
}

/* A Redis request announced larger than the process has room for under
 * max_memory: answered, and the connection closed (the rest of it
 * cannot be framed without reading it). */
static void client_refuse_large_redis(struct client *c, struct msg *msg)
{
    struct worker_pool *wp = c->wp;
    int64_t now = util_now_ms();
    c->quitting = true;
    stats_limit_add(wp->stats, out_of_memory, 1);
    if (now - wp->oom_warned_ms >= 1000) {
        log_warn("pool %s: a request of %zu bytes refused, the connection closed: the "
                 "process is near max_memory (at most one such line a second)",
                 wp->conf->name, msg->redis.want);
        wp->oom_warned_ms = now;
    }
    msg_reply_now(msg, "%s", "-ERR request too large for the proxy's max_memory\r\n");
}

/* The replies' worth a request asks for, by which admission weighs it:
 * one per key of a memcached retrieval (get, gets, gat, gats) and none
 * for its other commands (their reply is one line); for Redis one per
 * key of the commands whose reply is an array merged per key (MGET),
 * else one (any command may answer with a value). */
static uint32_t client_units(const struct client *c, const struct msg *msg)
{
    if (!c->wp->conf->redis)
        return mc_cmd_kind(msg->req.cmd) == MC_KIND_RETRIEVAL ? msg->req.nkeys : 0;
    const struct redis_cmd *cmd = msg->redis.cmd;
    if (cmd != NULL && cmd->merge == REDIS_MERGE_ARRAY && msg->redis.nkeys > 0)
        return msg->redis.nkeys;
    return 1;
}

/* Frames one request from the input into c->parsing (its outcome kept
 * in c->framed_*). Returns false when no whole request is there yet. */
static bool client_frame(struct client *c)
{
    struct worker *w = c->wp->worker;
    if (c->parsing == NULL && (c->parsing = msg_get(&w->msgs)) == NULL) {
        /* No memory for the request: answer what was taken, then close
         * rather than leave the client waiting for a reply. */
        log_warn("client: out of memory for a request, closing the connection");
        c->quitting = true;
        return false;
    }
    struct msg *msg = c->parsing;
    c->framed_err = NULL;
    if (c->wp->conf->redis) {
        c->framed_rst = redis_req_read(conn_input(c->conn), &msg->redis,
                                       w->rt->limits.redis, &c->framed_err);
        /* a request too large for max_memory is framed as refused
         * (REDIS_AGAIN kept: client_run refuses it) */
        c->framed = c->framed_rst != REDIS_AGAIN || !client_reserve(c, &msg->redis);
        if (c->framed)
            client_unreserve(c);
    } else {
        c->framed_st = mc_req_read(conn_input(c->conn), &msg->req, &w->rt->limits,
                                   &c->framed_err);
        c->framed = c->framed_st != MC_AGAIN;
    }
    if (c->framed) {
        msg->parsed_ns = conn_loop_now_ns(&w->loop);   /* the pool's latency */
        msg->units = client_units(c, msg);
        msg->req_bytes = c->wp->conf->redis ? msg->redis.len
                                            : msg->req.line_len + msg->req.vlen;
    }
    return c->framed;
}

/* Queues the framed request and runs it. */
static void client_run(struct client *c)
{
    struct msg *msg = c->parsing;
    c->parsing = NULL;
    c->framed = false;
    msg->client = c;
    msg->budget = &c->budget;
    TAILQ_INSERT_TAIL(&c->msgs, msg, link);
    c->nmsgs++;
    c->units += msg->units;
    c->sending += msg->req_bytes;
    const char *err = c->framed_err;
    if (!c->wp->conf->redis && c->framed_st == MC_OK)
        client_execute(c, msg);
    else if (!c->wp->conf->redis)
        client_reject(c, msg, c->framed_st, err);
    else if (c->framed_rst == REDIS_OK)
        client_execute_redis(c, msg);
    else if (c->framed_rst == REDIS_AGAIN)
        client_refuse_large_redis(c, msg);
    else
        client_reject_redis(c, msg, err);
}

static size_t client_bytes(const struct client *c);

/* Frames one request and runs it, unless its bytes and expected reply
 * do not fit the budget while others are in flight: it then waits,
 * framed, until replies make room (c->paused). Returns false when
 * nothing more can be run now. */
static bool client_read_one(struct client *c)
{
    if (!c->framed && !client_frame(c))
        return false;
    size_t limit = __atomic_load_n(c->budget.limit, __ATOMIC_RELAXED);
    const struct msg *msg = c->parsing;
    if (c->nmsgs > 0 &&
        client_bytes(c) + msg->req_bytes + msg->units * c->expect > limit) {
        c->paused = true;
        return false;
    }
    client_run(c);
    return true;
}

/* Backpressure: the client's reply bytes — written and waiting, finished
 * behind a slower head, gathered for requests in flight, and the
 * expected reply (running average per unit, client_units) and the bytes
 * (a set's value) of each request not yet answered — reach
 * client_max_pending, or too many requests are in flight. Its requests
 * already taken still complete; reading resumes as they do or as its
 * output drains. A reply larger than expected is bounded as it arrives
 * (msg_admit). */
static bool client_must_pause(struct client *c)
{
    return c->nmsgs >= CLIENT_MAX_INFLIGHT ||
           client_bytes(c) >= __atomic_load_n(c->budget.limit, __ATOMIC_RELAXED);
}

/* The client's bytes held, sent and expected (client_must_pause). */
static size_t client_bytes(const struct client *c)
{
    return evbuffer_get_length(conn_output(c->conn)) + c->budget.held +
           c->budget.gathered + c->sending + c->units * c->expect;
}

/* Closes the client once nothing is left to answer, after its output has
 * drained. Returns true if the client is gone. */
static bool client_maybe_close(struct client *c)
{
    /* After EOF the input may still hold requests a pause held back. */
    bool no_more = c->quitting || (conn_eof(c->conn) && !c->paused);
    if (!no_more || c->nmsgs > 0)
        return false;
    if (evbuffer_get_length(conn_output(c->conn)) == 0) {
        if (c->draining)
            return client_close_drained(c);
        client_close(c);
        return true;
    }
    c->closing = true;
    conn_want_read(c->conn, false);
    return false;
}

/* Frames and runs what the input holds, unless backpressure says wait.
 * Returns false if the client is gone. */
static bool client_process(struct client *c)
{
    if (c->in_process || c->closing || c->lingering)
        return true;
    c->in_process = true;
    c->paused = false;
    while (!c->quitting || c->framed) {   /* a framed request is run */
        if (client_must_pause(c)) {
            c->paused = true;
            break;
        }
        if (!client_read_one(c))
            break;
    }
    c->in_process = false;
    client_write_done(c);
    if (client_maybe_close(c))
        return false;
    conn_want_read(c->conn, !c->paused && !c->quitting);
    return true;
}

static void on_input(struct conn *conn, void *arg)
{
    struct client *c = arg;
    c->input_ms = util_now_ms();
    if (c->lingering) {
        struct evbuffer *in = conn_input(conn);
        evbuffer_drain(in, evbuffer_get_length(in));
        if (conn_eof(conn))
            client_close(c);
        return;
    }
    if (conn_eof(conn) && !c->eof_seen) {
        /* Half-closed: answer what was sent, then close. */
        c->eof_seen = true;
        stats_pool_add(c->wp->stats, client_eof, 1);
    }
    client_process(c);
}

static void on_drained(struct conn *conn, void *arg)
{
    (void)conn;
    struct client *c = arg;
    if (c->closing && c->draining)
        client_close_drained(c);
    else if (c->closing)
        client_close(c);
    else if (c->paused)
        client_process(c);
}

static void on_connected(struct conn *conn, void *arg)
{
    (void)conn; (void)arg;
}

static void on_error(struct conn *conn, void *arg, const char *reason)
{
    (void)conn;
    struct client *c = arg;
    log_debug("client: %s", reason);
    stats_pool_add(c->wp->stats, client_err, 1);
    client_close(c);
}

static const struct conn_ops client_conn_ops = {
    .on_input = on_input,
    .on_drained = on_drained,
    .on_connected = on_connected,
    .on_error = on_error,
};

uint32_t client_max_default(const struct conf *conf, uint32_t nworkers)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 1000000;
    uint64_t reserve = 16;   /* as main's fd_limit_needed */
    for (uint32_t p = 0; p < conf->npools; p++) {
        const struct conf_tier *tier;
        uint64_t conns = 1;   /* the listener */
        for (uint32_t t = 0; (tier = stats_pool_tier(&conf->pools[p], t)) != NULL; t++)
            conns += (uint64_t)tier->nservers * tier->server_connections;
        reserve += conns * nworkers;
    }
    uint64_t n = (uint64_t)rl.rlim_cur > reserve ? (uint64_t)rl.rlim_cur - reserve : 1;
    return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

/* Under max_clients: the workers' client gauges summed (relaxed loads;
 * workers accepting at the same moment may pass it by a few). */
static bool client_admit_process(const struct worker *w)
{
    const struct runtime *rt = w->rt;
    int64_t n = 0;
    for (uint32_t i = 0; rt->max_clients > 0 && i < rt->nworkers; i++)
        n += __atomic_load_n(&rt->stats[i]->curr_connections, __ATOMIC_RELAXED);
    return rt->max_clients == 0 || n < (int64_t)rt->max_clients;
}

/* Closes a refused connection; the warning is written at most once a
 * second per worker and pool, with the number refused since the last. */
static void client_refuse(struct worker_pool *wp, evutil_socket_t fd, const char *limit,
                          uint32_t value)
{
    close(fd);
    wp->refused++;
    int64_t now = util_now_ms();
    if (now - wp->refuse_warned_ms < 1000)
        return;
    log_warn("pool %s: %s %u reached, refused %llu client(s)", wp->conf->name, limit,
             value, (unsigned long long)wp->refused);
    wp->refuse_warned_ms = now;
    wp->refused = 0;
}

static bool client_admit(struct worker_pool *wp)
{
    uint32_t limit = wp->conf->client_connections;
    if (limit == 0)
        return true;
    uint32_t *count = &wp->shared->clients;
    if (__atomic_fetch_add(count, 1, __ATOMIC_RELAXED) < limit)
        return true;
    __atomic_fetch_sub(count, 1, __ATOMIC_RELAXED);
    return false;
}

void client_accept(struct worker_pool *wp, evutil_socket_t fd)
{
    struct worker *w = wp->worker;
    if (!client_admit_process(w)) {
        stats_limit_add(wp->stats, clients_refused, 1);
        client_refuse(wp, fd, "max_clients", w->rt->max_clients);
        return;
    }
    bool counted = wp->conf->client_connections > 0;
    if (!client_admit(wp)) {
        client_refuse(wp, fd, "client_connections limit", wp->conf->client_connections);
        return;
    }
    struct client *c = util_xcalloc(1, sizeof(*c));
    const struct runtime *rt = w->rt;
    /* Stop reading the socket once a whole largest request is buffered. */
    size_t read_max = wp->conf->redis ? rt->limits.redis->max_request + 4096
                                      : rt->limits.max_line + rt->limits.max_value + 4096;
    c->conn = conn_create(&w->loop, fd, read_max, &client_conn_ops, c);
    if (c->conn == NULL) {
        close(fd);
        free(c);
        if (counted)
            __atomic_fetch_sub(&wp->shared->clients, 1, __ATOMIC_RELAXED);
        return;
    }
    conn_account(c->conn, &w->stats.buffered);
    c->wp = wp;
    c->counted = counted;
    wp->nclients++;
    c->input_ms = util_now_ms();
    /* a fifth: four keys fit, with their requests' own bytes */
    c->expect = rt->settings->client_max_pending / (CLIENT_START_WINDOW + 1);
    TAILQ_INIT(&c->msgs);
    c->budget = (struct msg_budget){ .out = conn_output(c->conn), .queue = &c->msgs,
                                     .limit = &rt->settings->client_max_pending };
    TAILQ_INSERT_TAIL(&w->clients, c, link);
    int one = 1;
    if (wp->shared->unix_fd < 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (wp->conf->tcpkeepalive)   /* twemproxy: keepalive on client sockets */
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    stats_pool_add(wp->stats, client_connections, 1);
    stats_add(&w->stats.total_connections, 1);
    stats_add(&w->stats.curr_connections, 1);
}
