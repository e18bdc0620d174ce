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

static const char *req_key(const struct policy_req *r, size_t *len)
{
    *len = r->msg->req.keys[0].len;
    return r->msg->req.line + r->msg->req.keys[0].off;
}

/* The value of a storage request goes to every other tier as a set. */
static void fanout_value(struct policy_pool *pp, struct policy_req *r)
{
    const struct mc_req *req = &r->msg->req;
    size_t klen;
    const char *key = req_key(r, &klen);
    for (uint32_t i = 1; i < pp->ntiers; i++)
        policy_async_store_tier(pp, &pp->tiers[i], MC_CMD_SET, key, klen,
                                req->flags, req->exptime, req->data);
}

static void invalidate_l1(struct policy_pool *pp, const char *key, size_t klen)
{
    for (uint32_t i = 0; i < pp->nl1; i++)
        policy_async_delete_tier(pp, &pp->l1[i], key, klen);
}

void policy_write_after_master(struct policy_pool *pp, struct policy_req *r,
                               const struct mc_rsp *rsp)
{
    size_t klen;
    const char *key = req_key(r, &klen);
    switch (r->msg->req.cmd) {
    case MC_CMD_ADD:
    case MC_CMD_CAS:
    case MC_CMD_REPLACE:
        if (rsp->type == MC_RSP_STORED)
            fanout_value(pp, r);
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
            policy_async_fanout_key(pp, MC_CMD_TOUCH, key, klen, r->msg->req.exptime);
        break;
    default:
        break;
    }
}

void policy_tiered_write(struct policy_pool *pp, struct policy_req *r)
{
    size_t klen;
    const char *key = req_key(r, &klen);
    /* Nothing reaches the other tiers unless master can take it. */
    uint32_t s = policy_pick_or_fail(pp, pp->master, r);
    if (s == UINT32_MAX)
        return;
    switch (r->msg->req.cmd) {
    case MC_CMD_SET:
        fanout_value(pp, r);
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
    /* The value is shared, not moved: add/cas/replace fan it out later.
     * Should master's request fail to compose (out of memory), the client
     * gets SERVER_ERROR and the fan-out above still stands: the same
     * outcome as a master that fails after the fan-out was sent. */
    policy_send_keyed(pp, pp->master, s, r, policy_single_cb, true);
}
