"""Lying backends: a server whose reply does not fit the request it is
matched with (END, a number or VERSION to a set), that sends bytes when
nothing is in flight (an extra END), or that returns a key it was not
asked for.

The backend is a scripted fake (harness.ScriptedBackend): it frames the
requests the proxy sends and answers each with what the test's script
says.  Every assertion is on exact bytes: the client gets one correct
reply per request, never another request's reply."""

import pytest

from conftest import simple_pool
from harness import ScriptedBackend, xchg
from policy_util import held, put, read_stats, tiered_pool, value_reply, \
    eventually

pytestmark = pytest.mark.strata_only

INVALID = b"SERVER_ERROR backend sent an invalid response\r\n"


@pytest.fixture
def scripted():
    started = []

    def make(script):
        b = ScriptedBackend(script)
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
