/* backend: pipelined connections to one memcached or Redis server (see
 * backend.h for the picture).
 *
 * Fences (backend_fence.h): a fence record goes into the pipeline after
 * each written batch (the requests one write carries: conn.h on_flush),
 * or after every request, and its answer must come back in its place.
 * Replies are matched at the `cursor`, the first record whose reply is
 * not whole; the finished replies before it are held (`replies`) until
 * the fence's answer releases them, in order:
 *
 *   inflight:  req ─ req ─ FENCE ─ req ─ FENCE
 *              held  held  cursor
 *
 * A memcached connection first sends the meta no-op "mn" alone and holds
 * the requests queued behind it (their bytes wait in `held`) until it is
 * answered:
 *
 *   probe "mn" ──► MN     fenced (fence_replies: per batch or per request)
 *             ──► ERROR  not fenced: replies matched by position only
 *             ──► else   invalid: every request fails, the connection resets
 *
 * A Redis connection is fenced from the start when redis_fence_replies is
 * on: the fence is "ECHO <token>:<seq>".
 *
 * So on a fenced connection a reply the server should not have sent (an
 * extra END, a second reply, an unsolicited one) lands where a fence's
 * answer is due, and a skipped reply makes a fence's answer land where a
 * reply is due: both reset the connection before any reply of that batch
 * is delivered, and no request gets another request's reply. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "strata/backend.h"
#include "strata/backend_fence.h"
#include "strata/conn.h"
#include "strata/log.h"
#include "strata/util.h"

/* Request records kept for reuse per worker. */
#define BACKEND_REQ_CACHE_MAX 4096

struct backend_req {
    TAILQ_ENTRY(backend_req) link;
    enum mc_cmd  cmd;
    size_t       bytes;
    uint64_t     end;          /* conn_written once its last byte is taken */
    int64_t      deadline_ms;  /* reply due; INT64_MAX: not all written yet,
                                  or no timeout */
    backend_cb   cb;           /* memcached servers */
    void        *arg;
    /* Redis servers: the command (NULL: the proxy's own, any reply fits)
     * and how many keys it asked for */
    backend_redis_cb         redis_cb;
    const struct redis_cmd  *redis_cmd;
    uint32_t                 redis_nkeys;
    bool                     probe;   /* the connection's "mn" probe: no
                                         callback, not counted */
    bool                     fence;   /* a fence: no callback, not counted */
    uint64_t                 seq;     /* a Redis fence: its number */
    size_t                   pending; /* Redis: bytes of its reply told to
                                         bw->redis_pending */
    int64_t                  queued_ns; /* metrics_now_ns: the round trip's start */
};

struct backend_conn {
    struct backend_server  *server;
    struct conn            *conn;      /* NULL while disconnected */
    uint32_t                generation; /* bumped when conn closes */
    bool                    connected;
    struct backend_req_list inflight;  /* sent or queued, oldest first */
    uint32_t                ninflight;
    size_t                  inflight_bytes;
    struct backend_req     *unsent;    /* first whose bytes the kernel has
                                          not all taken, or NULL */
    uint64_t                written;   /* conn_written when last looked */
    int64_t                 stall_ms;  /* output pending and no byte taken
                                          since: the write-stall clock */
    struct event           *timer;     /* earliest deadline (may fire early) */
    bool                    reset_pending; /* connect failed in place */
    char                    reset_reason[96];
    struct mc_rsp           rsp;       /* reply unit being framed */
    struct redis_rsp        redis_rsp; /* Redis: reply being framed */
    /* Fences (see the top of this file). */
    bool                    probing;   /* the probe is out: requests wait */
    enum mc_fence           fence;     /* this connection's fences */
    uint32_t                batch_open; /* requests written since the last
                                          fence (BATCH) */
    struct backend_req     *cursor;    /* first record whose reply is not
                                          whole; NULL: none */
    struct backend_held     replies;   /* the whole replies of the records
                                          before cursor, until their fence */
    size_t                  replies_bytes; /* Redis: their bytes, counted in
                                          the worker's buffered (max_memory) */
    uint64_t                fence_seq; /* fences written */
    char                    token[BACKEND_FENCE_TOKEN_LEN + 1]; /* Redis */
    struct evbuffer        *held;      /* bytes of requests queued while
                                          probing, in order */
};

static void conn_reset(struct backend_conn *c, const char *reason);

void backend_worker_init(struct backend_worker *bw, struct conn_loop *loop)
{
    bw->loop = loop;
    bw->acct = NULL;
    TAILQ_INIT(&bw->free);
    bw->nfree = 0;
}

uint32_t backend_worker_shrink(struct backend_worker *bw, uint32_t keep)
{
    uint32_t freed = 0;
    struct backend_req *r;
    while (bw->nfree > keep && (r = TAILQ_FIRST(&bw->free)) != NULL) {
        TAILQ_REMOVE(&bw->free, r, link);
        bw->nfree--;
        free(r);
        freed++;
    }
    return freed;
}

void backend_worker_deinit(struct backend_worker *bw)
{
    backend_worker_shrink(bw, 0);
}

/* A record from the free list, or a new one (a record is small and
 * fixed: failing to allocate one aborts, as util_xcalloc does). */
static struct backend_req *req_get(struct backend_worker *bw)
{
    struct backend_req *r = TAILQ_FIRST(&bw->free);
    if (r == NULL)
        return util_xcalloc(1, sizeof(*r));
    TAILQ_REMOVE(&bw->free, r, link);
    bw->nfree--;
    return r;
}

