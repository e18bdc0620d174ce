/* Internal to the policy files: fragments, shared helpers, and the entry
 * points of the tiered read/write paths and the async fan-out. */
#ifndef STRATA_POLICY_INT_H
#define STRATA_POLICY_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "strata/policy.h"

struct evbuffer;

/* The part of a msg that went to one server in one step. */
struct policy_frag {
    struct msg         *msg;
    struct policy_pool *pool;
    struct policy_tier *tier;
    uint32_t            first;   /* range of msg->key_idx for this server */
    uint32_t            count;
    uint32_t            cursor;  /* next key of the range a VALUE may match */
    bool                direct;  /* values go straight into msg->reply */
};

void *policy_grow(void *p, uint32_t *cap, uint32_t need, size_t size);
void policy_frags_reserve(struct msg *msg, uint32_t n);
void policy_tier_refresh(struct policy_tier *t);
void policy_msg_fail(struct msg *msg, const char *fmt, const char *reason);
void policy_reply_error(struct msg *msg, const char *line);
bool policy_frag_match_key(struct policy_frag *f, const struct mc_rsp *rsp,
                           uint32_t *key);
void policy_value_append(struct evbuffer *out, struct mc_rsp *rsp);
/* Appends in's bytes to out without copying them; in keeps its bytes. */
void policy_share(struct evbuffer *out, struct evbuffer *in);
/* Groups keys[idx] for the chosen keys per server of tier t into
 * msg->key_idx / msg->frags. `want(msg, k)` selects keys; keys with no
 * live server are reported through *unrouted (count). Returns frags used. */
uint32_t policy_group_keys(struct policy_pool *pp, struct policy_tier *t,
                           struct msg *msg, bool (*want)(const struct msg *, uint32_t),
                           void (*unrouted)(struct msg *, uint32_t));

/* The server of msg's (single) key in tier t; UINT32_MAX after replying
 * "SERVER_ERROR no server available" when the tier has no live server. */
uint32_t policy_pick_or_fail(struct policy_pool *pp, struct policy_tier *t,
                             struct msg *msg);
/* Sends msg's one-key request to server s of t as the client wrote it
 * (less noreply); cb gets msg->frags[0]. keep_value shares the data block
 * instead of moving it, so it can still be fanned out afterwards. */
void policy_send_keyed(struct policy_pool *pp, struct policy_tier *t, uint32_t s,
                       struct msg *msg, backend_cb cb, bool keep_value);
/* The callback of a one-key request to master: master's line is the
 * reply; in a tiered pool the fan-out that depends on it follows. */
void policy_single_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                      const char *reason);
/* Tiered pools: what the other tiers get once master has answered. */
void policy_write_after_master(struct policy_pool *pp, struct msg *msg,
                               const struct mc_rsp *rsp);
/* A plain read of msg's keys from one tier (policy.c). */
void policy_read_tier(struct policy_pool *pp, struct policy_tier *t, struct msg *msg);

/* Tiered pools (policy_read.c, policy_write.c). */
void policy_tiered_read(struct policy_pool *pp, struct msg *msg);
void policy_tiered_write(struct policy_pool *pp, struct msg *msg);

/* Asynchronous writes (policy_async.c): bytes (moved) to server s of tier
 * t, bounded per server, counted, deletes retried with backoff. `key` is
 * needed only for deletes (to resend them). */
void policy_async_send(struct policy_pool *pp, struct policy_tier *t, uint32_t s,
                       enum mc_cmd cmd, struct evbuffer *bytes,
                       const char *key, size_t klen);
/* Sends a storage command for key to every tier but master, by reference
 * to `data` (kept intact). cmd is MC_CMD_SET or MC_CMD_ADD (write-back). */
void policy_async_store_tier(struct policy_pool *pp, struct policy_tier *t,
                             enum mc_cmd cmd, const char *key, size_t klen,
                             uint32_t flags, int64_t exptime,
                             struct evbuffer *data);
/* Drops the deletes waiting for a retry (shutdown). */
void policy_async_cancel(struct policy_pool *pp);
/* delete or touch of key to every tier but master. */
void policy_async_fanout_key(struct policy_pool *pp, enum mc_cmd cmd,
                             const char *key, size_t klen, int64_t exptime);

#endif
