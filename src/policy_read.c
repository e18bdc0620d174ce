/* policy_read: reads of a tiered pool, key by key through the tiers.
 *
 *   get:   L1 (one, at random) ─miss─► master ─miss/fail─► slave
 *            hit at master: add to that L1; hit at slave: add to master, L1
 *   gets:  master ─miss/fail─► slave ─hit─► add to master ─► gets master
 *   gat, gats: master only (they change the expiry where the cas lives)
 *
 * Each step is one round: the keys still wanted are grouped per server of
 * the step's tier, and the next step starts when the round's replies are
 * all in. Values wait in per-key slots and leave in the client's order. */
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "policy_int.h"
#include "strata/util.h"

/* What a key has found so far (r->kstate). */
#define KS_HIT         0x01   /* a value is in its slot */
#define KS_MASTER_FAIL 0x02   /* the last master read of it failed */
#define KS_SLAVE_FAIL  0x04
#define KS_SLAVE_HIT   0x08   /* gets: slave had it, master is being filled */

enum read_stage {
    STAGE_L1 = 1,
    STAGE_MASTER,
    STAGE_SLAVE,
    STAGE_REGETS,    /* gets: read master again after the add */
    STAGE_DONE,
};

static void read_round(struct policy_pool *pp, struct policy_req *r);

static bool is_gets(const struct policy_req *r)
{
    return r->msg->req.cmd == MC_CMD_GETS;
}

static struct policy_tier *stage_tier(struct policy_pool *pp, const struct policy_req *r)
{
    switch (r->stage) {
    case STAGE_L1:     return &pp->l1[r->l1];
    case STAGE_SLAVE:  return pp->slave;
    default:           return pp->master;
    }
}

static uint8_t stage_fail_bit(const struct policy_req *r)
{
    return r->stage == STAGE_SLAVE ? KS_SLAVE_FAIL :
           r->stage == STAGE_L1 ? 0 : KS_MASTER_FAIL;
}

/* Which keys a round reads: every key not found yet; after a gets found
 * keys at the slave, only those. */
static bool want_key(const struct policy_req *r, uint32_t k)
{
    if (r->stage == STAGE_REGETS)
        return (r->kstate[k] & KS_SLAVE_HIT) != 0;
    return (r->kstate[k] & KS_HIT) == 0;
}

static void key_unrouted(struct policy_req *r, uint32_t k)
{
    r->kstate[k] |= stage_fail_bit(r);
}

static void stage_advance(struct policy_pool *pp, struct policy_req *r)
{
    switch (r->stage) {
    case STAGE_L1:
        r->stage = STAGE_MASTER;
        break;
    case STAGE_MASTER:
        r->stage = pp->slave != NULL ? STAGE_SLAVE : STAGE_DONE;
        break;
    case STAGE_SLAVE:
        r->stage = is_gets(r) ? STAGE_REGETS : STAGE_DONE;
        break;
    default:
        r->stage = STAGE_DONE;
        break;
    }
}

/* "add key flags ttl bytes" of a value just read, to `t`, asynchronously. */
static void write_back(struct policy_pool *pp, struct policy_tier *t, struct mc_rsp *rsp)
{
    stats_tier_add(t->stats, writebacks, 1);
    policy_async_store_tier(pp, t, MC_CMD_ADD, rsp->line + rsp->key.off, rsp->key.len,
                            rsp->flags, pp->conf->backfill_ttl, rsp->data);
}

/* One of the round's requests is over: the next step starts when all are. */
static void round_end_one(struct policy_pool *pp, struct policy_req *r)
{
    if (--r->pending == 0) {
        stage_advance(pp, r);
        read_round(pp, r);
    }
}

/* gets found the key at the slave: add it to master (synchronously, as
 * part of this round) so that the cas unique comes from master. */
static bool gets_fill_master_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                                const char *reason)
{
    (void)rsp; (void)reason;
    struct policy_frag *f = arg;   /* the slave fragment that found it */
    if (ev != BACKEND_VALUE)
        round_end_one(f->pool, f->req);
    return true;
}

/* "add key flags ttl bytes" + the value into out. */
static int compose_fill(struct evbuffer *out, const struct policy_pool *pp,
                        struct mc_rsp *rsp)
{
    if (mc_compose_storage(out, MC_CMD_ADD, rsp->line + rsp->key.off, rsp->key.len,
                           rsp->flags, pp->conf->backfill_ttl, rsp->vlen) != 0)
        return -1;
    return mc_compose_block(out, rsp->data, false);
}