static void req_put(struct backend_worker *bw, struct backend_req *r)
{
    if (bw->nfree >= BACKEND_REQ_CACHE_MAX) {
        free(r);
        return;
    }
    TAILQ_INSERT_HEAD(&bw->free, r, link);
    bw->nfree++;
}

/* Redis: `len` bytes wait unframed in c's input, the reply due at the
 * cursor: its request's owner is told of the change (bw->redis_pending),
 * so they count against its client while they wait. */
static void pending_set(struct backend_conn *c, struct backend_req *r, size_t len)
{
    backend_pending_cb cb = c->server->bw->redis_pending;
    if (r == NULL || cb == NULL || r->redis_cmd == NULL || len == r->pending)
        return;
    cb(r->arg, (ssize_t)len - (ssize_t)r->pending);
    r->pending = len;
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

int backend_server_init(struct backend_server *s, const struct conf_server *conf,
                        const struct conf_tier *tier, struct backend_worker *bw,
                        const struct mc_limits *limits, struct stats_pool *pool_stats,
                        struct stats_server *stats, uint32_t *eject_epoch,
                        char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->conf = conf;
    s->tier = tier;
    s->bw = bw;
    s->limits = limits;
    s->pool_stats = pool_stats;
    s->stats = stats;
    s->eject_epoch = eject_epoch;
    snprintf(s->label, sizeof(s->label), "server %s", conf->text);   /* until a tier names it */
    if (util_resolve(&conf->addr, &s->addr, &s->addrlen, err, errlen) != 0)
        return -1;
    s->nconns = tier->server_connections > 0 ? tier->server_connections : 1;
    s->conns = util_xcalloc(s->nconns, sizeof(*s->conns));
    for (uint32_t i = 0; i < s->nconns; i++) {
        struct backend_conn *c = &s->conns[i];
        c->server = s;
        TAILQ_INIT(&c->inflight);
        mc_rsp_init(&c->rsp);
        backend_held_init(&c->replies);
        redis_rsp_init(&c->redis_rsp);
        c->held = evbuffer_new();
        c->timer = evtimer_new(bw->loop->base, on_timer, c);
        if (c->timer == NULL || c->held == NULL) {
            snprintf(err, errlen, "server %s: out of memory", conf->text);
            return -1;
        }
    }
    return 0;
}

/* The held replies are gone (delivered, or the connection reset): their
 * bytes leave the worker's buffered count. */
static void held_forget(struct backend_conn *c)
{
    struct backend_worker *bw = c->server->bw;
    if (bw->acct != NULL && c->replies_bytes > 0)
        stats_add(bw->acct, -(int64_t)c->replies_bytes);
    c->replies_bytes = 0;
    backend_held_reset(&c->replies);
}

/* A whole Redis reply of r is held until its fence: its bytes count in
 * the worker's buffered bytes (max_memory) and against r's client (the
 * owner's pending hook) until it is delivered, so a batch of large
 * replies held behind a fence stops admission as they would unheld. */
static void held_account(struct backend_conn *c, struct backend_req *r, size_t len)
{
    struct backend_worker *bw = c->server->bw;
    if (bw->acct != NULL)
        stats_add(bw->acct, (int64_t)len);
    c->replies_bytes += len;
    pending_set(c, r, len);
}

static void conn_close(struct backend_conn *c)
{
    if (c->conn != NULL) {
        conn_destroy(&c->conn);
        c->generation++;
        if (c->connected)
            stats_server_add(c->server->stats, server_connections, -1);
    }
    c->connected = false;
    mc_rsp_reset(&c->rsp);
    redis_rsp_reset(&c->redis_rsp);
    c->probing = false;
    c->fence = MC_FENCE_OFF;
    c->batch_open = 0;
    c->cursor = NULL;
    held_forget(c);
    if (c->held != NULL)
        evbuffer_drain(c->held, evbuffer_get_length(c->held));
}

void backend_server_deinit(struct backend_server *s)
{
    for (uint32_t i = 0; s->conns != NULL && i < s->nconns; i++) {
        struct backend_conn *c = &s->conns[i];
        if (c->timer == NULL) {   /* init failed here */
            if (c->held != NULL)
                evbuffer_free(c->held);
            continue;
        }
        conn_reset(c, "proxy shutting down");
        if (c->timer != NULL)
            event_free(c->timer);
        if (c->held != NULL)
            evbuffer_free(c->held);
        mc_rsp_deinit(&c->rsp);
        backend_held_deinit(&c->replies);
        redis_rsp_deinit(&c->redis_rsp);
    }
    free(s->conns);
    s->conns = NULL;
}

struct backend_server *backend_server_new(const struct conf_server *conf,
                                          const struct conf_tier *tier,
                                          struct backend_worker *bw,
                                          const struct mc_limits *limits,
                                          struct stats_pool *pool_stats,
                                          struct stats_server *stats,
                                          uint32_t *eject_epoch, char *err, size_t errlen)
{
    struct backend_server *s = util_xcalloc(1, sizeof(*s));
    if (backend_server_init(s, conf, tier, bw, limits, pool_stats, stats, eject_epoch,
                            err, errlen) != 0) {
        backend_server_deinit(s);
        free(s);
        return NULL;
    }
    s->refs = 1;
    return s;
}

void backend_server_set_label(struct backend_server *s, const char *pool, const char *tier)
{
    const char *name = s->conf->name;
    snprintf(s->label, sizeof(s->label), "pool %s tier %s server %s%s%s", pool, tier,
             s->conf->text, name != NULL ? " " : "", name != NULL ? name : "");
}

void backend_server_retain(struct backend_server *s)
{
    s->refs++;
}

void backend_server_release(struct backend_server *s)
{
    if (s == NULL || --s->refs > 0)
        return;
    backend_server_deinit(s);
    free(s);
}

static bool addr_same(const struct conf_addr *a, const struct conf_addr *b)
{
    if ((a->path == NULL) != (b->path == NULL))
        return false;
    if (a->path != NULL)
        return strcmp(a->path, b->path) == 0;
    bool pinned_same = a->resolved == b->resolved ||
                       (a->resolved != NULL && b->resolved != NULL &&
                        strcmp(a->resolved, b->resolved) == 0);
    return a->port == b->port && strcmp(a->host, b->host) == 0 && pinned_same;
}

bool backend_server_reusable(const struct backend_server *s, const struct conf_server *conf,
                             const struct conf_tier *tier, bool redis, const char *auth,
                             int db)
{
    uint32_t nconns = tier->server_connections > 0 ? tier->server_connections : 1;
    if (!addr_same(&s->conf->addr, &conf->addr) || s->nconns != nconns || s->redis != redis)
        return false;
    if (!redis)
        return true;
    bool same_auth = s->redis_auth == auth ||
                     (s->redis_auth != NULL && auth != NULL && strcmp(s->redis_auth, auth) == 0);
    return same_auth && s->redis_db == db;
}

void backend_server_adopt(struct backend_server *s, const struct conf_server *conf,
                          const struct conf_tier *tier, struct stats_pool *pool_stats,
                          struct stats_server *stats, uint32_t *eject_epoch)
{
    s->conf = conf;
    s->tier = tier;
    s->pool_stats = pool_stats;
    s->stats = stats;
    s->eject_epoch = eject_epoch;
}

bool backend_server_live(const struct backend_server *s, int64_t now_ms)
{
    return s->ejected_until_ms == 0 || now_ms >= s->ejected_until_ms;
}

uint32_t backend_server_pending(const struct backend_server *s)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->nconns; i++)
        n += s->conns[i].ninflight;
    return n;
}

