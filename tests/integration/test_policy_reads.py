"""Tiered pool (Master-Slave-L1), reads: get through L1 → master → slave
with write-back, gets from master only, gat/gats master only, a 100-key
multi-get across the tiers, and a hot key absorbed by L1.

Values are placed on each memcached directly; a value put on both master
servers is found whichever of them the key routes to."""

import time

import pytest

from harness import xchg
from policy_util import (tiers, relay_factory, held, held_cas, put, ttl,  # noqa: F401
                         mc_stats, eventually, stays, tiered_pool,
                         value_reply, BACKFILL_TTL, TIMEOUT_MS, SLACK,
                         read_stats)

pytestmark = pytest.mark.strata_only


def master_reads(masters):
    """get_hits + get_misses summed over the master servers."""
    n = 0
    for m in masters:
        st = mc_stats(m)
        n += st["get_hits"] + st["get_misses"]
    return n


def stat_sum(t, tiers, field):
    doc = read_stats(t.proxy.stats_port)[t.POOL]
    return sum(doc["tier:%s" % x][field] for x in tiers)


# ------------------------------------------------------------------ get ----

def test_l1_hit_is_served_from_l1(tiers):
    t = tiers
    put(t.l1s, "h1", "from-l1", flags=11)
    put(t.masters, "h1", "from-master", flags=22)
    before = master_reads(t.masters)
    with t.client() as c:
        for _ in range(10):
            xchg(c, b"get h1\r\n", value_reply("h1", "from-l1", 11))
    assert master_reads(t.masters) == before
    assert stat_sum(t, ["l1[0]", "l1[1]"], "hits") == 10
    assert stat_sum(t, ["master"], "hits") == 0


def test_master_hit_written_back_to_the_chosen_l1_only(tiers):
    t = tiers
    put(t.masters, "h2", "mval", flags=7)
    with t.client() as c:
        xchg(c, b"get h2\r\n", value_reply("h2", "mval", 7))
    # exactly one L1 gets it, with master's flags and backfill_ttl
    assert eventually(lambda: any(held(s, "h2") for s in t.l1s))
    assert stays(lambda: sorted(held(s, "h2") is not None for s in t.l1s)
                 == [False, True])
    l1 = [s for s in t.l1s if held(s, "h2")][0]
    assert held(l1, "h2") == (7, b"mval")
    assert 0 < ttl(l1, "h2") <= BACKFILL_TTL
    # a master hit is not written to the slave or the replica
    assert held(t.slave, "h2") is None and held(t.replica, "h2") is None
    assert stat_sum(t, ["l1[0]", "l1[1]"], "writebacks") == 1
    assert stat_sum(t, ["master", "slave"], "writebacks") == 0


def test_slave_hit_written_back_to_master_and_l1(tiers):
    t = tiers
    put(t.slave, "h3", "sval", flags=5)
    with t.client() as c:
        xchg(c, b"get h3\r\n", value_reply("h3", "sval", 5))
    assert eventually(lambda: any(held(m, "h3") for m in t.masters))
    assert eventually(lambda: any(held(s, "h3") for s in t.l1s))
    m = [x for x in t.masters if held(x, "h3")]
    assert len(m) == 1 and held(m[0], "h3") == (5, b"sval")
    assert 0 < ttl(m[0], "h3") <= BACKFILL_TTL
    l1 = [s for s in t.l1s if held(s, "h3")]
    assert len(l1) == 1 and held(l1[0], "h3") == (5, b"sval")
    assert 0 < ttl(l1[0], "h3") <= BACKFILL_TTL
    assert held(t.replica, "h3") is None
    assert stat_sum(t, ["master"], "writebacks") == 1
    assert stat_sum(t, ["slave"], "hits") == 1
    # the next read is served without the slave
    before = mc_stats(t.slave)["cmd_get"]
    with t.client() as c:
        xchg(c, b"get h3\r\n", value_reply("h3", "sval", 5))
    assert mc_stats(t.slave)["cmd_get"] == before


