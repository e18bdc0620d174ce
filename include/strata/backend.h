/* backend: connections to one memcached or Redis server, owned by one
 * worker.
 *
 *   backend_send ──► conn->output (batched) ──► server
 *                     inflight FIFO: req ─ req ─ FENCE ─ req ─ FENCE
 *   server ──► conn->input ──► mc_rsp_read / redis_rsp_read ──► held
 *          until the batch's fence is answered ──► each req's callback
 *
 * Requests are pipelined: replies are matched to requests by position.
 * With fences (settings fence_replies for memcached >= 1.6, which knows
 * the meta no-op "mn"; redis_fence_replies for Redis, "ECHO <token>:<n>")
 * each written batch, or each request, is followed by a fence whose
 * answer must come right after the batch's replies, and the replies are
 * held until it has (backend.c and backend_fence.h explain the probe and
 * the fences).
 * `timeout` runs from when the kernel took a request's last byte (not
 * from queueing), and while output waits, the kernel must take a byte
 * every `timeout` (the write-stall rule; docs/reliability.md).
 * Every reply unit is checked against the command it is matched with
 * (mc_rsp_fits, and the callback for a VALUE's key). A timeout, EOF,
 * error, a garbled reply, a reply that does not fit its request or bytes
 * with no request waiting fail every request in flight on that
 * connection and reset it; consecutive failures eject the server
 * when the tier says so. */
#ifndef STRATA_BACKEND_H
#define STRATA_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "strata/conf.h"
#include "strata/proto_mc.h"
#include "strata/proto_redis.h"
#include "strata/stats.h"

struct evbuffer;
struct conn_loop;
struct backend_conn;
struct backend_req;

enum backend_event {
    BACKEND_VALUE,   /* one VALUE of a retrieval reply: rsp */
    BACKEND_DONE,    /* the reply's last line: rsp (END, STORED, ...) */
    BACKEND_FAIL,    /* no reply will come: reason */
};

/* Called once per VALUE and exactly once with DONE or FAIL. The callee
 * may move rsp->data but must not keep rsp. The backend has checked that
 * each unit fits the command (mc_rsp_fits); only the callee knows the
 * keys, so for a VALUE it returns false when the key is not one it asked
 * for (or not in order, or repeated): the backend then treats the reply
 * as invalid — this request and every other one in flight on the
 * connection get FAIL and the connection is reset. For DONE and FAIL the
 * return value is ignored. */
typedef bool (*backend_cb)(void *arg, enum backend_event ev,
                           struct mc_rsp *rsp, const char *reason);

/* A Redis server's answer: called exactly once, with the whole reply
 * (rsp; the callee may move rsp->data but must not keep rsp), or with
 * rsp NULL and why no reply will come. The backend has checked that the
 * reply fits the command (redis_rsp_fits). */
typedef void (*backend_redis_cb)(void *arg, struct redis_rsp *rsp, const char *reason);

/* Redis: the bytes of a request's reply that wait, unframed, in its
 * connection's input changed by n (the framer keeps a whole reply there
 * until it is complete; they count in the worker's buffered bytes
 * already). Every byte told is given back (n negative) before the
 * request's callback runs, whether it is answered or fails. */
typedef void (*backend_pending_cb)(void *arg, ssize_t n);
/* Redis, fenced connections: may a whole reply of n bytes to the
 * request whose callback argument is `arg` be held until its fence?
 * false: the owner refused it (counted, the request failed); the reply
 * is dropped and an error reply held in its place. */
typedef bool (*backend_admit_cb)(void *arg, size_t n);

TAILQ_HEAD(backend_req_list, backend_req);

/* What the backend servers of one worker share: the worker's loop and a
 * free list of request records, so the request path does not allocate. */
struct backend_worker {
    struct conn_loop        *loop;
    int64_t                 *acct;   /* the worker's buffered bytes, or NULL:
                                        backend buffers count in max_memory */
    backend_pending_cb       redis_pending; /* or NULL: the owner of the
                                        request a Redis connection's unframed
                                        reply is due to is told of it */
    backend_admit_cb         redis_admit; /* or NULL: every reply held */
    struct backend_req_list  free;
    uint32_t                 nfree;
};

void backend_worker_init(struct backend_worker *bw, struct conn_loop *loop);
void backend_worker_deinit(struct backend_worker *bw);
/* Frees the free request records beyond `keep` (a quiet worker gives
 * back what a burst left); returns how many. */
uint32_t backend_worker_shrink(struct backend_worker *bw, uint32_t keep);