/* Counts a failure; past the limit, takes the server out of its ring for
 * server_retry_timeout (twemproxy's server_failure). */
static void server_failed(struct backend_server *s)
{
    s->failures++;
    if (!s->tier->auto_eject_hosts || s->failures < s->tier->server_failure_limit)
        return;
    int64_t now = util_now_ms();
    if (s->ejected_until_ms != 0 && now < s->ejected_until_ms)
        return;
    s->ejected_until_ms = now + s->tier->server_retry_timeout_ms;
    s->failures = 0;
    (*s->eject_epoch)++;
    stats_pool_add(s->pool_stats, server_ejects, 1);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    stats_set(&s->stats->f[STATS_server_ejected_at],
              (int64_t)tv.tv_sec * 1000000 + tv.tv_usec);
    log_warn("%s ejected for %lld ms after repeated failures", s->label,
             (long long)s->tier->server_retry_timeout_ms);
}

static void server_succeeded(struct backend_server *s)
{
    s->failures = 0;
    if (s->ejected_until_ms != 0) {
        s->ejected_until_ms = 0;
        log_notice("%s is back", s->label);
    }
}

/* When the connection times out unless something happens first: the
 * head request's reply deadline (`timeout` after the kernel took its last
 * byte), or, while output waits for the kernel, `timeout` after the
 * kernel last took a byte (the write-stall rule). INT64_MAX: never. */
static int64_t conn_deadline(const struct backend_conn *c)
{
    const struct backend_req *head = TAILQ_FIRST(&c->inflight);
    int timeout = c->server->tier->timeout_ms;
    if (head == NULL || timeout < 0)
        return INT64_MAX;
    int64_t d = head->deadline_ms;
    if (c->conn != NULL && evbuffer_get_length(conn_output(c->conn)) > 0 &&
        c->stall_ms + timeout < d)
        d = c->stall_ms + timeout;
    return d;
}

/* Arms the timer for conn_deadline. Deadlines only move later between
 * calls (a write starts a reply clock or restarts the stall clock), so
 * the timer may fire early, never late; on_timer then rearms it. */
static void timer_arm(struct backend_conn *c)
{
    int64_t deadline = conn_deadline(c);
    if (deadline == INT64_MAX) {
        if (c->timer != NULL)
            evtimer_del(c->timer);
        return;
    }
    int64_t wait = deadline - util_now_ms();
    if (wait < 0)
        wait = 0;
    struct timeval tv = { .tv_sec = wait / 1000, .tv_usec = (wait % 1000) * 1000 };
    evtimer_add(c->timer, &tv);
}

/* Fails every request in flight (they can no longer be matched to replies)
 * and drops the connection; the next send reconnects. */
static void conn_reset(struct backend_conn *c, const char *reason)
{
    struct backend_req_list failed = TAILQ_HEAD_INITIALIZER(failed);
    TAILQ_CONCAT(&failed, &c->inflight, link);
    stats_server_add(c->server->stats, out_queue, -(int64_t)c->ninflight);
    stats_server_add(c->server->stats, out_queue_bytes, -(int64_t)c->inflight_bytes);
    c->ninflight = 0;
    c->inflight_bytes = 0;
    c->unsent = NULL;
    c->written = 0;   /* the next conn counts from 0 */
    c->reset_pending = false;
    conn_close(c);
    evtimer_del(c->timer);
    struct backend_req *r;
    while ((r = TAILQ_FIRST(&failed)) != NULL) {
        TAILQ_REMOVE(&failed, r, link);
        pending_set(c, r, 0);
        if (r->fence)
            ;   /* nobody waits for a fence */
        else if (r->redis_cb != NULL)
            r->redis_cb(r->arg, NULL, reason);
        else
            r->cb(r->arg, BACKEND_FAIL, NULL, reason);
        req_put(c->server->bw, r);
    }
}