def test_miss_everywhere_is_a_miss_and_writes_nothing(tiers):
    t = tiers
    with t.client() as c:
        xchg(c, b"get nowhere\r\n", b"END\r\n")
    assert stays(lambda: all(held(s, "nowhere") is None
                             for s in t.everything))
    assert stat_sum(t, ["master", "slave", "l1[0]", "l1[1]"],
                    "writebacks") == 0
    assert stat_sum(t, ["master"], "misses") == 1
    assert stat_sum(t, ["slave"], "misses") == 1


def test_master_hit_wins_over_slave(tiers):
    t = tiers
    put(t.masters, "h4", "new")
    put(t.slave, "h4", "old")
    with t.client() as c:
        xchg(c, b"get h4\r\n", value_reply("h4", "new"))
    assert stat_sum(t, ["slave"], "hits") + stat_sum(t, ["slave"], "misses") == 0


def test_writeback_add_never_overwrites_a_newer_l1_value(
        memcached_factory, proxy_factory, relay_factory):
    """Both L1 servers hold a newer value but hang on reads (a relay that
    swallows gets): the read times out at L1, is served by master, and the
    write-back `add` (on a fresh connection) finds the key: NOT_STORED,
    L1's value untouched."""
    ms = memcached_factory(1)
    l1_real = memcached_factory(2)
    relays = [relay_factory(s.port) for s in l1_real]
    pool = tiered_pool(ms, l1=[[relays[0]], [relays[1]]])
    proxy = proxy_factory({"beta": pool})
    put(ms, "wb", "from-master")
    put(l1_real, "wb", "newer-in-l1", flags=1)
    with proxy.client("beta") as c:
        t0 = time.monotonic()
        xchg(c, b"get wb\r\n", value_reply("wb", "from-master"),
             timeout=TIMEOUT_MS / 1000.0 + SLACK + 1)
        took = time.monotonic() - t0
    assert TIMEOUT_MS / 1000.0 * 0.9 <= took <= TIMEOUT_MS / 1000.0 + SLACK
    doc = None

    def landed():
        nonlocal doc
        doc = read_stats(proxy.stats_port)["beta"]
        return sum(doc["tier:l1[%d]" % i]["async_sent"] for i in (0, 1)) == 1

    assert eventually(landed), doc
    assert sum(doc["tier:l1[%d]" % i]["writebacks"] for i in (0, 1)) == 1
    assert sum(doc["tier:l1[%d]" % i]["read_errors"] for i in (0, 1)) == 1
    for s in l1_real:
        assert held(s, "wb") == (1, b"newer-in-l1")
        assert ttl(s, "wb") == -1


def test_writeback_add_never_overwrites_a_newer_master_value(
        memcached_factory, proxy_factory, relay_factory):
    """Master holds a newer value but hangs on reads: the get falls to the
    slave (its older value is what the client gets: master could not
    answer), and the write-back add to master leaves master's value."""
    m_real = memcached_factory(1)[0]
    relay = relay_factory(m_real.port)
    slave = memcached_factory(1)
    pool = tiered_pool([relay], slave)
    proxy = proxy_factory({"beta": pool})
    put(m_real, "wm", "master-newer")
    put(slave, "wm", "slave-older")
    with proxy.client("beta") as c:
        xchg(c, b"get wm\r\n", value_reply("wm", "slave-older"),
             timeout=TIMEOUT_MS / 1000.0 + SLACK + 1)

    def landed():
        return read_stats(proxy.stats_port)["beta"]["tier:master"][
            "async_sent"] == 1

    assert eventually(landed)
    st = read_stats(proxy.stats_port)["beta"]["tier:master"]
    assert st["writebacks"] == 1 and st["read_errors"] == 1, st
    assert held(m_real, "wm") == (0, b"master-newer")


# ----------------------------------------------------------------- gets ----

def test_gets_unique_comes_from_master(tiers):
    t = tiers
    with t.client() as c:
        assert c.set("g1", "v") == b"STORED\r\n"
        assert eventually(lambda: all(held(s, "g1") for s in t.others))
        # make the other tiers' uniques differ from master's
        put(t.others, "g1", "v")
        m = t.master_of("g1")
        data, unique = c.gets("g1")
        assert (data, unique) == held_cas(m, "g1")


