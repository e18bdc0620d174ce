"""Lying backends: a server whose reply does not fit the request it is
matched with (END, a number or VERSION to a set), that sends bytes when
nothing is in flight (an extra END), that returns a key it was not
asked for, that answers slowly, that announces an absurd value length,
that sends half a reply and then hangs or closes; and a slow slave in a
tiered pool.

The backend is a scripted fake (harness.ScriptedBackend): it frames the
requests the proxy sends and answers each with what the test's script
says.  Every assertion is on exact bytes: the client gets one correct
reply per request, never another request's reply."""

import time

import pytest

from conftest import simple_pool
from harness import TIME_SCALE, Reply, ScriptedBackend, xchg
from policy_util import held, put, read_stats, rss_kb, settle, tiered_pool, \
    value_reply, eventually, write_settings

pytestmark = pytest.mark.strata_only

INVALID = b"SERVER_ERROR backend sent an invalid response\r\n"


TIMED_OUT = b"SERVER_ERROR backend timed out\r\n"
CLOSED = b"SERVER_ERROR backend closed the connection\r\n"


@pytest.fixture
def scripted():
    started = []

    def make(script, **kw):
        b = ScriptedBackend(script, **kw)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def liar(line):
    """set lie-<kind> gets the lie; get k: a value; else STORED."""
    lies = {b"set lie-end": b"END\r\n", b"set lie-num": b"42\r\n",
            b"set lie-ver": b"VERSION 1.6.21\r\n"}
    for prefix, lie in lies.items():
        if line.startswith(prefix + b" "):
            return lie
    if line == b"get k":
        return b"VALUE k 0 2\r\nok\r\nEND\r\n"
    if line == b"get extra":
        return b"VALUE extra 0 1\r\nx\r\nEND\r\nEND\r\n"
    return b"STORED\r\n"


class Fake:
    """What simple_pool needs of a server."""

    def __init__(self, port):
        self.port = port


@pytest.mark.parametrize("kind", ["end", "num", "ver"])
def test_set_answered_with_a_wrong_kind_is_a_server_error(
        scripted, proxy_factory, kind):
    b = scripted(liar)
    proxy = proxy_factory({"alpha": simple_pool([Fake(b.port)])})
    with proxy.client() as c:
        xchg(c, b"set lie-%s 0 0 1\r\nv\r\n" % kind.encode(), INVALID)
        # the next request on that client is answered correctly: no shift
        xchg(c, b"get k\r\n", b"VALUE k 0 2\r\nok\r\nEND\r\n")
        xchg(c, b"set fine 0 0 1\r\nv\r\n", b"STORED\r\n")
    assert eventually(lambda: b.accepted == 2)   # the lie reset it


def test_extra_end_resets_and_next_get_is_not_a_false_miss(
        scripted, proxy_factory):
    b = scripted(liar)
    proxy = proxy_factory({"alpha": simple_pool([Fake(b.port)])})
    with proxy.client() as c:
        xchg(c, b"get extra\r\n", b"VALUE extra 0 1\r\nx\r\nEND\r\n")
        assert eventually(lambda: b.accepted == 1)
        for _ in range(3):
            xchg(c, b"get k\r\n", b"VALUE k 0 2\r\nok\r\nEND\r\n")
    assert b.accepted == 2   # reset once, by the END with nothing in flight
    stats = read_stats(proxy.stats_port)["alpha"]
    server = [v for n, v in stats.items() if isinstance(v, dict)][0]
    assert server["server_err"] == 1


def fenced_liar(line):
    """A memcached >= 1.6 (ScriptedBackend(mn=True)) that lies: `get lie`
    gets an extra END before its real reply, `get late` one after it;
    `get kN` the value vN; else STORED."""
    if line == b"get lie":
        return b"END\r\nVALUE lie 0 4\r\ntrue\r\nEND\r\n"
    if line == b"get late":
        return b"VALUE late 0 4\r\ntrue\r\nEND\r\nEND\r\n"
    if line.startswith(b"get k"):
        k = line[4:]
        return value_reply(k.decode(), "v" + k[1:].decode())
    return b"STORED\r\n"


def fenced_args(workdir, mode="true"):
    """Proxy flags for fence_replies on (a -C settings file); mode is
    true (per batch), "request" or "batch"."""
    value = mode if mode == "true" else '"%s"' % mode
    return ["--workers", "1", "-C",
            write_settings(workdir, "fence_replies = %s;\n" % value,
                           name="fence.cfg")]