/* A failed connection (timeout, close, error, invalid reply) that had
 * requests or a socket: one WARN a second per server at most, naming
 * pool, tier and server, with how many failed since the last line; every
 * one at INFO (-v 6). */
static void conn_fail_log(struct backend_server *s, const char *reason)
{
    int64_t now = util_now_ms();
    log_info("%s: %s", s->label, reason);
    s->fail_unlogged++;
    if (now - s->fail_warned_ms < 1000)
        return;
    log_warn("%s: %s (%llu failure(s) since the last report)", s->label, reason,
             (unsigned long long)s->fail_unlogged);
    s->fail_warned_ms = now;
    s->fail_unlogged = 0;
}

static void conn_fail(struct backend_conn *c, const char *reason)
{
    if (c->ninflight > 0 || c->conn != NULL)
        conn_fail_log(c->server, reason);
    server_failed(c->server);
    conn_reset(c, reason);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct backend_conn *c = arg;
    if (c->reset_pending) {
        conn_fail(c, c->reset_reason);
        return;
    }
    if (TAILQ_EMPTY(&c->inflight))
        return;
    if (conn_deadline(c) > util_now_ms()) {
        timer_arm(c);
        return;
    }
    stats_server_add(c->server->stats, server_timedout, 1);
    conn_fail(c, "backend timed out");
}

#define BACKEND_ERR_INVALID "backend sent an invalid response"
#define BACKEND_ERR_KEY     "backend returned a key it was not asked for"
#define BACKEND_ERR_STEP    "backend sent an out-of-step reply"
#define BACKEND_ERR_MEMORY  "backend reply not kept: out of memory"

/* r leaves the pipeline: the cursor and the first unsent record move
 * past it. */
static void conn_unlink(struct backend_conn *c, struct backend_req *r)
{
    if (c->unsent == r)   /* answered before all its bytes were taken */
        c->unsent = TAILQ_NEXT(r, link);
    if (c->cursor == r)
        c->cursor = TAILQ_NEXT(r, link);
    TAILQ_REMOVE(&c->inflight, r, link);
}

/* r joins the tail of the pipeline (its reply is next to match when
 * nothing before it waits). */
static void conn_append(struct backend_conn *c, struct backend_req *r)
{
    TAILQ_INSERT_TAIL(&c->inflight, r, link);
    if (c->cursor == NULL)
        c->cursor = r;
}

/* The head request is answered: off the pipeline, counted, called back
 * with rsp (memcached) or redis_rsp (Redis). */
static void conn_complete(struct backend_conn *c, struct backend_req *head,
                          struct mc_rsp *rsp, struct redis_rsp *redis_rsp)
{
    conn_unlink(c, head);
    c->ninflight--;
    c->inflight_bytes -= head->bytes;
    stats_server_add(c->server->stats, out_queue, -1);
    stats_server_add(c->server->stats, out_queue_bytes, -(int64_t)head->bytes);
    stats_server_add(c->server->stats, responses, 1);
    metrics_hist_observe(&c->server->stats->latency,
                         conn_loop_now_ns(c->server->bw->loop) - head->queued_ns);
    server_succeeded(c->server);
    pending_set(c, head, 0);
    if (head->redis_cb != NULL)
        head->redis_cb(head->arg, redis_rsp, NULL);
    else
        head->cb(head->arg, BACKEND_DONE, rsp, NULL);
    req_put(c->server->bw, head);
    timer_arm(c);
}

static void probe_answered(struct backend_conn *c, struct backend_req *probe,
                           enum mc_fence fence);

/* The answer to the probe at the head: MN turns fences on, ERROR (a
 * server that does not know "mn") leaves them off; anything else is no
 * memcached. NULL, or why the connection must be reset. */
static const char *probe_deliver(struct backend_conn *c, struct backend_req *probe,
                                 const struct mc_rsp *rsp)
{
    struct backend_server *s = c->server;
    if (rsp->type != MC_RSP_MN && rsp->type != MC_RSP_ERROR)
        return BACKEND_ERR_INVALID;
    if (rsp->type == MC_RSP_ERROR && !s->mn_unsupported_logged) {
        log_info("%s does not support meta no-op (mn): replies matched "
                 "by position only", s->label);
        s->mn_unsupported_logged = true;
    }
    probe_answered(c, probe, rsp->type == MC_RSP_MN ? s->limits->fence_replies
                                                    : MC_FENCE_OFF);
    return NULL;
}

/* The fence at the cursor is answered: every request before it is
 * completed with its held reply, in order, and the fence leaves the
 * pipeline. Stops early if a callback reset the connection. */
static void fence_answered(struct backend_conn *c)
{
    struct backend_req *f = c->cursor;
    uint32_t generation = c->generation;
    c->cursor = TAILQ_NEXT(f, link);   /* requests sent from callbacks */
    struct backend_req *r;
    for (uint32_t i = 0; (r = TAILQ_FIRST(&c->inflight)) != f; i++) {
        if (c->replies.redis != NULL)
            conn_complete(c, r, NULL, &c->replies.redis[i]);
        else
            conn_complete(c, r, &c->replies.mc[i], NULL);
        if (c->generation != generation)
            return;
    }
    held_forget(c);
    conn_unlink(c, f);
    req_put(c->server->bw, f);
    timer_arm(c);
}

/* One unit for the request r at the cursor of a fenced memcached
 * connection: a VALUE goes on to the callback, the last unit is held
 * and the cursor moves on. NULL, or why the connection must reset. */
