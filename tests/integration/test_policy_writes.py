"""Tiered pool (Master-Slave-L1), writes: every row of the policy table
checked on each memcached directly.

Topology (policy_util.start_tiers): master = 2 servers, slave = 1,
l1 = 2 tiers of 1 server, replicas = 1 tier of 1 server; timeout 500 ms,
backfill_ttl 60.  Asynchronous effects are polled for (bounded); "nothing
was fanned out" is checked behind a fence (a later write on the same
connection that has landed everywhere)."""

import pytest

from harness import xchg
from policy_util import (tiers, held, put, ttl, eventually, fence,  # noqa: F401
                         value_reply, settle)

pytestmark = pytest.mark.strata_only


def on_all(servers, key, expect):
    """Every server in servers holds key as expect ((flags, data) or None),
    eventually."""
    return eventually(lambda: all(held(s, key) == expect for s in servers))


def snapshot(servers, key):
    return [held(s, key) for s in servers]


# ------------------------------------------------------------------ set ----

def test_set_reaches_every_tier(tiers):
    t = tiers
    with t.client() as c:
        assert c.set("s1", "hello", flags=42) == b"STORED\r\n"
        m = t.master_of("s1")
        assert m is not None and held(m, "s1") == (42, b"hello")
        assert on_all(t.others, "s1", (42, b"hello")), \
            snapshot(t.others, "s1")
        # the value replaces older copies everywhere
        assert c.set("s1", "world", flags=1) == b"STORED\r\n"
        assert held(m, "s1") == (1, b"world")
        assert on_all(t.others, "s1", (1, b"world")), \
            snapshot(t.others, "s1")


def test_set_keeps_exptime_on_every_tier(tiers):
    t = tiers
    with t.client() as c:
        assert c.set("s-ttl", "v", exptime=300) == b"STORED\r\n"
    assert on_all(t.others, "s-ttl", (0, b"v"))
    for s in [t.master_of("s-ttl")] + t.others:
        assert 290 <= ttl(s, "s-ttl") <= 300, s


def test_set_noreply_still_fans_out(tiers):
    t = tiers
    with t.client() as c:
        c.send(b"set s-nr 5 0 2 noreply\r\nnr\r\n")
        xchg(c, b"get s-nr\r\n", value_reply("s-nr", "nr", 5))
    assert on_all(t.others, "s-nr", (5, b"nr"))


def test_set_counts_async_sent(tiers):
    t = tiers
    with t.client() as c:
        for i in range(10):
            assert c.set("cnt%d" % i, "x") == b"STORED\r\n"
        fence(t, c)
    assert settle(t.proxy, t.POOL)
    for tier in ("slave", "l1[0]", "l1[1]", "replicas[0]"):
        st = t.tier_stats(tier)
        assert st["async_sent"] >= 11, (tier, st)
        assert st["async_failed"] == 0 and st["async_dropped"] == 0, st
    assert t.tier_stats("master")["async_sent"] == 0


# ------------------------------------------------- add / cas / replace ----

def test_add_new_key_fans_out(tiers):
    t = tiers
    with t.client() as c:
        assert c.store("add", "a1", "first", flags=3) == b"STORED\r\n"
    assert held(t.master_of("a1"), "a1") == (3, b"first")
    assert on_all(t.others, "a1", (3, b"first")), snapshot(t.others, "a1")


def test_add_existing_key_not_stored_and_nothing_fanned_out(tiers):
    t = tiers
    put(t.masters, "a2", "master-old")
    put(t.slave, "a2", "slave-old")
    before = snapshot(t.others, "a2")
    with t.client() as c:
        assert c.store("add", "a2", "new") == b"NOT_STORED\r\n"
        fence(t, c)
    assert snapshot(t.others, "a2") == before
    for m in t.masters:
        assert held(m, "a2") == (0, b"master-old")


def test_cas_with_good_unique_fans_out(tiers):
    t = tiers
    with t.client() as c:
        assert c.set("c1", "v1") == b"STORED\r\n"
        assert on_all(t.others, "c1", (0, b"v1"))
        data, unique = c.gets("c1")
        assert data == b"v1"
        assert c.store("cas", "c1", "v2", flags=9, cas=unique) \
            == b"STORED\r\n"
    assert held(t.master_of("c1"), "c1") == (9, b"v2")
    assert on_all(t.others, "c1", (9, b"v2")), snapshot(t.others, "c1")