struct backend_server {
    const struct conf_server *conf;
    const struct conf_tier   *tier;
    struct backend_worker    *bw;
    const struct mc_limits   *limits;
    struct stats_server      *stats;
    struct stats_pool        *pool_stats;
    struct backend_conn      *conns;
    uint32_t                  nconns;
    uint32_t                  next_conn;         /* round robin */
    uint32_t                  failures;          /* consecutive */
    int64_t                   ejected_until_ms;  /* 0: in the ring */
    uint32_t                 *eject_epoch;       /* bumped on eject */
    struct sockaddr_storage   addr;
    socklen_t                 addrlen;
    /* Redis servers (backend_server_set_redis): replies are RESP, and
     * every new connection first authenticates and selects the db. */
    uint32_t                  refs;              /* backend_server_new */
    bool                      claimed;           /* taken by a tier being built */
    bool                      redis;
    bool                      mn_unsupported_logged; /* said once: no fences
                                                    (no "mn", or ECHO refused) */
    const char               *redis_auth;        /* NULL: no AUTH */
    int                       redis_db;          /* 0: no SELECT */
    struct redis_limits       redis_limits;
    /* "pool P tier T server HOST:PORT:W [NAME]": what every log line about
     * this server names (backend_server_set_label) */
    char                      label[224];
    int64_t                   fail_warned_ms;    /* last failure line */
    uint64_t                  fail_unlogged;     /* failures since then */
};

int backend_server_init(struct backend_server *s, const struct conf_server *conf,
                        const struct conf_tier *tier, struct backend_worker *bw,
                        const struct mc_limits *limits, struct stats_pool *pool_stats,
                        struct stats_server *stats, uint32_t *eject_epoch,
                        char *err, size_t errlen);
/* Fails every request in flight and closes the connections. */
void backend_server_deinit(struct backend_server *s);

/* The same on the heap, counted: a reload hands a server whose address
 * and connection settings did not change to the new configuration's tier
 * (backend_server_adopt), so its connections are kept. new returns NULL
 * with err; release frees it once the last user lets go. */
struct backend_server *backend_server_new(const struct conf_server *conf,
                                          const struct conf_tier *tier,
                                          struct backend_worker *bw,
                                          const struct mc_limits *limits,
                                          struct stats_pool *pool_stats,
                                          struct stats_server *stats,
                                          uint32_t *eject_epoch, char *err, size_t errlen);
/* Names the server in log lines by its pool and tier (set again when a
 * reload adopts it into a new configuration). */
void backend_server_set_label(struct backend_server *s, const char *pool, const char *tier);
void backend_server_retain(struct backend_server *s);
void backend_server_release(struct backend_server *s);
/* Whether s can serve `conf` in `tier` without new connections: the same
 * address, the same number of connections, and for Redis the same AUTH
 * and SELECT. */
bool backend_server_reusable(const struct backend_server *s, const struct conf_server *conf,
                             const struct conf_tier *tier, bool redis, const char *auth,
                             int db);
/* Points s at its new configuration and counters (their values were
 * carried over by the caller); its connections and requests stay. */
void backend_server_adopt(struct backend_server *s, const struct conf_server *conf,
                          const struct conf_tier *tier, struct stats_pool *pool_stats,
                          struct stats_server *stats, uint32_t *eject_epoch);

/* Makes s a Redis server: RESP replies within `limits`; each connection
 * sends "AUTH auth" (when auth is not NULL) and "SELECT db" (when db is
 * not 0) before any request, and a connection whose handshake is refused
 * fails like a broken one. Call before the first send. */
void backend_server_set_redis(struct backend_server *s, const char *auth, int db,
                              const struct redis_limits *limits);

/* Opens every connection now (preconnect). */
void backend_server_connect(struct backend_server *s);

/* True unless ejected and its retry time has not come. */
bool backend_server_live(const struct backend_server *s, int64_t now_ms);

/* Moves the bytes of one request out of `req` onto a connection of `s`;
 * `cmd` says what reply to expect. The callback always runs later, from
 * the event loop, never inside this call. */
void backend_send(struct backend_server *s, enum mc_cmd cmd,
                  struct evbuffer *req, backend_cb cb, void *arg);

/* The same for a Redis server: `bytes` hold one whole RESP request for
 * `cmd` (NULL for a command the proxy composed itself and accepts any
 * reply to) with `nkeys` keys, checked against the reply with
 * redis_rsp_fits. */
void backend_send_redis(struct backend_server *s, const struct redis_cmd *cmd,
                        uint32_t nkeys, struct evbuffer *bytes,
                        backend_redis_cb cb, void *arg);

/* Requests queued or in flight on the server's connections. */
uint32_t backend_server_pending(const struct backend_server *s);

#endif