static const char *fenced_deliver(struct backend_conn *c, struct backend_req *r,
                                  struct mc_rsp *rsp)
{
    if (r->fence) {
        if (rsp->type != MC_RSP_MN)
            return BACKEND_ERR_INVALID;
        fence_answered(c);
        return NULL;
    }
    if (!mc_rsp_fits(r->cmd, rsp))   /* MN fits no command */
        return BACKEND_ERR_INVALID;
    if (rsp->type == MC_RSP_VALUE)
        return r->cb(r->arg, BACKEND_VALUE, rsp, NULL) ? NULL : BACKEND_ERR_KEY;
    if (backend_held_push_mc(&c->replies, rsp) != 0)
        return BACKEND_ERR_MEMORY;
    c->cursor = TAILQ_NEXT(r, link);
    return NULL;
}

/* Delivers one framed unit to the request at the cursor (the head, on a
 * connection without fences). Returns NULL, or why the unit cannot be a
 * reply to it (no request waiting, a type that does not fit the command,
 * a VALUE whose key the callback refused, on a fenced connection anything
 * but MN where a fence is due or an MN where a reply is); nothing more
 * was delivered then. */
static const char *conn_deliver(struct backend_conn *c, struct mc_rsp *rsp)
{
    struct backend_req *head = c->cursor;
    if (head == NULL)
        return BACKEND_ERR_INVALID;
    if (head->probe)
        return probe_deliver(c, head, rsp);
    if (c->fence != MC_FENCE_OFF)
        return fenced_deliver(c, head, rsp);
    if (!mc_rsp_fits(head->cmd, rsp))
        return BACKEND_ERR_INVALID;
    if (rsp->type == MC_RSP_VALUE)
        return head->cb(head->arg, BACKEND_VALUE, rsp, NULL) ? NULL : BACKEND_ERR_KEY;
    conn_complete(c, head, rsp, NULL);
    return NULL;
}

/* The answer to the Redis fence f at the cursor: its own echo, or an
 * error to the connection's first fence (a server that refuses ECHO:
 * NOAUTH without redis_auth, an ACL), which turns fences off on this
 * connection as memcached's ERROR to the probe does; fences written
 * before that was known are then answered with errors too. NULL, or
 * why the connection must reset. */
static const char *fence_deliver_redis(struct backend_conn *c, struct backend_req *f,
                                       const struct redis_rsp *rsp)
{
    struct backend_server *s = c->server;
    if (backend_fence_match_redis(rsp, c->token, f->seq) == BACKEND_FENCE_DUE) {
        fence_answered(c);
        return NULL;
    }
    if (rsp->type != REDIS_RSP_ERROR || (f->seq != 0 && c->fence != MC_FENCE_OFF))
        return BACKEND_ERR_STEP;
    if (c->fence != MC_FENCE_OFF && !s->mn_unsupported_logged) {
        log_info("%s refuses the fence ECHO: replies matched by position "
                 "only on its connections that are refused", s->label);
        s->mn_unsupported_logged = true;
    }
    c->fence = MC_FENCE_OFF;
    fence_answered(c);
    return NULL;
}

/* The owner refused to hold this reply (over max_memory or the client's
 * budget): its bytes go at once and an error reply stands in its place
 * until the fence. Returns the bytes held now. */
static size_t held_refused(struct redis_rsp *rsp)
{
    static const char line[] = "-ERR out of memory\r\n";
    evbuffer_drain(rsp->data, evbuffer_get_length(rsp->data));
    evbuffer_add(rsp->data, line, sizeof(line) - 1);
    rsp->type = REDIS_RSP_ERROR;
    rsp->nil = false;
    rsp->count = 0;
    rsp->nelems = 0;
    return sizeof(line) - 1;
}

/* A whole Redis reply at the cursor of a fenced connection: a fence
 * wants its own answer (fence_deliver_redis); a request anything but a
 * fence's answer that fits its command, which is then held. */
static const char *fenced_deliver_redis(struct backend_conn *c, struct backend_req *r,
                                        struct redis_rsp *rsp)
{
    if (r->fence)
        return fence_deliver_redis(c, r, rsp);
    if (backend_fence_match_redis(rsp, c->token, 0) != BACKEND_FENCE_NONE)
        return BACKEND_ERR_STEP;   /* a reply was skipped */
    if (r->redis_cmd != NULL && !redis_rsp_fits(r->redis_cmd, r->redis_nkeys, rsp))
        return BACKEND_ERR_INVALID;
    size_t len = rsp->data != NULL ? evbuffer_get_length(rsp->data) : 0;
    backend_admit_cb admit = c->server->bw->redis_admit;
    if (admit != NULL && r->redis_cmd != NULL && !admit(r->arg, len))   /* not the handshake */
        len = held_refused(rsp);
    if (backend_held_push_redis(&c->replies, rsp) != 0)
        return BACKEND_ERR_MEMORY;
    held_account(c, r, len);
    c->cursor = TAILQ_NEXT(r, link);
    return NULL;
}

/* The same for a whole Redis reply. */
static const char *conn_deliver_redis(struct backend_conn *c, struct redis_rsp *rsp)
{
    struct backend_req *head = c->cursor;
    if (head == NULL || (head->redis_cb == NULL && !head->fence))
        return BACKEND_ERR_INVALID;
    if (c->fence != MC_FENCE_OFF || head->fence)
        return fenced_deliver_redis(c, head, rsp);
    if (head->redis_cmd != NULL && !redis_rsp_fits(head->redis_cmd, head->redis_nkeys, rsp))
        return BACKEND_ERR_INVALID;
    conn_complete(c, head, NULL, rsp);
    return NULL;
}

/* Whether the reply due on c is merged element by element (a split
 * MGET's part): only then does the framer record its elements, so a
 * reply of millions of elements (LRANGE) records none. */
