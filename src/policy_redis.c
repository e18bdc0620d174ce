/* policy_redis: the plan of a request in a Redis pool. Keys route as
 * nutcracker routes them, on the master tier; Redis replicates by itself,
 * so a write goes to its shard's master only, and a read-only command to
 * the same shard on one of the slave tiers (chosen at random per request),
 * falling back to master when that replica fails or is ejected.
 *
 *   one key ──► master shard m ──► read-only? slaves[k] copy of m : master
 *   several ──► keys grouped per shard ──► one part per shard ──► merged in
 *               key order (MGET), added (DEL, EXISTS, ...) or +OK (MSET)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "policy_int.h"
#include "strata/util.h"

/* ---- set-up ---- */

/* Master server m's copy in slave tier st: the server with m's name, or
 * at m's position when master's servers have no names (the pool file
 * loader has checked that names and weights agree). */
static int shard_of(const struct conf_tier *master, const struct conf_tier *st,
                    uint32_t m, uint32_t *out)
{
    const char *name = master->servers[m].name;
    if (name == NULL) {
        *out = m;
        return m < st->nservers ? 0 : -1;
    }
    for (uint32_t j = 0; j < st->nservers; j++) {
        if (st->servers[j].name != NULL && strcmp(st->servers[j].name, name) == 0) {
            *out = j;
            return 0;
        }
    }
    return -1;
}

int policy_redis_init(struct policy_pool *pp, char *err, size_t errlen)
{
    uint32_t n = pp->master->nservers;
    if (pp->nslaves == 0)
        return 0;
    pp->shard_map = util_xcalloc((size_t)pp->nslaves * n, sizeof(uint32_t));
    for (uint32_t k = 0; k < pp->nslaves; k++) {
        for (uint32_t m = 0; m < n; m++) {
            if (shard_of(pp->master->conf, pp->slaves[k].conf, m,
                         &pp->shard_map[k * n + m]) != 0) {
                snprintf(err, errlen, "pool %s: %s has no copy of server %s",
                         pp->conf->name, pp->slaves[k].name,
                         pp->master->conf->servers[m].text);
                return -1;
            }
        }
    }
    return 0;
}

/* ---- replies ---- */

/* The error a client gets when no reply came from a server: nutcracker's
 * "ERR <strerror>" — ETIMEDOUT for a timeout, ECONNRESET for a server
 * that closed, else the errno text the backend's reason ends with. */
static void fail_backend(struct policy_req *r, const char *reason)
{
    const char *colon = strrchr(reason, ':');
    if (strstr(reason, "timed out") != NULL)
        reason = "Connection timed out";
    else if (strstr(reason, "closed the connection") != NULL)
        reason = "Connection reset by peer";
    else if (colon != NULL && colon[1] == ' ')
        reason = colon + 2;
    policy_req_fail(r, "ERR %s", reason);
}

/* An error reply's text (without '-' and "\r\n") becomes r's reply. */
static void fail_with_error_reply(struct policy_req *r, const struct redis_rsp *rsp)
{
    char text[sizeof(r->error)];
    size_t n = evbuffer_copyout(rsp->data, text, sizeof(text) - 1);
    text[n > 0 ? n : 0] = '\0';
    char *end = strstr(text, "\r\n");
    if (end != NULL)
        *end = '\0';
    policy_req_fail(r, "%s", text[0] == '-' ? text + 1 : text);
}

/* Replaces the reply with r's error and finishes r. */
static void finish_failed(struct policy_req *r)
{
    struct evbuffer *reply = r->msg->reply;
    evbuffer_drain(reply, evbuffer_get_length(reply));
    stats_pool_add(r->pool->stats, forward_error, 1);
    if (redis_compose_error(reply, r->error) != 0)
        evbuffer_drain(reply, evbuffer_get_length(reply));
    policy_req_finish(r);
}

static bool wants_replica(const struct policy_pool *pp, const struct policy_req *r)
{
    return r->msg->redis.cmd->readonly && pp->nslaves > 0 && !pp->conf->read_from_master;
}

/* A replica that answers this way is not serving (loading its data set,
 * cut off from its master): the read goes to master instead. */
