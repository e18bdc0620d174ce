/* policy_write: writes to a tiered pool. Master answers the client; the
 * other tiers (slave, every L1, every replica) follow asynchronously.
 *
 *   set                  ─► others now (set) ─► master, reply
 *   delete               ─► others now (delete, retried) ─► master, reply
 *   add, cas, replace    ─► L1s now (delete) ─► master, reply
 *                              ─STORED─► others (set)
 *   incr, decr,
 *   append, prepend      ─► L1s now (delete) ─► master, reply
 *                              ─success─► others (delete, retried)
 *   touch                ─► master, reply ─TOUCHED─► others (touch)
 *
 * The L1 deletes go out before master's request so that a read pipelined
 * right behind the write, which starts at an L1, cannot find the old value
 * there. The deletes after master's success close the window in which a
 * concurrent reader wrote the old master value back to an L1.
 * incr/decr/append/prepend invalidate instead of replaying: a replay on a
 * tier that holds a different (or no) value would make it diverge, while
 * a delete only costs one more master read. */
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "policy_int.h"
#include "strata/util.h"

static const char *msg_key(const struct msg *msg, size_t *len)
{
    *len = msg->req.keys[0].len;
    return msg->req.line + msg->req.keys[0].off;
}

/* The value of a storage request goes to every other tier as a set. */
static void fanout_value(struct policy_pool *pp, struct msg *msg)
{
    size_t klen;
    const char *key = msg_key(msg, &klen);
    for (uint32_t i = 1; i < pp->ntiers; i++)
        policy_async_store_tier(pp, &pp->tiers[i], MC_CMD_SET, key, klen,
                                msg->req.flags, msg->req.exptime, msg->req.data);
}

static void invalidate_l1(struct policy_pool *pp, const char *key, size_t klen)
{
    for (uint32_t i = 0; i < pp->nl1; i++) {
        struct policy_tier *t = &pp->l1[i];
        uint32_t s = router_pick(&t->router, key, klen);
        if (s == UINT32_MAX)
            continue;
        evbuffer_add_printf(pp->scratch, "delete %.*s\r\n", (int)klen, key);
        policy_async_send(pp, t, s, MC_CMD_DELETE, pp->scratch, key, klen);
    }
}

void policy_write_after_master(struct policy_pool *pp, struct msg *msg,
                               const struct mc_rsp *rsp)
{
    size_t klen;
    const char *key = msg_key(msg, &klen);
    switch (msg->req.cmd) {
    case MC_CMD_ADD:
    case MC_CMD_CAS:
    case MC_CMD_REPLACE:
        if (rsp->type == MC_RSP_STORED)
            fanout_value(pp, msg);
        break;
    case MC_CMD_APPEND:
    case MC_CMD_PREPEND:
        if (rsp->type == MC_RSP_STORED)
            policy_async_fanout_key(pp, MC_CMD_DELETE, key, klen, 0);
        break;
    case MC_CMD_INCR:
    case MC_CMD_DECR:
        if (rsp->type == MC_RSP_NUMBER)
            policy_async_fanout_key(pp, MC_CMD_DELETE, key, klen, 0);
        break;
    case MC_CMD_TOUCH:
        if (rsp->type == MC_RSP_TOUCHED)
            policy_async_fanout_key(pp, MC_CMD_TOUCH, key, klen, msg->req.exptime);
        break;
    default:
        break;
    }
}

void policy_tiered_write(struct policy_pool *pp, struct msg *msg)
{
    size_t klen;
    const char *key = msg_key(msg, &klen);
    /* Nothing reaches the other tiers unless master can take it. */
    uint32_t s = policy_pick_or_fail(pp, pp->master, msg);
    if (s == UINT32_MAX)
        return;
    switch (msg->req.cmd) {
    case MC_CMD_SET:
        fanout_value(pp, msg);
        break;
    case MC_CMD_DELETE:
        policy_async_fanout_key(pp, MC_CMD_DELETE, key, klen, 0);
        break;
    case MC_CMD_TOUCH:
        break;
    default:   /* master decides; meanwhile no L1 may serve the old value */
        invalidate_l1(pp, key, klen);
        break;
    }
    /* The value is shared, not moved: add/cas/replace fan it out later. */
    policy_send_keyed(pp, pp->master, s, msg, policy_single_cb, true);
}