static bool redis_wants_elems(const struct backend_conn *c)
{
    /* the cursor, not the head: on a fenced connection the head's reply
     * may be whole already, held until its fence */
    const struct backend_req *r = c->cursor;
    return r != NULL && r->redis_cmd != NULL && r->redis_cmd->merge == REDIS_MERGE_ARRAY;
}

/* Frames one unit (memcached) or one whole reply (Redis) from `in` and
 * delivers it. REDIS_AGAIN/MC_AGAIN: nothing yet; else NULL when
 * delivered, or why the connection must be reset. */
static const char *conn_frame_one(struct backend_conn *c, struct evbuffer *in,
                                  bool *again)
{
    struct backend_server *s = c->server;
    size_t before = evbuffer_get_length(in);
    const char *bad;
    *again = false;
    if (s->redis) {
        c->redis_rsp.want_elems = redis_wants_elems(c);
        enum redis_status st = redis_rsp_read(in, &c->redis_rsp, &s->redis_limits);
        if (st == REDIS_AGAIN) {
            *again = true;
            return NULL;
        }
        if (c->cursor == NULL || !c->cursor->fence)   /* fences not counted */
            stats_server_add(s->stats, response_bytes,
                             (int64_t)(before - evbuffer_get_length(in)));
        bad = st == REDIS_OK ? conn_deliver_redis(c, &c->redis_rsp) : BACKEND_ERR_INVALID;
        redis_rsp_reset(&c->redis_rsp);
        return bad;
    }
    enum mc_status st = mc_rsp_read(in, &c->rsp, s->limits);
    if (st == MC_AGAIN) {
        *again = true;
        return NULL;
    }
    /* fences and the probe's answer are not counted */
    if (st != MC_OK || (c->rsp.type != MC_RSP_MN && !c->probing))
        stats_server_add(s->stats, response_bytes,
                         (int64_t)(before - evbuffer_get_length(in)));
    bad = st == MC_OK ? conn_deliver(c, &c->rsp) : BACKEND_ERR_INVALID;
    mc_rsp_reset(&c->rsp);
    return bad;
}

/* Frames and delivers every whole reply unit in the input. */
static void on_input(struct conn *conn, void *arg)
{
    struct backend_conn *c = arg;
    struct evbuffer *in = conn_input(conn);
    uint32_t generation = c->generation;
    for (;;) {
        bool again;
        const char *bad = conn_frame_one(c, in, &again);
        if (again)
            break;
        if (bad != NULL) {
            stats_server_add(c->server->stats, server_err, 1);
            conn_fail(c, bad);
            return;
        }
        if (c->generation != generation)   /* a callback reset us */
            return;
    }
    if (c->server->redis)
        pending_set(c, c->cursor, evbuffer_get_length(in));   /* whose reply it is */
    if (conn_eof(conn)) {
        stats_server_add(c->server->stats, server_eof, 1);
        conn_fail(c, "backend closed the connection");
        return;
    }
    conn_want_read(conn, true);   /* restart reading if the input was full */
}

/* The kernel took bytes: each request whose last byte it has now taken
 * starts its reply clock, and the write-stall clock restarts. The timer
 * is left armed as it is (see timer_arm). */
static void conn_progress(struct backend_conn *c, struct conn *conn)
{
    uint64_t w = conn_written(conn);
    if (w == c->written)
        return;
    c->written = w;
    int64_t now = util_now_ms();
    int timeout = c->server->tier->timeout_ms;
    c->stall_ms = now;
    struct backend_req *r = c->unsent;
    for (; r != NULL && r->end <= w; r = TAILQ_NEXT(r, link))
        r->deadline_ms = timeout >= 0 ? now + timeout : INT64_MAX;
    c->unsent = r;
}

static void on_drained(struct conn *conn, void *arg)
{
    conn_progress(arg, conn);
}

static void on_partial_write(struct conn *conn, void *arg)
{
    conn_progress(arg, conn);
}