/* Without a master to add to, or when the add cannot be composed, the
 * key is left to the re-read of master (which then misses). */
static void gets_fill_master(struct policy_frag *f, struct mc_rsp *rsp)
{
    struct policy_pool *pp = f->pool;
    struct policy_tier *m = pp->master;
    uint32_t s = router_pick(&m->router, rsp->line + rsp->key.off, rsp->key.len);
    if (s == UINT32_MAX || pp->closing)
        return;
    if (compose_fill(pp->scratch, pp, rsp) != 0) {
        evbuffer_drain(pp->scratch, evbuffer_get_length(pp->scratch));
        return;
    }
    stats_tier_add(m->stats, writebacks, 1);
    f->req->pending++;
    backend_send(m->servers[s], MC_CMD_ADD, pp->scratch, gets_fill_master_cb, f);
}

/* The write-backs a hit at this stage calls for. */
static void read_hit_write_back(struct policy_pool *pp, struct policy_req *r,
                                struct mc_rsp *rsp)
{
    if (r->stage == STAGE_MASTER && !is_gets(r) && pp->nl1 > 0)
        write_back(pp, &pp->l1[r->l1], rsp);
    if (r->stage == STAGE_SLAVE) {
        write_back(pp, pp->master, rsp);
        if (pp->nl1 > 0)
            write_back(pp, &pp->l1[r->l1], rsp);
    }
}

/* A VALUE of one frag: false when its key is not the frag's next one
 * (the backend then fails the frag, which counts as a failed read of its
 * tier and falls through); else a hit, unless r failed. */
static bool read_value(struct policy_frag *f, struct mc_rsp *rsp)
{
    struct policy_req *r = f->req;
    uint32_t k;
    if (!policy_frag_match_key(f, rsp, &k))
        return false;
    if (r->failed)
        return true;
    stats_tier_add(f->tier->stats, hits, 1);
    if (r->stage == STAGE_SLAVE && is_gets(r)) {
        r->kstate[k] |= KS_SLAVE_HIT;
        gets_fill_master(f, rsp);
        return true;
    }
    r->kstate[k] = (uint8_t)((r->kstate[k] | KS_HIT) & ~KS_MASTER_FAIL);
    read_hit_write_back(f->pool, r, rsp);
    if (!policy_reply_admit(r, rsp))
        return true;
    struct evbuffer *slot = policy_slot(r, k);
    if (slot != NULL)
        evbuffer_drain(slot, evbuffer_get_length(slot));
    if (slot == NULL || mc_compose_value(slot, rsp) != 0)
        policy_req_fail(r, "%s", POLICY_ERR_NOMEM);
    return true;
}

/* The end of one server's reply: keys it did not return missed there, or
 * failed there when the reply was an error or invalid (the backend failed
 * it). Values that came whole before the failure stay hits. */
static void read_frag_end(struct policy_frag *f, bool failed)
{
    struct policy_req *r = f->req;
    uint8_t bit = stage_fail_bit(r);
    for (uint32_t i = 0; i < f->count; i++) {
        uint32_t k = r->key_idx[f->first + i];
        if (r->kstate[k] & (KS_HIT | KS_SLAVE_HIT))
            continue;
        if (failed) {
            r->kstate[k] |= bit;
            stats_tier_add(f->tier->stats, read_errors, 1);
        } else {
            if (r->stage == STAGE_MASTER || r->stage == STAGE_REGETS)
                r->kstate[k] &= (uint8_t)~KS_MASTER_FAIL;
            stats_tier_add(f->tier->stats, misses, 1);
        }
    }
}

static bool read_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                    const char *reason)
{
    (void)reason;
    struct policy_frag *f = arg;
    struct policy_req *r = f->req;
    if (ev == BACKEND_VALUE)
        return read_value(f, rsp);
    bool failed = ev == BACKEND_FAIL || rsp->type != MC_RSP_END;
    read_frag_end(f, failed);   /* a tier's failures: its read_errors */
    round_end_one(f->pool, r);
    return true;
}

/* A key failed beyond repair when master failed for it and nothing else
 * could stand in: for gets nothing can (the cas must be master's); for get
 * a slave miss is an answer, a slave failure is not. */
static bool key_lost(const struct policy_pool *pp, const struct policy_req *r, uint32_t k)
{
    uint8_t ks = r->kstate[k];
    if ((ks & KS_HIT) || !(ks & KS_MASTER_FAIL))
        return false;
    return is_gets(r) || pp->slave == NULL || (ks & KS_SLAVE_FAIL);
}

