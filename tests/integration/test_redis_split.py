"""Strata only: the master/slave read split of a Redis pool.

Two master shards, each with two real replicas (redis-server --replicaof,
synced before the tests), i.e. two slave tiers:

    split:   master: [m0 shard-a, m1 shard-b]
             slaves: [{servers: [r00 shard-a, r01 shard-b]},
                      {servers: [r10 shard-a, r11 shard-b]}]
    mread:   the same with read_from: master

Who served what is counted on the servers themselves (CONFIG RESETSTAT,
then INFO commandstats): replicated writes do show up in a replica's
commandstats, so reads (get, mget, ...) are what is counted there; a
write accepted at all proves a master took it (replicas answer READONLY).
"""

import time

import pytest

from harness import read_stats, wait_until
from redis_util import (RedisSet, have_redis, parse, proxy_conn, split_pool,
                        start_redis_proxy, where)

pytestmark = [
    pytest.mark.skipif(not have_redis(), reason="redis-server not installed"),
]

TIMEOUT_MS = 300


@pytest.fixture(scope="module")
def cluster():
    rs = RedisSet(2, replicas=2)
    yield rs
    rs.close()


# one param, so `-k strata` selects this module and `-k nutcracker` skips it
@pytest.fixture(scope="module", params=["strata"])
def proxy(request, cluster):
    p = start_redis_proxy(request.param, cluster.workdir, {
        "split": split_pool(cluster.servers, cluster.replicas,
                            timeout=TIMEOUT_MS),
        "mread": split_pool(cluster.servers, cluster.replicas,
                            timeout=TIMEOUT_MS, read_from="master")},
        name="%s-split" % request.param)
    yield p
    p.stop()


def reset(cluster):
    for s in cluster.all():
        if s.running() and not s.stopped:
            s.reset_stats()


def calls(server, *cmds):
    st = server.commandstats()
    return sum(st.get(c, 0) for c in cmds)


def write_keys(proxy, cluster, keys, pool="split"):
    """SET through the proxy; waits until every replica has them."""
    with proxy_conn(proxy, pool) as c:
        for k in keys:
            assert c.call("SET", k, "v-" + k) == b"+OK\r\n"
    placed = where(cluster.servers, keys)
    assert all(len(v) == 1 for v in placed.values()), placed
    for tier in cluster.replicas:
        for i, r in enumerate(tier):
            mine = [k for k in keys if placed[k] == [i]]
            if not r.running() or r.stopped or not mine:
                continue
            assert wait_until(lambda: set(mine) <= set(
                k for k, v in where([r], mine).items() if v), 5.0, 0.02)
    return placed


def value(k):
    return b"$%d\r\nv-%s\r\n" % (len(k) + 2, k.encode())


KEYS = ["rs:%d" % i for i in range(40)]


def test_writes_on_masters_reads_on_replicas(proxy, cluster):
    cluster.flush()
    reset(cluster)
    placed = write_keys(proxy, cluster, KEYS)
    assert {v[0] for v in placed.values()} == {0, 1}
    masters_set = [calls(m, "set") for m in cluster.servers]
    assert sum(masters_set) == len(KEYS)
    reset(cluster)
    with proxy_conn(proxy, "split") as c:
        for _ in range(5):
            for k in KEYS:
                assert c.call("GET", k) == value(k)
        got = parse(c.call("MGET", *KEYS))
        assert got == [("v-" + k).encode() for k in KEYS]
    assert [calls(m, "get", "mget") for m in cluster.servers] == [0, 0]
    per_tier = [sum(calls(r, "get") for r in tier)
                for tier in cluster.replicas]
    assert sum(per_tier) == 5 * len(KEYS)
    # a tier is picked at random per read: both serve some of 200
    assert min(per_tier) > 0, per_tier
    # each read went to a replica of the key's own shard
    for tier in cluster.replicas:
        for i, r in enumerate(tier):
            assert calls(r, "mget") <= 1
    mgets = sum(calls(r, "mget") for t in cluster.replicas for r in t)
    assert mgets >= 2      # one part per shard
    # a write through the split pool still lands on the master (a replica
    # would answer -READONLY)
    with proxy_conn(proxy, "split") as c:
        assert c.call("INCR", "rs:ctr") == b":1\r\n"
        assert c.call("DEL", KEYS[0], KEYS[1]) == b":2\r\n"


def test_read_from_master(proxy, cluster):
    cluster.flush()
    write_keys(proxy, cluster, KEYS, pool="mread")
    reset(cluster)
    with proxy_conn(proxy, "mread") as c:
        for k in KEYS:
            assert c.call("GET", k) == value(k)
        assert parse(c.call("MGET", *KEYS)) == \
            [("v-" + k).encode() for k in KEYS]
    assert sum(calls(m, "get") for m in cluster.servers) == len(KEYS)
    assert sum(calls(r, "get", "mget") for t in cluster.replicas
               for r in t) == 0


def test_replica_paused_reads_fall_back(proxy, cluster):
    cluster.flush()
    placed = write_keys(proxy, cluster, KEYS)
    # shard-b's replica in tier 0 stops answering
    r = cluster.replicas[0][1]
    r.pause()
    try:
        with proxy_conn(proxy, "split") as c:
            t0 = time.monotonic()
            for k in [k for k in KEYS if placed[k] == [1]][:10]:
                assert c.call("GET", k, timeout=3) == value(k)
            # at worst one pool timeout per read before falling back
            assert time.monotonic() - t0 < 10 * (TIMEOUT_MS / 1000.0 + 0.5)
            assert parse(c.call("MGET", *KEYS, timeout=3)) == \
                [("v-" + k).encode() for k in KEYS]
    finally:
        r.resume()


def test_all_replicas_of_a_shard_dead_reads_from_master(proxy, cluster):
    cluster.flush()
    placed = write_keys(proxy, cluster, KEYS)
    for tier in cluster.replicas:
        tier[1].kill()
    try:
        reset(cluster)
        with proxy_conn(proxy, "split") as c:
            for k in KEYS:
                assert c.call("GET", k, timeout=3) == value(k)
        n1 = sum(1 for k in KEYS if placed[k] == [1])
        assert calls(cluster.servers[1], "get") == n1
        assert calls(cluster.servers[0], "get") == 0
    finally:
        for tier in cluster.replicas:
            tier[1].restart()
            tier[1].wait_replica_synced()


def test_tier_stats(proxy, cluster):
    cluster.flush()
    write_keys(proxy, cluster, KEYS[:10])
    before = read_stats(proxy.stats_port)["split"]
    with proxy_conn(proxy, "split") as c:
        for k in KEYS[:10]:
            assert c.call("GET", k) == value(k)
    after = read_stats(proxy.stats_port)["split"]
    names = [k for k in after if k.startswith("tier:")]
    assert names == ["tier:master", "tier:slaves[0]", "tier:slaves[1]"]
    for n in names:
        assert isinstance(after[n], dict) and after[n], (n, after[n])
        assert all(isinstance(v, int) for v in after[n].values()), after[n]
    grew = [n for n in names[1:] if after[n] != before.get(n)]
    assert grew, "no slave tier counter moved after 10 reads: %r" % after
    # the other pool has the same objects, plain nutcracker fields kept
    doc = read_stats(proxy.stats_port)
    assert "tier:master" in doc["mread"]
    for f in ("client_connections", "client_err"):
        assert f in after, f