@pytest.mark.parametrize("mode", ["request", "batch"])
def test_fenced_extra_end_is_a_server_error_never_a_miss(
        scripted, proxy_factory, workdir, mode):
    """Issue 8: a server that sends an extra END while a get waits made
    that get a false miss (position is all the text protocol matches
    by). A server that knows the meta no-op gets "mn" after every
    request (or after every written batch), and the extra END stands
    where an MN is due: the get gets SERVER_ERROR, never END and never
    another key's value; the connection is reset and later requests are
    answered on a new one. Per batch, the lie fails every request of its
    batch (their replies were held until the batch's MN)."""
    b = scripted(fenced_liar, mn=True)
    proxy = proxy_factory({"alpha": simple_pool([Fake(b.port)])},
                          extra_args=fenced_args(workdir, mode))
    with proxy.client() as c:
        xchg(c, b"get k1\r\n", value_reply("k1", "v1"))
        xchg(c, b"get lie\r\n", INVALID)
        xchg(c, b"get k2\r\n", value_reply("k2", "v2"))
        xchg(c, b"get late\r\n", INVALID)
        xchg(c, b"set fine 0 0 1\r\nv\r\n", b"STORED\r\n")
        # pipelined behind the lie on the same connection: each reply is
        # the right one or SERVER_ERROR, never a miss or a shifted value
        c.send(b"get k3\r\nget lie\r\nget k4\r\nget k5\r\n")
        got = [c.read_reply() for _ in range(4)]
        if mode == "request":
            assert got[0] == value_reply("k3", "v3")
        else:
            assert got[0].startswith(b"SERVER_ERROR backend "), got[0]
        assert got[1].startswith(b"SERVER_ERROR backend "), got[1]
        for k, r in zip(("k4", "k5"), got[2:]):
            assert r == value_reply(k, "v" + k[1:]) or \
                r.startswith(b"SERVER_ERROR backend "), (k, r)
        xchg(c, b"get k6\r\n", value_reply("k6", "v6"))
    assert b.accepted == 4   # one reset per lie
    assert b.fences >= 10    # the probes and a fence after each request
    assert server_stats(proxy, "alpha")[0]["server_err"] == 3


def test_unfenced_server_gets_no_fences(scripted, proxy_factory, workdir):
    """A server that answers the probe with ERROR (memcached < 1.6) sees
    one "mn" per connection and then only the requests."""
    b = scripted(fenced_liar)
    proxy = proxy_factory({"alpha": simple_pool([Fake(b.port)])},
                          extra_args=fenced_args(workdir))
    with proxy.client() as c:
        for i in range(5):
            xchg(c, b"get k%d\r\n" % i, value_reply("k%d" % i, "v%d" % i))
    assert b.accepted == 1 and b.fences == 1
    assert b.lines == [b"get k%d" % i for i in range(5)]


def wrong_key(line):
    """An L1 that answers every get with a key it was not asked for and
    takes every write-back."""
    if line.startswith(b"get "):
        return b"VALUE wrong 0 5\r\nlying\r\nEND\r\n"
    return b"STORED\r\n"


def test_l1_returning_a_wrong_key_falls_through_to_master(
        scripted, memcached_factory, proxy_factory):
    l1 = scripted(wrong_key)
    master, slave = memcached_factory(2)
    proxy = proxy_factory({"beta": tiered_pool([master], [slave],
                                                [[Fake(l1.port)]])},
                          extra_args=["-i", "100"])
    put(master, "lk", "from-master", flags=3)
    put(slave, "lk", "from-slave", flags=4)
    with proxy.client("beta") as c:
        xchg(c, b"get lk\r\n", value_reply("lk", "from-master", 3))
        xchg(c, b"get lk\r\n", value_reply("lk", "from-master", 3))
    assert held(master, "lk") == (3, b"from-master")
    doc = read_stats(proxy.stats_port)["beta"]
    assert eventually(
        lambda: read_stats(proxy.stats_port)["beta"]["tier:l1[0]"]
        ["read_errors"] == 2)
    assert doc["tier:master"]["hits"] == 2
    assert doc["tier:slave"]["hits"] == 0


def server_stats(proxy, pool):
    """The per-server dicts of a pool in the JSON stats."""
    doc = read_stats(proxy.stats_port)[pool]
    return [v for n, v in doc.items()
            if isinstance(v, dict) and not n.startswith("tier:")]


# ------------------------------------------------------ slow replies ----

def slow(delay):
    """Answers `get slow` after `delay` seconds, `get kN` after 0.2 s
    (with the value vN), anything else at once."""
    def script(line):
        if line == b"get slow":
            return Reply(b"END\r\n", delay=delay)
        if line.startswith(b"get k"):
            k = line[4:]
            v = b"v" + k[1:]
            return Reply(b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (k, len(v), v),
                         delay=0.2)
        return b"STORED\r\n"
    return script