/* The hits in request order then END, or the error line. */
static void read_finish(struct policy_pool *pp, struct policy_req *r)
{
    struct evbuffer *reply = r->msg->reply;
    uint32_t n = r->msg->req.nkeys;
    for (uint32_t k = 0; k < n && !r->failed; k++)
        if (key_lost(pp, r, k))
            policy_req_fail(r, "SERVER_ERROR %s",
                            is_gets(r) || pp->slave == NULL ? "master unavailable"
                                                            : "master and slave unavailable");
    for (uint32_t k = 0; k < n && !r->failed; k++)
        if (r->slots[k] != NULL && (r->kstate[k] & KS_HIT) &&
            evbuffer_add_buffer(reply, r->slots[k]) != 0)
            policy_req_fail(r, "%s", POLICY_ERR_NOMEM);
    if (!r->failed && mc_compose_reply_line(reply, "END") != 0)
        policy_req_fail(r, "%s", POLICY_ERR_NOMEM);
    for (uint32_t k = 0; k < n && !r->failed; k++)
        policy_count_reads(pp, (r->kstate[k] & KS_HIT) != 0, (r->kstate[k] & KS_HIT) == 0);
    if (r->failed) {
        /* forward_error counts what clients see: one per failed request,
         * not the tier failures another tier stood in for */
        stats_pool_add(pp->stats, forward_error, 1);
        policy_reply_line(r, r->error);   /* the slots are emptied on release */
    } else {
        policy_req_finish(r);
    }
}

/* Sends each used frag of tier t its keys; a frag whose request cannot be
 * composed counts as failed at once. Returns the requests sent. */
static uint32_t round_send(struct policy_pool *pp, struct policy_tier *t,
                           struct policy_req *r, enum mc_cmd cmd)
{
    uint32_t sent = 0;
    for (uint32_t s = 0; s < t->nservers; s++) {
        struct policy_frag *f = &r->frags[s];
        if (f->count == 0)
            continue;
        if (mc_compose_get(pp->scratch, cmd, &r->msg->req, r->key_idx + f->first,
                           f->count) != 0) {
            read_frag_end(f, true);
            continue;
        }
        sent++;
        backend_send(t->servers[s], cmd, pp->scratch, read_cb, f);
    }
    return sent;
}

/* Starts the next step that has keys to read, or finishes the request. */
static void read_round(struct policy_pool *pp, struct policy_req *r)
{
    if (pp->closing)
        policy_req_fail(r, "SERVER_ERROR %s", "proxy shutting down");
    while (r->stage != STAGE_DONE && !r->failed) {
        struct policy_tier *t = stage_tier(pp, r);
        int used = policy_group_keys(pp, t, r, want_key, key_unrouted);
        if (used < 0) {
            policy_req_fail(r, "%s", POLICY_ERR_NOMEM);
            break;
        }
        bool cas = is_gets(r) && (r->stage == STAGE_MASTER || r->stage == STAGE_REGETS);
        r->pending = used > 0 ? round_send(pp, t, r, cas ? MC_CMD_GETS : MC_CMD_GET) : 0;
        if (r->pending > 0)
            return;
        stage_advance(pp, r);
    }
    read_finish(pp, r);
}

/* Room for a slot and a state per key. 0, or -1 when out of memory. */
static int read_reserve(struct policy_req *r)
{
    uint32_t n = r->msg->req.nkeys;
    if (policy_slots_reserve(r) != 0)
        return -1;
    uint8_t *ks = policy_grow(r->kstate, &r->kstate_cap, n, sizeof(*ks));
    if (ks == NULL)
        return -1;
    r->kstate = ks;
    memset(ks, 0, n);
    return 0;
}

void policy_tiered_read(struct policy_pool *pp, struct policy_req *r)
{
    if (r->msg->req.cmd == MC_CMD_GAT || r->msg->req.cmd == MC_CMD_GATS) {
        policy_read_tier(pp, pp->master, r);
        return;
    }
    if (read_reserve(r) != 0) {
        policy_reply_line(r, POLICY_ERR_NOMEM);
        return;
    }
    r->l1 = pp->nl1 > 0 ? util_xorshift(&pp->rng) % pp->nl1 : 0;
    r->stage = pp->nl1 > 0 && !is_gets(r) ? STAGE_L1 : STAGE_MASTER;
    read_round(pp, r);
}