static void on_connected(struct conn *conn, void *arg)
{
    struct backend_conn *c = arg;
    c->connected = true;
    stats_server_add(c->server->stats, server_connections, 1);
    int one = 1;
    if (c->server->addr.ss_family != AF_UNIX)
        setsockopt(conn_fd(conn), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void on_error(struct conn *conn, void *arg, const char *why)
{
    (void)conn;
    struct backend_conn *c = arg;
    char reason[96];
    stats_server_add(c->server->stats, server_err, 1);
    snprintf(reason, sizeof(reason), "backend %s: %s",
             c->connected ? "connection error" : "connect failed", why);
    conn_fail(c, reason);
}

static void fence_send(struct backend_conn *c);

/* The output is about to be written: a batch that is not fenced yet
 * gets its fence now, after its last request. */
static void on_flush(struct conn *conn, void *arg)
{
    (void)conn;
    struct backend_conn *c = arg;
    if (c->batch_open)
        fence_send(c);
}

static const struct conn_ops backend_conn_ops = {
    .on_input = on_input,
    .on_flush = on_flush,
    .on_drained = on_drained,
    .on_partial_write = on_partial_write,
    .on_connected = on_connected,
    .on_error = on_error,
};

static void conn_defer_fail(struct backend_conn *c, const char *reason)
{
    c->reset_pending = true;
    snprintf(c->reset_reason, sizeof(c->reset_reason), "%s", reason);
    struct timeval zero = { 0, 0 };
    evtimer_add(c->timer, &zero);
}

static void queue_request(struct backend_conn *c, struct backend_req *r,
                          struct evbuffer *bytes);
static int send_bytes(struct backend_conn *c, struct backend_req *r,
                      struct evbuffer *from);
static void send_fail_later(struct backend_conn *c, const char *reason);

/* Appends a fence record and its bytes ("mn", or the Redis ECHO) after
 * everything written so far: the batch is closed. */
static void fence_send(struct backend_conn *c)
{
    struct backend_req *f = req_get(c->server->bw);
    *f = (struct backend_req){ .fence = true, .seq = c->fence_seq++,
                               .deadline_ms = INT64_MAX };
    conn_append(c, f);
    c->batch_open = 0;
    struct evbuffer *out = conn_output(c->conn);
    if (evbuffer_get_length(out) == 0)
        c->stall_ms = util_now_ms();
    int rc = c->server->redis
             ? backend_fence_compose_redis(out, c->token, f->seq)
             : evbuffer_add(out, BACKEND_FENCE_MN, BACKEND_FENCE_MN_LEN);
    if (rc != 0) {
        send_fail_later(c, "backend send failed: out of memory");
        return;
    }
    f->end = conn_written(c->conn) + evbuffer_get_length(out);
    if (c->unsent == NULL)
        c->unsent = f;
}

/* A request's bytes went to the output: fence it now (REQUEST), or
 * count it in the batch, which gets its fence before the write or once
 * it holds BACKEND_FENCE_BATCH_MAX requests (BATCH). */
static void fence_after_request(struct backend_conn *c)
{
    if (c->fence == MC_FENCE_REQUEST ||
        (c->fence == MC_FENCE_BATCH && ++c->batch_open >= BACKEND_FENCE_BATCH_MAX))
        fence_send(c);
}

/* The reply to AUTH or SELECT on a new connection: anything but +OK
 * means the connection cannot serve the pool's requests. */
static void handshake_cb(void *arg, struct redis_rsp *rsp, const char *reason)
{
    struct backend_conn *c = arg;
    (void)reason;
    if (rsp == NULL || rsp->type == REDIS_RSP_STATUS)
        return;   /* failed with the connection, or accepted */
    if (!c->reset_pending)
        conn_defer_fail(c, "backend refused the AUTH/SELECT handshake");
}

/* Queues one handshake command "name arg" on a new connection. */
static void handshake_send(struct backend_conn *c, const char *name, const char *arg)
{
    struct backend_server *s = c->server;
    const char *argv[2] = { name, arg };
    size_t argvlen[2] = { strlen(name), strlen(arg) };
    struct evbuffer *bytes = evbuffer_new();
    if (bytes == NULL || redis_compose_command(bytes, 2, argv, argvlen) != 0) {
        if (bytes != NULL)
            evbuffer_free(bytes);
        conn_defer_fail(c, "backend send failed: out of memory");
        return;
    }
    struct backend_req *r = req_get(s->bw);
    *r = (struct backend_req){ .redis_cb = handshake_cb, .arg = c };
    queue_request(c, r, bytes);
    evbuffer_free(bytes);
}

/* AUTH and SELECT go first on a new connection to a Redis server (its
 * output and pipeline are empty), so their replies come back first. */
static void redis_handshake(struct backend_conn *c)
{
    struct backend_server *s = c->server;
    if (s->redis_auth != NULL)
        handshake_send(c, "AUTH", s->redis_auth);
    if (s->redis_db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", s->redis_db);
        handshake_send(c, "SELECT", db);
    }
}

/* The probe never has a callback to run: its connection's requests are
 * failed with it. */
static bool probe_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                     const char *reason)
{
    (void)arg; (void)ev; (void)rsp; (void)reason;
    return true;
}

/* Puts the probe "mn" first on a new connection to a memcached server
 * (its output and pipeline are empty); requests queued until it is
 * answered are held (queue_request). Not counted as a request. */
static void probe_send(struct backend_conn *c)
{
    struct backend_req *r = req_get(c->server->bw);
    *r = (struct backend_req){ .probe = true, .cb = probe_cb,
                               .deadline_ms = INT64_MAX };
    conn_append(c, r);
    c->probing = true;
    if (send_bytes(c, r, NULL) != 0) {
        conn_defer_fail(c, "backend send failed: out of memory");
        return;
    }
    conn_send(c->conn);
    timer_arm(c);
}

/* The probe is answered: it leaves the pipeline, and the requests held
 * behind it are written in order, fenced as `fence` says. */
static void probe_answered(struct backend_conn *c, struct backend_req *probe,
                           enum mc_fence fence)
{
    conn_unlink(c, probe);
    req_put(c->server->bw, probe);
    c->probing = false;
    c->fence = fence;
    struct backend_req_list queued = TAILQ_HEAD_INITIALIZER(queued);
    TAILQ_CONCAT(&queued, &c->inflight, link);
    c->cursor = NULL;
    struct backend_req *r;
    while ((r = TAILQ_FIRST(&queued)) != NULL) {
        TAILQ_REMOVE(&queued, r, link);
        conn_append(c, r);
        if (send_bytes(c, r, c->held) != 0) {
            TAILQ_CONCAT(&c->inflight, &queued, link);
            send_fail_later(c, "backend send failed: out of memory");
            return;
        }
        fence_after_request(c);
    }
    conn_send(c->conn);
    timer_arm(c);
}

/* Starts connecting; a failure is reported from the loop, never from
 * here, so backend_send never calls back into its caller. */
static void conn_open(struct backend_conn *c)
{
    struct backend_server *s = c->server;
    const char *why = NULL;
    /* A backend reply bigger than the largest value is refused by the
     * framing anyway; stop reading well past it. */
    size_t read_max = (size_t)s->limits->max_value + s->limits->max_line + 4096;
    if (s->redis)   /* a whole Redis reply is framed at once */
        read_max = s->redis_limits.max_reply < SIZE_MAX - 4096
                   ? s->redis_limits.max_reply + 4096 : SIZE_MAX;
    c->conn = conn_connect(s->bw->loop, (struct sockaddr *)&s->addr, s->addrlen,
                           read_max, &backend_conn_ops, c, &why);
    if (c->conn == NULL) {
        char reason[96];
        snprintf(reason, sizeof(reason), "backend connect failed: %s", why);
        conn_defer_fail(c, reason);
        return;
    }
    conn_set_flush_late(c->conn, true);
    if (s->bw->acct != NULL)
        conn_account(c->conn, s->bw->acct);
    if (s->redis) {
        c->fence = s->limits->redis_fence_replies ? MC_FENCE_BATCH : MC_FENCE_OFF;
        c->fence_seq = 0;
        if (c->fence != MC_FENCE_OFF)
            backend_fence_token(c->token);
        redis_handshake(c);
    } else if (s->limits->fence_replies != MC_FENCE_OFF) {
        probe_send(c);
    }
}

void backend_server_connect(struct backend_server *s)
{
    for (uint32_t i = 0; i < s->nconns; i++)
        if (s->conns[i].conn == NULL && !s->conns[i].reset_pending)
            conn_open(&s->conns[i]);
}

/* Fails one request that could not be queued, from the loop. */
static void send_fail_later(struct backend_conn *c, const char *reason)
{
    if (!c->reset_pending)
        conn_defer_fail(c, reason);
}

/* Moves r's bytes (the first r->bytes of `from`; the probe has none
 * and `from` NULL; it is one "mn") to the output, and notes where they
 * end (conn.h: conn_written); output that was empty starts the
 * write-stall clock. The reply clock starts in conn_progress. */
static int send_bytes(struct backend_conn *c, struct backend_req *r,
                      struct evbuffer *from)
{
    struct evbuffer *out = conn_output(c->conn);
    if (evbuffer_get_length(out) == 0)
        c->stall_ms = util_now_ms();
    if (from != NULL && r->bytes == evbuffer_get_length(from)) {
        if (evbuffer_add_buffer(out, from) != 0)
            return -1;
    } else if (from != NULL &&
               evbuffer_remove_buffer(from, out, r->bytes) != (int)r->bytes) {
        return -1;
    }
    if (r->probe && evbuffer_add(out, BACKEND_FENCE_MN, BACKEND_FENCE_MN_LEN) != 0)
        return -1;
    r->end = conn_written(c->conn) + evbuffer_get_length(out);
    if (c->unsent == NULL)
        c->unsent = r;
    return 0;
}

void backend_server_set_redis(struct backend_server *s, const char *auth, int db,
                              const struct redis_limits *limits)
{
    s->redis = true;
    s->redis_auth = auth;
    s->redis_db = db;
    s->redis_limits = *limits;
}

/* Puts r (its cmd and callback set) at the tail of c's pipeline with its
 * bytes (moved); its reply clock starts once they are written. */
static void queue_request(struct backend_conn *c, struct backend_req *r,
                          struct evbuffer *bytes)
{
    struct backend_server *s = c->server;
    size_t len = evbuffer_get_length(bytes);
    r->bytes = len;
    r->queued_ns = conn_loop_now_ns(s->bw->loop);
    r->deadline_ms = INT64_MAX;   /* until its bytes are written */
    bool was_idle = TAILQ_EMPTY(&c->inflight);
    conn_append(c, r);
    c->ninflight++;
    c->inflight_bytes += len;
    stats_server_add(s->stats, requests, 1);
    stats_server_add(s->stats, request_bytes, (int64_t)len);
    stats_server_add(s->stats, out_queue, 1);
    stats_server_add(s->stats, out_queue_bytes, (int64_t)len);
    if (c->conn != NULL && c->probing) {
        r->end = UINT64_MAX;   /* held: written when the probe is answered */
        if (evbuffer_add_buffer(c->held, bytes) != 0) {
            evbuffer_drain(bytes, len);
            send_fail_later(c, "backend send failed: out of memory");
        }
    } else if (c->conn != NULL && send_bytes(c, r, bytes) == 0) {
        fence_after_request(c);
        conn_send(c->conn);
    } else {
        evbuffer_drain(bytes, len);
        send_fail_later(c, "backend send failed: out of memory");
    }
    if (was_idle && !c->reset_pending)
        timer_arm(c);
}

/* The next connection of s, opened if it is closed. */
static struct backend_conn *conn_next(struct backend_server *s)
{
    struct backend_conn *c = &s->conns[s->next_conn++ % s->nconns];
    if (c->conn == NULL && !c->reset_pending)
        conn_open(c);
    return c;
}

void backend_send(struct backend_server *s, enum mc_cmd cmd,
                  struct evbuffer *bytes, backend_cb cb, void *arg)
{
    struct backend_conn *c = conn_next(s);
    struct backend_req *r = req_get(s->bw);
    *r = (struct backend_req){ .cmd = cmd, .cb = cb, .arg = arg };
    queue_request(c, r, bytes);
}

void backend_send_redis(struct backend_server *s, const struct redis_cmd *cmd,
                        uint32_t nkeys, struct evbuffer *bytes,
                        backend_redis_cb cb, void *arg)
{
    struct backend_conn *c = conn_next(s);
    struct backend_req *r = req_get(s->bw);
    *r = (struct backend_req){ .redis_cb = cb, .redis_cmd = cmd,
                               .redis_nkeys = nkeys, .arg = arg };
    queue_request(c, r, bytes);
}