def test_slow_replies_within_timeout_are_all_answered_in_order(
        scripted, proxy_factory):
    """Each get is answered 0.2 s late, the timeout is 1 s: pipelined or
    one at a time, every reply is right and in order, nothing resets."""
    b = scripted(slow(0))
    proxy = proxy_factory({"alpha": simple_pool([Fake(b.port)],
                                                timeout=1000)})
    with proxy.client() as c:
        for i in range(3):
            xchg(c, b"get k%d\r\n" % i, value_reply("k%d" % i, "v%d" % i))
        want = b"".join(value_reply("k%d" % i, "v%d" % i) for i in range(4))
        want += b"STORED\r\n"
        xchg(c, b"get k0\r\nget k1\r\nget k2\r\nget k3\r\n"
                b"set x 0 0 1\r\nx\r\n", want)
    assert b.accepted == 1
    assert server_stats(proxy, "alpha")[0]["server_timedout"] == 0


def test_slow_reply_past_timeout_fails_within_timeout_then_recovers(
        scripted, proxy_factory):
    """A get the server answers 3 s late, the timeout is 0.5 s: the client
    gets SERVER_ERROR at 0.5 s, the connection is reset, and later
    requests (on a new connection) are answered."""
    b = scripted(slow(3.0))
    proxy = proxy_factory({"alpha": simple_pool([Fake(b.port)],
                                                timeout=500)})
    with proxy.client() as c:
        r, dt = c.timed(b"get slow\r\n", timeout=3)
        assert r == TIMED_OUT
        assert 0.45 <= dt < 1.2 * TIME_SCALE, dt
        xchg(c, b"get k1\r\n", value_reply("k1", "v1"))
        xchg(c, b"set x 0 0 1\r\nx\r\n", b"STORED\r\n")
    assert b.accepted == 2
    assert server_stats(proxy, "alpha")[0]["server_timedout"] == 1


# ---------------------------------------------------- absurd lengths ----

ABSURD = {
    "2^32": b"4294967296",
    "2^64": b"18446744073709551616",
    "negative": b"-1",
    "over_max_value": b"1048577",      # max_value_size is 1 MB
    "not_a_number": b"12x",
}


def absurd(line):
    """get abs-NAME: a VALUE line with that length (and a few bytes);
    get big: a whole 100 KB value; get k: a value; else STORED."""
    if line.startswith(b"get abs-"):
        key = line[4:]
        return b"VALUE %s 0 %s\r\nabc" % (key, ABSURD[key[4:].decode()])
    if line == b"get big":
        return value_reply("big", b"b" * 100000)
    if line == b"get k":
        return b"VALUE k 0 2\r\nok\r\nEND\r\n"
    return b"STORED\r\n"


def test_absurd_value_lengths_fail_one_request_each(
        scripted, proxy_factory, workdir):
    """A VALUE line whose length overflows 32 or 64 bits, is negative, is
    no number or exceeds max_value_size is an invalid reply: exactly one
    SERVER_ERROR for that request, the connection reset, the next request
    answered, no crash, nothing held. A whole value larger than
    max_reply_size is SERVER_ERROR reply too large."""
    b = scripted(absurd)
    cfg = write_settings(workdir, "max_reply_size = 65536;\n")
    proxy = proxy_factory({"alpha": simple_pool([Fake(b.port)])},
                          extra_args=["-C", cfg, "--workers", "1"])
    rss0 = rss_kb(proxy.pid)
    with proxy.client() as c:
        for _ in range(20):
            for name in sorted(ABSURD):
                xchg(c, b"get abs-%s\r\n" % name.encode(), INVALID)
                xchg(c, b"get k\r\n", b"VALUE k 0 2\r\nok\r\nEND\r\n")
        xchg(c, b"get big\r\n", b"SERVER_ERROR reply too large\r\n")
        xchg(c, b"get k\r\n", b"VALUE k 0 2\r\nok\r\nEND\r\n")
    assert proxy.alive()
    assert b.accepted == 20 * len(ABSURD) + 1
    assert rss_kb(proxy.pid) - rss0 < 20 * 1024


# ------------------------------------------------------ half replies ----

def half(line):
    """get hang: half a value, then nothing; get cut: half a value, then
    the connection is closed; get k: a value; else STORED."""
    if line == b"get hang":
        return Reply(b"VALUE hang 0 10\r\nabc", hang=True)
    if line == b"get cut":
        return Reply(b"VALUE cut 0 10\r\nabc", close=True)
    if line == b"get k":
        return b"VALUE k 0 2\r\nok\r\nEND\r\n"
    return b"STORED\r\n"