def test_gets_ignores_l1(tiers):
    t = tiers
    put(t.l1s, "g2", "l1-value")
    put(t.masters, "g2", "master-value")
    with t.client() as c:
        vals = c.get_raw(["g2"], cmd="gets")
    assert [(k, d) for (k, f, d, u) in vals] == [("g2", b"master-value")]
    assert vals[0][3] in [held_cas(m, "g2")[1] for m in t.masters]


def test_gets_slave_only_key_is_added_to_master_and_unique_is_masters(tiers):
    t = tiers
    put(t.slave, "g3", "from-slave", flags=6)
    with t.client() as c:
        vals = c.get_raw(["g3"], cmd="gets")
    assert len(vals) == 1
    key, flags, data, unique = vals[0]
    assert (key, flags, data) == ("g3", 6, b"from-slave")
    m = [x for x in t.masters if held(x, "g3")]
    assert len(m) == 1
    assert held_cas(m[0], "g3") == (b"from-slave", unique)
    assert held(m[0], "g3") == (6, b"from-slave")
    assert 0 < ttl(m[0], "g3") <= BACKFILL_TTL
    # gets writes to master only
    assert stays(lambda: all(held(s, "g3") is None for s in t.l1s))
    # and the unique works for a cas through the proxy
    with t.client() as c:
        assert c.store("cas", "g3", "next", cas=unique) == b"STORED\r\n"


def test_gets_miss_everywhere(tiers):
    t = tiers
    with t.client() as c:
        xchg(c, b"gets g4\r\n", b"END\r\n")
    assert all(held(s, "g4") is None for s in t.everything)


def test_gets_multi_mixed(tiers):
    t = tiers
    put(t.masters, "gm1", "m1")
    put(t.slave, "gm2", "s2")
    with t.client() as c:
        vals = c.get_raw(["gm1", "gm2", "gm3", "gm1"], cmd="gets")
    assert [(k, d) for (k, f, d, u) in vals] == \
        [("gm1", b"m1"), ("gm2", b"s2"), ("gm1", b"m1")]
    m = [x for x in t.masters if held(x, "gm2")]
    assert len(m) == 1 and held_cas(m[0], "gm2")[1] == vals[1][3]


# ------------------------------------------------------------ gat, gats ----

def test_gat_and_gats_go_to_master_only(tiers):
    t = tiers
    put(t.l1s, "ga1", "l1-value")
    put(t.masters, "ga1", "master-value")
    put(t.slave, "ga2", "slave-only")
    with t.client() as c:
        xchg(c, b"gat 300 ga1\r\n", value_reply("ga1", "master-value"))
        vals = c.get_raw(["ga1"], cmd="gats 400")
        assert [(k, d) for (k, f, d, u) in vals] == [("ga1", b"master-value")]
        assert vals[0][3] in [held_cas(m, "ga1")[1] for m in t.masters]
        # a slave-only key is not found by gat
        xchg(c, b"gat 300 ga2\r\n", b"END\r\n")
    ttls = sorted(ttl(m, "ga1") for m in t.masters)
    assert ttls[0] == -1 and 390 <= ttls[1] <= 400, ttls   # owner touched
    for s in t.l1s:
        assert ttl(s, "ga1") == -1        # L1 expiry not changed by gat
    assert held(t.slave, "ga2") == (0, b"slave-only")
    assert all(held(m, "ga2") is None for m in t.masters)


# ----------------------------------------------------- multi-get, 100 ----

def test_get_100_keys_across_tiers_complete_and_in_order(tiers):
    t = tiers
    keys = ["mk%03d" % i for i in range(100)]
    expect = []
    for i, k in enumerate(keys):
        kind = i % 4
        if kind == 0:
            put(t.l1s, k, "l1-%d" % i, flags=i)
            put(t.masters, k, "stale-master-%d" % i)
            expect.append((k, i, b"l1-%d" % i))
        elif kind == 1:
            put(t.masters, k, "m-%d" % i, flags=i)
            expect.append((k, i, b"m-%d" % i))
        elif kind == 2:
            put(t.slave, k, "s-%d" % i + "x" * i, flags=i)
            expect.append((k, i, (b"s-%d" % i) + b"x" * i))
        # kind 3: nowhere: a miss
    with t.client() as c:
        for _ in range(3):   # again after the write-backs
            vals = c.get_raw(keys, timeout=5.0)
            assert [(k, f, d) for (k, f, d, u) in vals] == expect
    # every slave hit reached master
    for i in range(2, 100, 4):
        assert eventually(lambda: any(held(m, keys[i]) for m in t.masters))