static bool replica_unavailable(const struct redis_rsp *rsp)
{
    static const char *const states[] = { "-LOADING", "-MASTERDOWN", "-BUSY" };
    char head[16];
    if (rsp->type != REDIS_RSP_ERROR)
        return false;
    size_t n = evbuffer_copyout(rsp->data, head, sizeof(head) - 1);
    head[n] = '\0';
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
        if (strncmp(head, states[i], strlen(states[i])) == 0)
            return true;
    return false;
}

/* ---- sending ---- */

void policy_redis_pending(void *arg, ssize_t n)
{
    struct policy_frag *f = arg;
    msg_charge(f->req->msg, n);
}

bool policy_redis_admit(void *arg, size_t n)
{
    struct policy_frag *f = arg;
    struct policy_req *r = f->req;
    if (!r->msg->redis.cmd->readonly || r->failed)
        return true;
    return policy_reply_check_bytes(r, n);
}

static void part_cb(void *arg, struct redis_rsp *rsp, const char *reason);

/* Commands whose keys are split per shard (the others go whole to the
 * shard of their first key). */
static bool is_split(const struct redis_req *req)
{
    return req->cmd->kind == REDIS_KIND_MULTI || req->cmd->kind == REDIS_KIND_PAIRS;
}

/* The bytes of frag f's part: the client's request as it came when f
 * holds every key (or the command is not split), else the command for
 * f's keys only. */
static int compose_part(struct policy_pool *pp, const struct policy_frag *f)
{
    const struct policy_req *r = f->req;
    const struct redis_req *req = &r->msg->redis;
    if (!is_split(req) || f->count == req->nkeys)
        return evbuffer_add(pp->scratch, req->buf, req->len);
    return redis_compose_split(pp->scratch, req, r->key_idx + f->first, f->count);
}

/* Sends frag f to server s of tier t. f->cursor holds the master shard
 * (for a fallback). Returns -1 when the part cannot be composed. */
static int send_part(struct policy_pool *pp, struct policy_frag *f, struct policy_tier *t,
                     uint32_t s)
{
    if (compose_part(pp, f) != 0) {
        evbuffer_drain(pp->scratch, evbuffer_get_length(pp->scratch));
        return -1;
    }
    const struct redis_req *req = &f->req->msg->redis;
    f->tier = t;
    backend_send_redis(t->servers[s], req->cmd, f->count, pp->scratch, part_cb, f);
    return 0;
}

/* Where frag f (for master shard m) reads from: a live copy of m on the
 * slave tier chosen for r, else master. */
static void send_read_or_write(struct policy_pool *pp, struct policy_frag *f, uint32_t m,
                               uint32_t slave_tier)
{
    struct policy_req *r = f->req;
    f->cursor = m;
    if (slave_tier < pp->nslaves) {
        struct policy_tier *t = &pp->slaves[slave_tier];
        uint32_t s = pp->shard_map[slave_tier * pp->master->nservers + m];
        if (backend_server_live(t->servers[s], util_now_ms())) {
            r->pending++;
            if (send_part(pp, f, t, s) != 0) {
                r->pending--;
                policy_req_fail(r, "%s", "ERR cannot compose the backend request");
            }
            return;
        }
        stats_tier_add(t->stats, read_fallbacks, 1);
    }
    r->pending++;
    if (send_part(pp, f, pp->master, m) != 0) {
        r->pending--;
        policy_req_fail(r, "%s", "ERR cannot compose the backend request");
    }
}

/* ---- merging ---- */

/* Part f's reply merged into r: an error reply fails r (the first one is
 * what the client gets, as nutcracker); else its elements move (in
 * order, chains, no lookup per element) to the slots of their keys, its
 * integer is added, or its +OK is noted. */
static void merge_part(struct policy_frag *f, struct redis_rsp *rsp)
{
    struct policy_req *r = f->req;
    const struct redis_req *req = &r->msg->redis;
    if (rsp->type == REDIS_RSP_ERROR) {
        fail_with_error_reply(r, rsp);
        return;
    }
    if (r->failed)
        return;
    switch (req->cmd->merge) {
    case REDIS_MERGE_ARRAY:
        if (!policy_reply_admit_bytes(r, evbuffer_get_length(rsp->data)))
            return;
        for (uint32_t i = 0; i < f->count; i++) {
            struct evbuffer *slot = policy_slot(r, r->key_idx[f->first + i]);
            if (slot == NULL || redis_compose_take_element(slot, rsp, i) != 0) {
                policy_req_fail(r, "%s", "ERR out of memory");
                return;
            }
        }
        break;
    case REDIS_MERGE_SUM:
        r->sum += rsp->integer;
        break;
    case REDIS_MERGE_OK:
    case REDIS_MERGE_NONE:
        break;
    }
}

