"""Tiered pool (Master-Slave-L1) with a tier down or hung: reads fall
through promptly, writes answer with master's reply, asynchronous
failures are counted and deletes retried."""

import time

import pytest

from harness import TIME_SCALE, xchg, key_owner
from policy_util import (tiers, relay_factory, held, put, eventually,  # noqa: F401
                         tiered_pool, value_reply, read_stats, TIMEOUT_MS,
                         SLACK)

pytestmark = pytest.mark.strata_only

PROMPT = 0.3 * TIME_SCALE                # a dead (refusing) server
BOUND = TIMEOUT_MS / 1000.0 + SLACK      # a hung server


def timed_xchg(c, request, expected, bound):
    t0 = time.monotonic()
    xchg(c, request, expected, timeout=bound + 1.0)
    took = time.monotonic() - t0
    assert took <= bound, "%r took %.3fs (bound %.3fs)" % (request, took, bound)
    return took


def seeded(t, n=40, prefix="fk"):
    """n keys set through the proxy (so on every tier), then removed from
    the L1s so that reads reach master. {master index: [keys]}."""
    keys = ["%s%d" % (prefix, i) for i in range(n)]
    with t.client() as c:
        for k in keys:
            assert c.set(k, "v-" + k) == b"STORED\r\n"
    assert eventually(lambda: all(held(s, keys[-1]) for s in t.others))
    for s in t.l1s:
        with s.client() as d:
            for k in keys:
                d.delete(k)
    owner = key_owner(t.masters, keys)
    by = {}
    for k in keys:
        by.setdefault(owner[k], []).append(k)
    assert sorted(by) == [0, 1]
    return by


# ------------------------------------------------------------------- L1 ----

def test_l1_down_reads_fall_to_master_promptly(tiers):
    t = tiers
    put(t.masters, "l1d", "mv")
    for s in t.l1s:
        s.kill()
    with t.client() as c:
        for _ in range(20):
            timed_xchg(c, b"get l1d\r\n", value_reply("l1d", "mv"), PROMPT)
        # writes too: master answers, the L1 fan-out fails quietly
        assert c.set("l1w", "x") == b"STORED\r\n"
        timed_xchg(c, b"get l1w\r\n", value_reply("l1w", "x"), PROMPT)
    doc = read_stats(t.proxy.stats_port)[t.POOL]
    errs = doc["tier:l1[0]"]["read_errors"] + doc["tier:l1[1]"]["read_errors"]
    assert errs == 21
    assert doc["tier:master"]["hits"] == 21
    assert doc["forward_error"] == 0   # an L1 failure is not the client's


def test_l1_hung_reads_served_by_master_within_timeout(
        memcached_factory, proxy_factory, relay_factory):
    ms = memcached_factory(1)
    l1 = memcached_factory(1)[0]
    pool = tiered_pool(ms, l1=[[relay_factory(l1.port)]])
    proxy = proxy_factory({"beta": pool})
    put(ms, "l1h", "mv")
    with proxy.client("beta") as c:
        timed_xchg(c, b"get l1h\r\n", value_reply("l1h", "mv"), BOUND)


# --------------------------------------------------------------- master ----

def test_master_server_down_reads_come_from_slave(tiers):
    t = tiers
    by = seeded(t)
    t.masters[0].kill()
    with t.client() as c:
        for k in by[0][:10]:
            timed_xchg(c, ("get %s\r\n" % k).encode(),
                       value_reply(k, "v-" + k), PROMPT)
        for k in by[1][:10]:
            timed_xchg(c, ("get %s\r\n" % k).encode(),
                       value_reply(k, "v-" + k), PROMPT)
        # a multi-get over both masters comes back whole and in order
        keys = by[0][:5] + by[1][:5] + ["absent-key"]
        vals = c.get_raw(keys, timeout=BOUND)
        assert [(k, d) for (k, f, d, u) in vals] == \
            [(k, ("v-" + k).encode()) for k in keys[:-1]]
    doc = read_stats(t.proxy.stats_port)[t.POOL]
    assert doc["tier:master"]["read_errors"] >= 10
    assert doc["tier:slave"]["hits"] >= 10
    # forward_error counts what clients saw: none of these failed
    assert doc["forward_error"] == 0