# ------------------------------------------------------------- hot key ----

def test_hot_key_is_absorbed_by_l1(tiers):
    t = tiers
    value = b"hot-" + b"h" * 200
    put(t.masters, "hotkey", value)
    # warm both L1s through the proxy (write-backs from master hits)
    with t.client() as c:
        for _ in range(200):
            xchg(c, b"get hotkey\r\n", value_reply("hotkey", value))
            if all(held(s, "hotkey") for s in t.l1s):
                break
    assert all(held(s, "hotkey") == (0, value) for s in t.l1s)
    before = master_reads(t.masters)
    l1_before = sum(mc_stats(s)["get_hits"] for s in t.l1s)
    one = value_reply("hotkey", value)
    batch = 500
    with t.client() as c:
        for _ in range(10000 // batch):
            c.send(b"get hotkey\r\n" * batch)
            got = c.read_exact(len(one) * batch, timeout=10.0)
            assert got == one * batch
    assert master_reads(t.masters) - before <= 5
    assert sum(mc_stats(s)["get_hits"] for s in t.l1s) - l1_before == 10000


# ------------------------------------------------ read your own writes ----

def test_writes_then_reads_see_the_new_value(tiers):
    """On one connection, a read sent after the reply to a write sees the
    write: the write's fan-out (or invalidation) to the other tiers was
    queued, on the same backend connections, before the reply."""
    t = tiers
    for k in range(10):
        put(t.l1s + t.masters + [t.slave], "rw%d" % k, "old")
    last = {"rw%d" % k: b"old" for k in range(10)}
    with t.client() as c:
        for i in range(300):
            k = "rw%d" % (i % 10)
            op = (i // 10) % 4      # per key: set, append, delete, add
            if op == 0:
                v = b"v%d" % i
                assert c.set(k, v) == b"STORED\r\n"
                last[k] = v
            elif op == 1:
                assert c.store("append", k, "a") == b"STORED\r\n"
                last[k] += b"a"
            elif op == 2:
                assert c.delete(k) == b"DELETED\r\n"
                last[k] = None
            else:
                assert c.store("add", k, "ad") == b"STORED\r\n"
                last[k] = b"ad"
            assert c.get(k) == last[k], (i, k)


PIPELINED = [
    # (write, value the read after it must see)
    ("set pk 0 0 3\r\nnew\r\n", b"new"),
    ("delete pk\r\n", None),
    ("append pk 0 0 1\r\n+\r\n", b"10+"),
    ("prepend pk 0 0 1\r\n+\r\n", b"+10"),
    ("incr pk 5\r\n", b"15"),
    ("replace pk 0 0 3\r\nnew\r\n", b"new"),
]


@pytest.mark.parametrize("write,after", PIPELINED)
def test_pipelined_write_then_read_sees_the_write(tiers, write, after):
    """A client that pipelines a write and a read of the same key (without
    waiting for the write's reply), as memcached allows, reads what it
    wrote.  set and delete reach L1 before master is asked;
    add/cas/replace/incr/decr/append/prepend first delete the L1 copy,
    also before master is asked, so the read's L1 step (queued behind that
    delete) misses and master, which has the write first, answers."""
    t = tiers
    with t.client() as c:
        assert c.set("pk", "10") == b"STORED\r\n"
        assert eventually(lambda: all(held(s, "pk") for s in t.l1s))
        c.send(write.encode() + b"get pk\r\n")
        c.readline()   # the write's reply
        got = c.read_values(timeout=3.0)
    assert [d.rstrip() for (k, f, d, u) in got] == \
        ([] if after is None else [after])
