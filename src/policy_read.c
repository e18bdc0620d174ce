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

/* What a key has found so far (msg->kstate). */
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

static void read_round(struct policy_pool *pp, struct msg *msg);

static bool is_gets(const struct msg *msg)
{
    return msg->req.cmd == MC_CMD_GETS;
}

static struct policy_tier *stage_tier(struct policy_pool *pp, const struct msg *msg)
{
    switch (msg->stage) {
    case STAGE_L1:     return &pp->l1[msg->l1];
    case STAGE_SLAVE:  return pp->slave;
    default:           return pp->master;
    }
}

static uint8_t stage_fail_bit(const struct msg *msg)
{
    return msg->stage == STAGE_SLAVE ? KS_SLAVE_FAIL :
           msg->stage == STAGE_L1 ? 0 : KS_MASTER_FAIL;
}

/* Which keys a round reads: every key not found yet; after a gets found
 * keys at the slave, only those. */
static bool want_key(const struct msg *msg, uint32_t k)
{
    if (msg->stage == STAGE_REGETS)
        return (msg->kstate[k] & KS_SLAVE_HIT) != 0;
    return (msg->kstate[k] & KS_HIT) == 0;
}

static void key_unrouted(struct msg *msg, uint32_t k)
{
    msg->kstate[k] |= stage_fail_bit(msg);
}

static void stage_advance(struct policy_pool *pp, struct msg *msg)
{
    switch (msg->stage) {
    case STAGE_L1:
        msg->stage = STAGE_MASTER;
        break;
    case STAGE_MASTER:
        msg->stage = pp->slave != NULL ? STAGE_SLAVE : STAGE_DONE;
        break;
    case STAGE_SLAVE:
        msg->stage = is_gets(msg) ? STAGE_REGETS : STAGE_DONE;
        break;
    default:
        msg->stage = STAGE_DONE;
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

/* gets found the key at the slave: add it to master (synchronously, as
 * part of this round) so that the cas unique comes from master. */
static void gets_fill_master_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                                const char *reason)
{
    (void)rsp; (void)reason;
    struct policy_frag *f = arg;   /* the slave fragment that found it */
    struct msg *msg = f->msg;
    if (ev == BACKEND_VALUE)
        return;
    if (--msg->pending == 0) {
        stage_advance(f->pool, msg);
        read_round(f->pool, msg);
    }
}

static void gets_fill_master(struct policy_frag *f, struct mc_rsp *rsp)
{
    struct policy_pool *pp = f->pool;
    struct msg *msg = f->msg;
    struct policy_tier *m = pp->master;
    const char *key = rsp->line + rsp->key.off;
    uint32_t s = router_pick(&m->router, key, rsp->key.len);
    if (s == UINT32_MAX || pp->closing)
        return;
    stats_tier_add(m->stats, writebacks, 1);
    evbuffer_add_printf(pp->scratch, "add %.*s %u %u %u\r\n", (int)rsp->key.len, key,
                        rsp->flags, pp->conf->backfill_ttl, rsp->vlen);
    evbuffer_add_buffer(pp->scratch, rsp->data);
    evbuffer_add(pp->scratch, "\r\n", 2);
    msg->pending++;
    backend_send(&m->servers[s], MC_CMD_ADD, pp->scratch, gets_fill_master_cb, f);
}

static void read_value(struct policy_frag *f, struct mc_rsp *rsp)
{
    struct msg *msg = f->msg;
    struct policy_pool *pp = f->pool;
    uint32_t k;
    if (!policy_frag_match_key(f, rsp, &k)) {
        policy_msg_fail(msg, "SERVER_ERROR %s", "backend returned a key it was not asked for");
        return;
    }
    stats_tier_add(f->tier->stats, hits, 1);
    if (msg->stage == STAGE_SLAVE && is_gets(msg)) {
        msg->kstate[k] |= KS_SLAVE_HIT;
        gets_fill_master(f, rsp);
        return;
    }
    msg->kstate[k] = (uint8_t)((msg->kstate[k] | KS_HIT) & ~KS_MASTER_FAIL);
    if (msg->stage == STAGE_MASTER && !is_gets(msg) && pp->nl1 > 0)
        write_back(pp, &pp->l1[msg->l1], rsp);
    if (msg->stage == STAGE_SLAVE) {
        write_back(pp, pp->master, rsp);
        if (pp->nl1 > 0)
            write_back(pp, &pp->l1[msg->l1], rsp);
    }
    if (msg->slots[k] == NULL)
        msg->slots[k] = evbuffer_new();
    else
        evbuffer_drain(msg->slots[k], evbuffer_get_length(msg->slots[k]));
    policy_value_append(msg->slots[k], rsp);
}

/* The end of one server's reply: keys it did not return missed there, or
 * failed there when the reply was an error. */
static void read_frag_end(struct policy_frag *f, bool failed)
{
    struct msg *msg = f->msg;
    uint8_t bit = stage_fail_bit(msg);
    for (uint32_t i = 0; i < f->count; i++) {
        uint32_t k = msg->key_idx[f->first + i];
        if (msg->kstate[k] & (KS_HIT | KS_SLAVE_HIT))
            continue;
        if (failed) {
            msg->kstate[k] |= bit;
            stats_tier_add(f->tier->stats, read_errors, 1);
        } else {
            if (msg->stage == STAGE_MASTER || msg->stage == STAGE_REGETS)
                msg->kstate[k] &= (uint8_t)~KS_MASTER_FAIL;
            stats_tier_add(f->tier->stats, misses, 1);
        }
    }
}

static void read_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                    const char *reason)
{
    (void)reason;
    struct policy_frag *f = arg;
    struct msg *msg = f->msg;
    if (ev == BACKEND_VALUE) {
        if (!msg->failed)
            read_value(f, rsp);
        return;
    }
    bool failed = ev == BACKEND_FAIL || rsp->type != MC_RSP_END;
    if (failed && msg->stage != STAGE_L1)
        stats_pool_add(f->pool->stats, forward_error, 1);
    read_frag_end(f, failed);
    if (--msg->pending == 0) {
        stage_advance(f->pool, msg);
        read_round(f->pool, msg);
    }
}