def test_master_server_down_gets_and_writes_fail_promptly(tiers):
    """gets cannot take a cas unique from the slave: SERVER_ERROR. Writes
    answer master's failure; a `set` has already been fanned out to the
    other tiers (it is sent to them first)."""
    t = tiers
    by = seeded(t)
    t.masters[0].kill()
    k = by[0][0]
    with t.client() as c:
        r, took = c.timed(("gets %s\r\n" % k).encode(), timeout=BOUND + 1)
        assert r.startswith(b"SERVER_ERROR ") and took <= PROMPT, (r, took)
        for line in ("set %s 0 0 1\r\nz\r\n" % k, "delete %s\r\n" % k,
                     "incr %s 1\r\n" % k, "touch %s 10\r\n" % k,
                     "add %s 0 0 1\r\nz\r\n" % k):
            r, took = c.timed(line.encode(), timeout=BOUND + 1)
            assert r.startswith(b"SERVER_ERROR ") and took <= PROMPT, \
                (line, r, took)
        # set is sent to the other tiers before master answers: they have
        # the value although the client was told SERVER_ERROR (documented
        # in docs/policies.md)
        k2 = by[0][1]
        r, took = c.timed(("set %s 0 0 3\r\nnew\r\n" % k2).encode(),
                          timeout=BOUND + 1)
        assert r.startswith(b"SERVER_ERROR ")
        assert eventually(lambda: all(held(s, k2) == (0, b"new")
                                      for s in [t.slave, t.replica]))
        # keys of the live master are unaffected
        k1 = by[1][0]
        assert c.set(k1, "new") == b"STORED\r\n"
        timed_xchg(c, ("get %s\r\n" % k1).encode(), value_reply(k1, "new"),
                   PROMPT)


def test_master_hung_reads_come_from_slave_within_timeout(
        memcached_factory, proxy_factory, relay_factory):
    m = memcached_factory(1)[0]
    slave = memcached_factory(1)
    pool = tiered_pool([relay_factory(m.port)], slave)
    proxy = proxy_factory({"beta": pool})
    put(slave, "mh", "sv")
    with proxy.client("beta") as c:
        took = timed_xchg(c, b"get mh\r\n", value_reply("mh", "sv"), BOUND)
        assert took >= TIMEOUT_MS / 1000.0 * 0.9


def test_master_and_slave_down_is_a_server_error(tiers):
    t = tiers
    by = seeded(t)
    t.masters[0].kill()
    t.slave.kill()
    with t.client() as c:
        r, took = c.timed(("get %s\r\n" % by[0][0]).encode(), timeout=BOUND)
        assert r == b"SERVER_ERROR master and slave unavailable\r\n", r
        assert took <= PROMPT
        # but an L1 hit needs neither
        put(t.l1s, by[0][1], "in-l1")
        timed_xchg(c, ("get %s\r\n" % by[0][1]).encode(),
                   value_reply(by[0][1], "in-l1"), PROMPT)
    assert read_stats(t.proxy.stats_port)[t.POOL]["forward_error"] == 1


# ---------------------------------------------------------------- slave ----

def test_slave_down_reads_and_writes_still_correct(tiers):
    t = tiers
    t.slave.kill()
    with t.client() as c:
        for i in range(10):
            k = "sd%d" % i
            r, took = c.timed(("set %s 0 0 2\r\nv%d\r\n" % (k, i)).encode())
            assert r == b"STORED\r\n" and took <= PROMPT
            timed_xchg(c, ("get %s\r\n" % k).encode(),
                       value_reply(k, "v%d" % i), PROMPT)
        timed_xchg(c, b"get sd-missing\r\n", b"END\r\n", PROMPT)
        timed_xchg(c, b"incr sd-n 1\r\n", b"NOT_FOUND\r\n", PROMPT)
        timed_xchg(c, b"delete sd0\r\n", b"DELETED\r\n", PROMPT)
        timed_xchg(c, b"get sd0\r\n", b"END\r\n", PROMPT)
        r, took = c.timed(b"gets sd1\r\n")
        assert r.startswith(b"VALUE sd1 0 2 ") and took <= PROMPT, r
        timed_xchg(c, b"gets sd-missing\r\n", b"END\r\n", PROMPT)
    assert eventually(lambda: read_stats(t.proxy.stats_port)[t.POOL][
        "tier:slave"]["async_failed"] >= 10)
    # the misses went on to the dead slave: its read_errors, not the
    # clients' (every client got its answer)
    doc = read_stats(t.proxy.stats_port)[t.POOL]
    assert doc["tier:slave"]["read_errors"] >= 1
    assert doc["forward_error"] == 0


def test_async_delete_is_retried_four_times(tiers):
    t = tiers
    t.slave.kill()
    with t.client() as c:
        assert c.set("rd", "v") == b"STORED\r\n"
        t0 = time.monotonic()
        assert c.delete("rd") == b"DELETED\r\n"
        assert time.monotonic() - t0 <= PROMPT

    def st():
        return read_stats(t.proxy.stats_port)[t.POOL]["tier:slave"]

    # retries after 100, 400, 1600 and 6400 ms, then counted as failed
    assert eventually(lambda: st()["async_retried"] == 4, timeout=12.0), st()
    assert eventually(lambda: st()["async_pending"] == 0, timeout=2.0), st()
    s = st()
    assert s["async_failed"] == 2, s   # the set, then the delete once
    assert s["async_retried"] == 4
    other = read_stats(t.proxy.stats_port)[t.POOL]["tier:l1[0]"]
    assert other["async_retried"] == 0 and other["async_failed"] == 0