def test_half_a_value_then_nothing_times_out(scripted, proxy_factory):
    """Half a value and then silence: the request and the one pipelined
    behind it get SERVER_ERROR after the timeout; the next is answered."""
    b = scripted(half)
    proxy = proxy_factory({"alpha": simple_pool([Fake(b.port)],
                                                timeout=500)})
    with proxy.client() as c:
        r, dt = c.timed(b"get hang\r\nget k\r\n", timeout=3)
        assert r == TIMED_OUT
        assert dt < 1.2 * TIME_SCALE, dt
        assert c.read_expected(TIMED_OUT) == TIMED_OUT
        xchg(c, b"get k\r\n", b"VALUE k 0 2\r\nok\r\nEND\r\n")
    assert b.accepted == 2


def test_close_mid_value_fails_what_is_in_flight(scripted, proxy_factory):
    """A pipelined get answered whole, then one cut mid-value by a close,
    and a set behind it: the first gets its value, the other two one
    SERVER_ERROR each, and the next requests go to a new connection."""
    b = scripted(half)
    proxy = proxy_factory({"alpha": simple_pool([Fake(b.port)])})
    with proxy.client() as c:
        xchg(c, b"get k\r\nget cut\r\nset x 0 0 1\r\nx\r\n",
             b"VALUE k 0 2\r\nok\r\nEND\r\n" + CLOSED + CLOSED)
        xchg(c, b"get k\r\n", b"VALUE k 0 2\r\nok\r\nEND\r\n")
        xchg(c, b"set x 0 0 1\r\nx\r\n", b"STORED\r\n")
    assert b.accepted == 2
    assert server_stats(proxy, "alpha")[0]["server_eof"] == 1


# ---------------------------------------------------- a slow slave ----

SLOW_SETS = 60
SLOW_VALUE = b"s" * 500000


def slow_slave(line):
    """Takes every write; has `sk`."""
    if line == b"get sk":
        return b"VALUE sk 5 10\r\nfrom-slave\r\nEND\r\n"
    if line.startswith(b"get "):
        return b"END\r\n"
    return b"STORED\r\n"


def test_slow_slave_does_not_time_out_writes_or_reads(
        scripted, memcached_factory, proxy_factory):
    """A slave that reads at a few MB/s is sent 30 MB of asynchronous
    sets, seconds of work, while its timeout is 2.5 s. The time a write
    waits in the proxy's output is no reply wait: as long as the slave
    keeps taking bytes, nothing times out. A read that misses master
    reaches the slave behind those writes and gets its value. (Before,
    each write's clock ran from when it was queued: the slave's
    connection timed out, every queued write failed, and the read was a
    false miss.)"""
    (master,) = memcached_factory(1)
    slave = scripted(slow_slave, rcvbuf=65536, read_size=65536,
                     read_pause=0.01)
    proxy = proxy_factory({"beta": tiered_pool([master], [Fake(slave.port)],
                                               timeout=2500)},
                          extra_args=["--workers", "1"])
    with proxy.client("beta") as c:
        for i in range(SLOW_SETS):
            xchg(c, b"set w%d 0 0 %d\r\n%s\r\n" % (i, len(SLOW_VALUE),
                                                   SLOW_VALUE),
                 b"STORED\r\n")
        t0 = time.monotonic()
        xchg(c, b"get sk\r\n", value_reply("sk", "from-slave", 5),
             timeout=30)
        waited = time.monotonic() - t0
    assert settle(proxy, "beta", timeout=30)
    doc = read_stats(proxy.stats_port)["beta"]
    assert doc["tier:slave"]["async_sent"] == SLOW_SETS
    assert doc["tier:slave"]["async_failed"] == 0
    assert waited > 2.5   # it did wait behind the writes, past a timeout
    assert slave.accepted == 1


def test_fences_are_off_by_default(scripted, proxy_factory):
    """Without fence_replies a server that knows "mn" never sees one:
    replies are matched by position (docs/reliability.md says what that
    leaves open and what fences cost)."""
    b = scripted(fenced_liar, mn=True)
    proxy = proxy_factory({"alpha": simple_pool([Fake(b.port)])},
                          extra_args=["--workers", "1"])
    with proxy.client() as c:
        for i in range(5):
            xchg(c, b"get k%d\r\n" % i, value_reply("k%d" % i, "v%d" % i))
    assert b.accepted == 1 and b.fences == 0
    assert b.lines == [b"get k%d" % i for i in range(5)]