def test_cas_with_bad_unique_exists_and_nothing_fanned_out(tiers):
    t = tiers
    with t.client() as c:
        assert c.set("c2", "v1") == b"STORED\r\n"
        assert on_all(t.others, "c2", (0, b"v1"))
        _, unique = c.gets("c2")
        assert c.store("cas", "c2", "v2", cas=unique + 12345) \
            == b"EXISTS\r\n"
        fence(t, c)
    assert held(t.master_of("c2"), "c2") == (0, b"v1")
    # Nothing is fanned out; the L1s were invalidated before master
    # answered (so a pipelined read cannot see an old L1 value).
    assert snapshot(t.not_l1, "c2") == [(0, b"v1")] * len(t.not_l1)
    assert snapshot(t.l1s, "c2") == [None] * len(t.l1s)


def test_cas_on_missing_key_not_found_and_nothing_fanned_out(tiers):
    t = tiers
    with t.client() as c:
        assert c.store("cas", "c3", "v", cas=1) == b"NOT_FOUND\r\n"
        fence(t, c)
    assert snapshot(t.everything, "c3") == [None] * len(t.everything)


def test_replace_existing_fans_out(tiers):
    t = tiers
    put(t.masters, "r1", "old")
    with t.client() as c:
        assert c.store("replace", "r1", "new", flags=4) == b"STORED\r\n"
    # the master that owns r1 took it; the other keeps what we put there
    assert sorted(held(m, "r1") for m in t.masters) == \
        [(0, b"old"), (4, b"new")]
    assert on_all(t.others, "r1", (4, b"new")), snapshot(t.others, "r1")


def test_replace_missing_not_stored_and_nothing_fanned_out(tiers):
    t = tiers
    put(t.l1s + [t.slave], "r2", "stale")   # not in master
    before = snapshot(t.not_l1, "r2")
    with t.client() as c:
        assert c.store("replace", "r2", "new") == b"NOT_STORED\r\n"
        fence(t, c)
    assert snapshot(t.not_l1, "r2") == before
    assert snapshot(t.l1s, "r2") == [None] * len(t.l1s)   # invalidated first
    assert all(held(m, "r2") is None for m in t.masters)


# --------------------------------------------------------------- delete ----

def test_delete_reaches_every_tier(tiers):
    t = tiers
    with t.client() as c:
        assert c.set("d1", "v") == b"STORED\r\n"
        assert on_all(t.others, "d1", (0, b"v"))
        assert c.delete("d1") == b"DELETED\r\n"
    assert all(held(m, "d1") is None for m in t.masters)
    assert on_all(t.others, "d1", None), snapshot(t.others, "d1")


def test_delete_of_key_missing_at_master_still_clears_other_tiers(tiers):
    """Copies left elsewhere (a lost delete, a write-back) are removed even
    when master has nothing: the client sees master's NOT_FOUND."""
    t = tiers
    put(t.others, "d2", "stale")
    with t.client() as c:
        assert c.delete("d2") == b"NOT_FOUND\r\n"
    assert on_all(t.others, "d2", None), snapshot(t.others, "d2")


def test_delete_noreply(tiers):
    t = tiers
    with t.client() as c:
        assert c.set("d3", "v") == b"STORED\r\n"
        assert on_all(t.others, "d3", (0, b"v"))
        c.send(b"delete d3 noreply\r\n")
        xchg(c, b"get d3\r\n", b"END\r\n")
    assert on_all(t.others, "d3", None)


# ------------------------------------------- incr / decr / append / prepend

def _fresh(t, c, key, value):
    assert c.set(key, value) == b"STORED\r\n"
    assert on_all(t.others, key, (0, value.encode()))


@pytest.mark.parametrize("line,start,reply,after", [
    ("incr n1 5", "10", b"15\r\n", b"15"),
    ("decr n1 3", "10", b"7\r\n", b"7"),
    ("incr n1 1", "18446744073709551615", b"0\r\n", b"0"),
])
def test_incr_decr_invalidate_other_tiers(tiers, line, start, reply, after):
    t = tiers
    with t.client() as c:
        _fresh(t, c, "n1", start)
        assert c.call(line) == reply
        # memcached pads a shorter result with spaces in place
        assert held(t.master_of("n1"), "n1")[1].rstrip() == after
        # nobody serves the old number any more
        assert on_all(t.others, "n1", None), snapshot(t.others, "n1")
        assert c.get("n1").rstrip() == after