def test_async_delete_retry_reaches_a_returning_server(tiers):
    """A delete lost because its server was down is resent; when the server
    is back before the last retry, the stale copy goes away."""
    t = tiers
    with t.client() as c:
        assert c.set("rb", "v") == b"STORED\r\n"
    assert eventually(lambda: held(t.slave, "rb") is not None)
    t.slave.kill()
    with t.client() as c:
        assert c.delete("rb") == b"DELETED\r\n"

    def retried():
        return read_stats(t.proxy.stats_port)[t.POOL]["tier:slave"]["async_retried"]

    # After the second retry the next one is 1600 ms away: room to bring
    # the server back with a stale copy before the delete reaches it.
    assert eventually(lambda: retried() >= 2, timeout=3.0)
    t.slave.restart()
    put(t.slave, "rb", "stale")       # as if the server had kept it
    assert eventually(lambda: held(t.slave, "rb") is None, timeout=10.0)
    assert retried() >= 3


# -------------------------------------------------------------- replica ----

def test_replica_down_writes_prompt_and_failures_counted(tiers):
    t = tiers
    t.replica.kill()
    with t.client() as c:
        for i in range(20):
            r, took = c.timed(("set rp%d 0 0 1\r\nx\r\n" % i).encode())
            assert r == b"STORED\r\n" and took <= PROMPT, (r, took)
        timed_xchg(c, b"get rp3\r\n", value_reply("rp3", "x"), PROMPT)
    assert eventually(lambda: read_stats(t.proxy.stats_port)[t.POOL][
        "tier:replicas[0]"]["async_failed"] >= 20)
    doc = read_stats(t.proxy.stats_port)[t.POOL]
    assert doc["tier:slave"]["async_failed"] == 0
    assert doc["forward_error"] == 0


def test_replica_hung_writes_prompt(memcached_factory, proxy_factory,
                                    relay_factory):
    from harness import FakeBackend
    ms = memcached_factory(1)
    fb = FakeBackend("silent")
    try:
        pool = tiered_pool(ms, replicas=[[fb]])
        proxy = proxy_factory({"beta": pool}, extra_args=["-i", "100"])
        with proxy.client("beta") as c:
            for i in range(20):
                r, took = c.timed(("set rh%d 0 0 1\r\nx\r\n" % i).encode())
                assert r == b"STORED\r\n" and took <= PROMPT, (r, took)
        assert eventually(lambda: read_stats(proxy.stats_port)["beta"][
            "tier:replicas[0]"]["async_failed"] >= 20, timeout=BOUND + 2)
    finally:
        fb.stop()


# ------------------------------------------------------ client, shutdown ----

def test_client_leaving_mid_read_leaves_proxy_serving(
        memcached_factory, proxy_factory, relay_factory):
    """A client that sends a tiered read and closes before the hung L1 has
    timed out: the read finishes without it; the proxy keeps serving."""
    ms = memcached_factory(1)
    slave = memcached_factory(1)
    l1 = memcached_factory(1)[0]
    pool = tiered_pool(ms, slave, l1=[[relay_factory(l1.port)]])
    proxy = proxy_factory({"beta": pool}, extra_args=["-i", "100"])
    put(ms, "cl", "mv")
    for _ in range(5):
        with proxy.client("beta") as c:
            c.send(b"get cl\r\ngets cl\r\nget cl nothere\r\n")
    time.sleep(TIMEOUT_MS / 1000.0 + 0.3)   # the L1 reads time out
    assert proxy.alive()
    with proxy.client("beta") as c:
        timed_xchg(c, b"gets nothere\r\n", b"END\r\n", BOUND)
        assert c.set("cl2", "x") == b"STORED\r\n"
    # the write-backs of the orphaned reads were still made
    assert eventually(lambda: held(l1, "cl") == (0, b"mv"))


def test_shutdown_with_delete_retries_pending(tiers):
    t = tiers
    t.slave.kill()
    with t.client() as c:
        for i in range(20):
            assert c.delete("sh%d" % i) == b"NOT_FOUND\r\n"
    # retries are waiting (100/400/1600/6400 ms): SIGTERM must not wait for them
    t0 = time.monotonic()
    assert t.proxy.stop(grace=3.0), "proxy needed SIGKILL"
    assert time.monotonic() - t0 < 1.5
    assert t.proxy.proc.returncode == 0, t.proxy.read_log()
