"""Asynchronous fan-out: bounded queues (async_queue_limit), drops counted,
memory bounded behind a replica that never answers; the cross-datacenter
shape (master + replicas only); the per-tier stats objects."""

import time

import pytest

import harness

from harness import xchg
from policy_util import (tiers, held, put, eventually, mc_stats,  # noqa: F401
                         tiered_pool, value_reply, read_stats, rss_kb,
                         write_settings, fence, Blackhole, settle)

pytestmark = pytest.mark.strata_only

TIER_FIELDS = ("hits", "misses", "read_errors", "writebacks", "async_sent",
               "async_failed", "async_dropped", "async_retried",
               "async_pending")


# ------------------------------------------------------------ overflow ----

@pytest.fixture
def blackhole():
    b = Blackhole()
    yield b
    b.stop()


def overflow_pool(ms, replica):
    pool = tiered_pool(ms, replicas=[[replica]])
    # the replica's requests would live 10 s before timing out: without a
    # bound on the queue, all 40 MB would wait in the proxy
    pool["replicas"][0]["timeout"] = 10000
    return pool


@pytest.mark.parametrize("limit", [2, 64])
def test_queue_overflow_drops_and_memory_stays_bounded(
        memcached_factory, proxy_factory, workdir, blackhole, limit):
    """A replica that accepts but never reads nor answers: client replies
    stay prompt, writes beyond the limit are dropped and counted, and the
    proxy's memory does not grow with what the replica cannot take."""
    ms = memcached_factory(1)
    cfg = write_settings(workdir, "async_queue_limit = %d;\n" % limit)
    pool = overflow_pool(ms, blackhole)
    proxy = proxy_factory({"beta": pool},
                          extra_args=["-C", cfg, "--workers", "1",
                                      "-i", "100"])
    value = b"v" * 4096
    batch = 500

    def fire(c, start, n):
        for b in range(start, start + n, batch):
            req = b"".join(b"set ov%d 0 0 %d\r\n%s\r\n" % (i, len(value), value)
                           for i in range(b, b + batch))
            t0 = time.monotonic()
            c.send(req)
            got = c.read_exact(len(b"STORED\r\n") * batch, timeout=5.0)
            took = time.monotonic() - t0
            assert got == b"STORED\r\n" * batch
            # far less than one replica timeout per request
            assert took < 2.0 * harness.TIME_SCALE, took

    with proxy.client("beta") as c:
        fire(c, 0, 1000)                 # warm up buffers and caches
        rss0 = rss_kb(proxy.pid)
        fire(c, 1000, 10000)             # ~40 MB of values
        rss1 = rss_kb(proxy.pid)
        xchg(c, b"get ov10999\r\n", value_reply("ov10999", value))
    st = read_stats(proxy.stats_port)["beta"]["tier:replicas[0]"]
    assert st["async_dropped"] >= 11000 - limit, st
    assert st["async_pending"] == limit, st
    assert st["async_sent"] == 0 and st["async_failed"] == 0, st
    # at most `limit` values of 4 KiB wait for the replica
    if not harness.SANITIZED:
        assert rss1 - rss0 < 4 * 1024 + limit * 8, (rss0, rss1)
    # master got every one
    assert mc_stats(ms[0])["cmd_set"] == 11000


def test_queue_limit_is_exact(memcached_factory, proxy_factory, workdir,
                              blackhole):
    """With async_queue_limit = 5 and one worker, five writes may wait for
    a replica that does not answer; the sixth and later are dropped."""
    ms = memcached_factory(1)
    cfg = write_settings(workdir, "async_queue_limit = 5;\n")
    proxy = proxy_factory({"beta": overflow_pool(ms, blackhole)},
                          extra_args=["-C", cfg, "--workers", "1",
                                      "-i", "100"])

    def st():
        return read_stats(proxy.stats_port)["beta"]["tier:replicas[0]"]

    with proxy.client("beta") as c:
        for i in range(5):
            assert c.set("q%d" % i, "x") == b"STORED\r\n"
        s = st()
        assert (s["async_pending"], s["async_dropped"]) == (5, 0), s
        for i in range(5, 8):
            assert c.set("q%d" % i, "x") == b"STORED\r\n"
        s = st()
        assert (s["async_pending"], s["async_dropped"]) == (5, 3), s
        assert c.get("q7") == b"x"