@pytest.mark.parametrize("cmd,value,after", [
    ("append", "-end", b"mid-end"),
    ("prepend", "start-", b"start-mid"),
])
def test_append_prepend_invalidate_other_tiers(tiers, cmd, value, after):
    t = tiers
    with t.client() as c:
        _fresh(t, c, "ap1", "mid")
        assert c.store(cmd, "ap1", value) == b"STORED\r\n"
        assert held(t.master_of("ap1"), "ap1") == (0, after)
        assert on_all(t.others, "ap1", None), snapshot(t.others, "ap1")
        assert c.get("ap1") == after


@pytest.mark.parametrize("line,reply", [
    ("incr n2 1", b"NOT_FOUND\r\n"),
    ("decr n2 1", b"NOT_FOUND\r\n"),
    ("append n2 0 0 1\r\nx", b"NOT_STORED\r\n"),
    ("prepend n2 0 0 1\r\nx", b"NOT_STORED\r\n"),
    ("touch n2 100", b"NOT_FOUND\r\n"),
])
def test_failed_modify_at_master_leaves_other_tiers_alone(tiers, line, reply):
    """Slave and replicas keep what they had; L1s were invalidated before
    master answered (all but touch, which changes no value)."""
    t = tiers
    put(t.others, "n2", "7")     # master has nothing
    with t.client() as c:
        assert c.call(line) == reply
        fence(t, c)
    kept = t.others if line.startswith("touch") else t.not_l1
    assert snapshot(kept, "n2") == [(0, b"7")] * len(kept)
    for s in kept:
        assert ttl(s, "n2") == -1, s
    if not line.startswith("touch"):
        assert snapshot(t.l1s, "n2") == [None] * len(t.l1s)


def test_incr_on_non_numeric_value_client_error_no_invalidation(tiers):
    t = tiers
    with t.client() as c:
        _fresh(t, c, "n3", "abc")
        r = c.call("incr n3 1")
        assert r.startswith(b"CLIENT_ERROR "), r
        fence(t, c)
    assert snapshot(t.not_l1, "n3") == [(0, b"abc")] * len(t.not_l1)
    assert snapshot(t.l1s, "n3") == [None] * len(t.l1s)


# ---------------------------------------------------------------- touch ----

def test_touch_replayed_on_every_tier(tiers):
    t = tiers
    with t.client() as c:
        _fresh(t, c, "t1", "v")
        assert ttl(t.master_of("t1"), "t1") == -1
        assert c.call("touch t1 500") == b"TOUCHED\r\n"
    assert 490 <= ttl(t.master_of("t1"), "t1") <= 500
    assert eventually(lambda: all(
        (ttl(s, "t1") or 0) > 0 for s in t.others)), \
        [ttl(s, "t1") for s in t.others]
    for s in t.others:
        assert 490 <= ttl(s, "t1") <= 500, s
        assert held(s, "t1") == (0, b"v")


def test_write_reply_is_master_reply_even_if_other_tiers_lack_key(tiers):
    """touch: master TOUCHED; a tier without the key answers NOT_FOUND to
    the replay, which is not an error (async_failed stays 0)."""
    t = tiers
    put(t.masters, "t2", "v")
    with t.client() as c:
        assert c.call("touch t2 100") == b"TOUCHED\r\n"
        fence(t, c)
    assert settle(t.proxy, t.POOL)
    for tier in ("slave", "l1[0]", "l1[1]", "replicas[0]"):
        assert t.tier_stats(tier)["async_failed"] == 0



# ------------------------------------------------------------ flush_all ----

def test_flush_all_reaches_every_server_of_every_tier(memcached_factory,
                                                       proxy_factory):
    from policy_util import start_tiers
    t = start_tiers(memcached_factory, proxy_factory, allow_flush=True)
    put(t.everything, "fl", "v")
    with t.client() as c:
        assert c.call("flush_all") == b"OK\r\n"
    assert all(held(s, "fl") is None for s in t.everything)


def test_flush_all_refused_by_default(tiers):
    t = tiers
    put(t.everything, "fl", "v")
    with t.client() as c:
        assert c.call("flush_all").startswith(b"SERVER_ERROR ")
    assert all(held(s, "fl") == (0, b"v") for s in t.everything)