/* A key failed beyond repair when master failed for it and nothing else
 * could stand in: for gets nothing can (the cas must be master's); for get
 * a slave miss is an answer, a slave failure is not. */
static bool key_lost(const struct policy_pool *pp, const struct msg *msg, uint32_t k)
{
    uint8_t ks = msg->kstate[k];
    if ((ks & KS_HIT) || !(ks & KS_MASTER_FAIL))
        return false;
    return is_gets(msg) || pp->slave == NULL || (ks & KS_SLAVE_FAIL);
}

static void read_finish(struct policy_pool *pp, struct msg *msg)
{
    for (uint32_t k = 0; k < msg->req.nkeys && !msg->failed; k++)
        if (key_lost(pp, msg, k))
            policy_msg_fail(msg, "SERVER_ERROR %s",
                            is_gets(msg) || pp->slave == NULL ? "master unavailable"
                                                              : "master and slave unavailable");
    if (msg->failed) {
        for (uint32_t k = 0; k < msg->req.nkeys; k++)
            if (msg->slots[k] != NULL)
                evbuffer_drain(msg->slots[k], evbuffer_get_length(msg->slots[k]));
        policy_reply_error(msg, msg->error);
        return;
    }
    for (uint32_t k = 0; k < msg->req.nkeys; k++)
        if (msg->slots[k] != NULL && (msg->kstate[k] & KS_HIT))
            evbuffer_add_buffer(msg->reply, msg->slots[k]);
        else if (msg->slots[k] != NULL)
            evbuffer_drain(msg->slots[k], evbuffer_get_length(msg->slots[k]));
    evbuffer_add(msg->reply, "END\r\n", 5);
    msg_complete(msg);
}

static void compose_get(struct evbuffer *out, const char *word, const struct msg *msg,
                        const struct policy_frag *f)
{
    evbuffer_add(out, word, strlen(word));
    for (uint32_t i = 0; i < f->count; i++) {
        const struct mc_token *t = &msg->req.keys[msg->key_idx[f->first + i]];
        evbuffer_add(out, " ", 1);
        evbuffer_add(out, msg->req.line + t->off, t->len);
    }
    evbuffer_add(out, "\r\n", 2);
}

static void read_round(struct policy_pool *pp, struct msg *msg)
{
    if (pp->closing)
        policy_msg_fail(msg, "SERVER_ERROR %s", "proxy shutting down");
    while (msg->stage != STAGE_DONE && !msg->failed) {
        struct policy_tier *t = stage_tier(pp, msg);
        uint32_t used = policy_group_keys(pp, t, msg, want_key, key_unrouted);
        if (used == 0) {
            stage_advance(pp, msg);
            continue;
        }
        bool cas = is_gets(msg) && (msg->stage == STAGE_MASTER || msg->stage == STAGE_REGETS);
        enum mc_cmd cmd = cas ? MC_CMD_GETS : MC_CMD_GET;
        msg->pending = used;
        for (uint32_t s = 0; s < t->nservers; s++) {
            struct policy_frag *f = &msg->frags[s];
            if (f->count == 0)
                continue;
            compose_get(pp->scratch, cas ? "gets" : "get", msg, f);
            backend_send(&t->servers[s], cmd, pp->scratch, read_cb, f);
        }
        return;
    }
    read_finish(pp, msg);
}

void policy_tiered_read(struct policy_pool *pp, struct msg *msg)
{
    if (msg->req.cmd == MC_CMD_GAT || msg->req.cmd == MC_CMD_GATS) {
        policy_read_tier(pp, pp->master, msg);
        return;
    }
    uint32_t n = msg->req.nkeys;
    msg->slots = policy_grow(msg->slots, &msg->slots_cap, n, sizeof(*msg->slots));
    msg->kstate = policy_grow(msg->kstate, &msg->kstate_cap, n, sizeof(*msg->kstate));
    memset(msg->kstate, 0, n);
    msg->l1 = pp->nl1 > 0 ? util_xorshift(&pp->rng) % pp->nl1 : 0;
    msg->stage = pp->nl1 > 0 && !is_gets(msg) ? STAGE_L1 : STAGE_MASTER;
    read_round(pp, msg);
}