# ------------------------------------------------------------ cross-DC ----

def test_master_and_replicas_only(memcached_factory, proxy_factory):
    ms = memcached_factory(2)
    reps = memcached_factory(2)
    pool = tiered_pool(ms, replicas=[[reps[0]], [reps[1]]])
    proxy = proxy_factory({"sessions": pool}, extra_args=["-i", "100"])
    with proxy.client("sessions") as c:
        assert c.set("x1", "one", flags=3) == b"STORED\r\n"
        assert eventually(lambda: all(held(r, "x1") == (3, b"one")
                                      for r in reps))
        assert c.store("add", "x2", "two") == b"STORED\r\n"
        assert eventually(lambda: all(held(r, "x2") for r in reps))
        assert c.delete("x1") == b"DELETED\r\n"
        assert eventually(lambda: all(held(r, "x1") is None for r in reps))
        # reads never go to a replica, even for keys only they hold
        put(reps, "only-remote", "r")
        before = [mc_stats(r)["cmd_get"] for r in reps]
        for cmd in ("get", "gets", "gat 0", "gats 0"):
            vals = c.get_raw(["only-remote", "x2"], cmd=cmd, timeout=2.0)
            assert [(k, d) for (k, f, d, u) in vals] == [("x2", b"two")], cmd
        assert [mc_stats(r)["cmd_get"] for r in reps] == before
        assert all(held(m, "only-remote") is None for m in ms)
    doc = read_stats(proxy.stats_port)["sessions"]
    assert set(k for k in doc if k.startswith("tier:")) == \
        {"tier:master", "tier:replicas[0]", "tier:replicas[1]"}
    for r in ("replicas[0]", "replicas[1]"):
        st = doc["tier:" + r]
        assert st["hits"] == st["misses"] == st["read_errors"] == 0, st
        assert st["writebacks"] == 0
        assert st["async_sent"] >= 3, st


def test_cross_dc_replica_down_writes_unaffected(memcached_factory,
                                                 proxy_factory):
    ms = memcached_factory(1)
    reps = memcached_factory(2)
    pool = tiered_pool(ms, replicas=[[reps[0]], [reps[1]]])
    proxy = proxy_factory({"sessions": pool}, extra_args=["-i", "100"])
    reps[1].kill()
    with proxy.client("sessions") as c:
        for i in range(10):
            r, took = c.timed(("set cd%d 0 0 1\r\nx\r\n" % i).encode())
            assert r == b"STORED\r\n" and took < 0.3 * harness.TIME_SCALE, (r, took)
    assert eventually(lambda: held(reps[0], "cd9") is not None)
    assert eventually(lambda: read_stats(proxy.stats_port)["sessions"][
        "tier:replicas[1]"]["async_failed"] >= 10)


# --------------------------------------------------------------- stats ----

def test_tier_stats_objects(tiers):
    t = tiers
    with t.client() as c:
        assert c.set("st1", "v") == b"STORED\r\n"
        fence(t, c)
        xchg(c, b"get st1 st-miss\r\n", value_reply("st1", "v"))
    assert settle(t.proxy, t.POOL)
    doc = read_stats(t.proxy.stats_port)
    pool = doc[t.POOL]
    names = [k for k in pool if k.startswith("tier:")]
    assert names == ["tier:master", "tier:slave", "tier:l1[0]", "tier:l1[1]",
                     "tier:replicas[0]"]
    for n in names:
        assert tuple(pool[n]) == TIER_FIELDS, (n, pool[n])
        assert all(isinstance(v, int) for v in pool[n].values())
    l1 = [pool["tier:l1[0]"], pool["tier:l1[1]"]]
    assert sum(x["hits"] for x in l1) == 1
    assert sum(x["misses"] for x in l1) == 1
    assert pool["tier:master"]["misses"] == 1
    assert pool["tier:slave"]["misses"] == 1
    for n in names[1:]:
        assert pool[n]["async_sent"] >= 2
        assert pool[n]["async_pending"] == 0
    # plain pools keep nutcracker's exact shape (no tier objects)
    assert not any(k.startswith("tier:") for k in doc if k != t.POOL)