/* One key of a split MGET: a nil element is a miss, anything else a hit. */
static void count_element(struct policy_pool *pp, struct evbuffer *element)
{
    char head[3];
    bool nil = evbuffer_copyout(element, head, 3) == 3 && memcmp(head, "$-1", 3) == 0;
    policy_count_reads(pp, !nil, nil);
}

/* The elements of an MGET's array reply (bulks and nils, already framed
 * and checked), counted as hits and misses. */
static void count_array(struct policy_pool *pp, struct evbuffer *data)
{
    struct evbuffer_ptr at;
    char line[24];
    uint32_t hits = 0, misses = 0;
    size_t eol_len;
    if (evbuffer_ptr_set(data, &at, 0, EVBUFFER_PTR_SET) != 0)
        return;
    for (bool head = true;; head = false) {
        struct evbuffer_ptr eol = evbuffer_search_eol(data, &at, &eol_len, EVBUFFER_EOL_CRLF);
        size_t n = eol.pos < 0 ? 0 : (size_t)(eol.pos - at.pos);
        if (eol.pos < 0 || n >= sizeof(line) ||
            evbuffer_copyout_from(data, &at, line, n) != (ev_ssize_t)n)
            break;
        line[n] = '\0';
        long len = strtol(line + 1, NULL, 10);
        size_t skip = n + eol_len + (!head && len >= 0 ? (size_t)len + 2 : 0);
        if (!head && len < 0)
            misses++;
        else if (!head)
            hits++;
        if (evbuffer_ptr_set(data, &at, skip, EVBUFFER_PTR_ADD) != 0)
            break;
    }
    policy_count_reads(pp, hits, misses);
}

/* Every part is in: the merged reply in key order, or the error. */
static void finish_split(struct policy_req *r)
{
    const struct redis_req *req = &r->msg->redis;
    struct evbuffer *reply = r->msg->reply;
    int rc = 0;
    if (r->failed) {
        finish_failed(r);
        return;
    }
    switch (req->cmd->merge) {
    case REDIS_MERGE_ARRAY:
        rc = redis_compose_array_header(reply, req->nkeys);
        for (uint32_t k = 0; rc == 0 && k < req->nkeys; k++) {
            if (r->slots[k] != NULL)
                count_element(r->pool, r->slots[k]);
            rc = r->slots[k] != NULL ? evbuffer_add_buffer(reply, r->slots[k]) : -1;
        }
        break;
    case REDIS_MERGE_SUM:
        rc = redis_compose_integer(reply, r->sum);
        break;
    case REDIS_MERGE_OK:
    case REDIS_MERGE_NONE:
        rc = redis_compose_status(reply, "OK");
        break;
    }
    if (rc != 0) {
        policy_req_fail(r, "%s", "ERR out of memory");
        finish_failed(r);
        return;
    }
    policy_req_finish(r);
}

/* One part for the whole request: its reply is the client's. A read's
 * is held only as policy_reply_admit_bytes allows (else r fails with
 * that error, not counted as a forwarding error); a write's always. */
static void whole_reply(struct policy_req *r, struct redis_rsp *rsp)
{
    struct evbuffer *reply = r->msg->reply;
    size_t len = evbuffer_get_length(rsp->data);
    r->pending = 0;
    if (r->msg->redis.cmd->readonly && rsp->type == REDIS_RSP_BULK)   /* GET, HGET, ... */
        policy_count_reads(r->pool, !rsp->nil, rsp->nil);
    else if (r->msg->redis.cmd->merge == REDIS_MERGE_ARRAY && rsp->type == REDIS_RSP_ARRAY)
        count_array(r->pool, rsp->data);   /* an MGET on one server */
    if (!r->msg->redis.cmd->readonly) {
        policy_reply_hold(r, len);
    } else if (!policy_reply_admit_bytes(r, len)) {
        if (redis_compose_error(reply, r->error) != 0)
            evbuffer_drain(reply, evbuffer_get_length(reply));
        policy_req_finish(r);
        return;
    }
    if (evbuffer_add_buffer(reply, rsp->data) != 0) {
        policy_req_fail(r, "%s", "ERR out of memory");
        finish_failed(r);
        return;
    }
    policy_req_finish(r);
}

static void part_cb(void *arg, struct redis_rsp *rsp, const char *reason)
{
    struct policy_frag *f = arg;
    struct policy_req *r = f->req;
    struct policy_pool *pp = f->pool;
    bool from_replica = f->tier != pp->master;
    if (from_replica && (rsp == NULL || replica_unavailable(rsp))) {
        stats_tier_add(f->tier->stats, read_fallbacks, 1);
        r->pending--;
        send_read_or_write(pp, f, f->cursor, UINT32_MAX);
        if (r->pending == 0)
            finish_split(r);
        return;
    }
    if (rsp == NULL)
        fail_backend(r, reason);
    else if (r->msg->redis.cmd->readonly)
        stats_tier_add(f->tier->stats, reads, 1);
    if (rsp != NULL && r->nfrags == 1 && !r->failed) {
        whole_reply(r, rsp);
        return;
    }
    if (rsp != NULL)
        merge_part(f, rsp);
    if (--r->pending == 0)
        finish_split(r);
}

/* ---- dispatch ---- */

static void unrouted(struct policy_req *r, uint32_t k)
{
    (void)k;
    policy_req_fail(r, "%s", "ERR no server available");
}

/* The shard of the request's first key (the one nutcracker routes EVAL
 * and the commands that take several keys by), on one frag. */
static void dispatch_single(struct policy_pool *pp, struct policy_req *r, uint32_t slave_tier)
{
    size_t len;
    const char *key = policy_req_key(r, 0, &len);
    uint32_t m = router_pick(&pp->master->router, key, len);
    if (m == UINT32_MAX)
        unrouted(r, 0);
    else if (policy_frags_reserve(r, 1) != 0)
        policy_req_fail(r, "%s", "ERR out of memory");
    if (r->failed) {
        finish_failed(r);
        return;
    }
    r->frags[0] = (struct policy_frag){ .req = r, .pool = pp, .tier = pp->master,
                                        .count = 1 };
    r->nfrags = 1;
    r->pending = 0;
    send_read_or_write(pp, &r->frags[0], m, slave_tier);
    if (r->pending == 0)
        finish_split(r);
}

/* Keys grouped per shard, a part per shard, merged when all are in. */
static void dispatch_split(struct policy_pool *pp, struct policy_req *r, uint32_t slave_tier)
{
    int used = policy_group_keys(pp, pp->master, r, NULL, unrouted);
    if (used < 0 || policy_slots_reserve(r) != 0)
        policy_req_fail(r, "%s", "ERR out of memory");
    if (r->failed) {
        finish_failed(r);
        return;
    }
    r->nfrags = (uint32_t)used;
    if (used > 1)
        stats_pool_add(pp->stats, fragments, used);
    r->pending = 0;
    for (uint32_t m = 0; m < pp->master->nservers; m++)
        if (r->frags[m].count > 0)
            send_read_or_write(pp, &r->frags[m], m, slave_tier);
    if (r->pending == 0)
        finish_split(r);
}

void policy_redis_dispatch(struct policy_pool *pp, struct policy_req *r)
{
    const struct redis_req *req = &r->msg->redis;
    if (req->cmd->kind == REDIS_KIND_PROXY || req->nkeys == 0) {
        policy_req_fail(r, "%s", "ERR internal: the proxy's own command reached the policy");
        finish_failed(r);
        return;
    }
    uint32_t slave_tier = UINT32_MAX;
    if (wants_replica(pp, r))
        slave_tier = (uint32_t)(util_xorshift(&pp->rng) % pp->nslaves);
    if (is_split(req))
        dispatch_split(pp, r, slave_tier);
    else
        dispatch_single(pp, r, slave_tier);
}
