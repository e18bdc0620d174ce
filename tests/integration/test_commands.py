"""Every memcached text command through the proxy, with exact reply bytes.

The proxy sits in front of two memcached servers (fixture `pool2`); the
`direct` helpers read what a memcached server actually holds.
"""

import os
import re
import time

import pytest

from harness import xchg, assert_silent, key_owner, backend_command_counts
from conftest import simple_pool


def owner_client(servers, key):
    """Direct client to the memcached server that holds key (or None)."""
    owner = key_owner(servers, [key])
    if key not in owner:
        return None
    return servers[owner[key]].client()


def backend_value(servers, key):
    """(data, flags) of key as stored on whichever server holds it."""
    for s in servers:
        with s.client() as d:
            v = d.get_raw([key])
            if v:
                return v[0][2], v[0][1]
    return None


def backend_ttl(servers, key):
    for s in servers:
        with s.client() as d:
            t = d.meta_ttl(key)
            if t is not None:
                return t
    return None


# ------------------------------------------------------------ retrieval ----

def test_set_then_get_hit(client, pool2):
    _, servers = pool2
    xchg(client, b"set k1 0 0 5\r\nhello\r\n", b"STORED\r\n")
    xchg(client, b"get k1\r\n", b"VALUE k1 0 5\r\nhello\r\nEND\r\n")
    assert backend_value(servers, "k1") == (b"hello", 0)
    assert_silent(client)


def test_get_miss(client):
    xchg(client, b"get nosuchkey\r\n", b"END\r\n")


def test_flags_kept(client):
    xchg(client, b"set fl 4294967295 0 2\r\nhi\r\n", b"STORED\r\n")
    xchg(client, b"get fl\r\n", b"VALUE fl 4294967295 2\r\nhi\r\nEND\r\n")
    xchg(client, b"set fl 12345 0 2\r\nho\r\n", b"STORED\r\n")
    xchg(client, b"get fl\r\n", b"VALUE fl 12345 2\r\nho\r\nEND\r\n")


MULTI_KEYS = ["mk%02d" % i for i in range(24)]
MULTI_STORED = MULTI_KEYS[::2]


def _set_multi(client, servers):
    for k in MULTI_STORED:
        xchg(client, "set %s 7 0 %d\r\nv-%s\r\n" % (k, len(k) + 2, k),
             b"STORED\r\n")
    # the keys are spread over both servers
    assert len(set(key_owner(servers, MULTI_STORED).values())) == 2


def _value_block(k):
    return b"VALUE %s 7 %d\r\nv-%s\r\n" % (k.encode(), len(k) + 2, k.encode())


def test_get_multi_hits_and_misses(client, pool2):
    """Content of a multi-server multi-get (any order; nutcracker 0.5.0
    groups values by server)."""
    _, servers = pool2
    _set_multi(client, servers)
    client.send(("get %s\r\n" % " ".join(MULTI_KEYS)).encode())
    got = client.read_values()
    assert sorted(got) == sorted((k, 7, b"v-" + k.encode(), None)
                                 for k in MULTI_STORED)
    xchg(client, b"get mk01 mk03\r\n", b"END\r\n")
    xchg(client, b"get mk00 mk01\r\n", _value_block("mk00") + b"END\r\n")


@pytest.mark.strata_only  # nutcracker does not keep request order
def test_get_multi_in_request_order(client, pool2):
    _, servers = pool2
    _set_multi(client, servers)
    want = b"".join(_value_block(k) for k in MULTI_STORED) + b"END\r\n"
    xchg(client, ("get %s\r\n" % " ".join(MULTI_KEYS)).encode(), want)
    rev = list(reversed(MULTI_KEYS))
    want = b"".join(_value_block(k) for k in rev if k in MULTI_STORED) \
        + b"END\r\n"
    xchg(client, ("get %s\r\n" % " ".join(rev)).encode(), want)
    # repeated keys are answered each time, in order
    xchg(client, b"get mk00 mk01 mk02 mk00\r\n",
         _value_block("mk00") + _value_block("mk02") + _value_block("mk00")
         + b"END\r\n")


def test_gets_hit_miss_multi(client, pool2):
    _, servers = pool2
    xchg(client, b"set g1 3 0 2\r\naa\r\n", b"STORED\r\n")
    xchg(client, b"set g2 4 0 2\r\nbb\r\n", b"STORED\r\n")
    # the cas unique must be the one the owning server reports
    uniq = {}
    for k in ("g1", "g2"):
        with owner_client(servers, k) as d:
            uniq[k] = d.gets(k)[1]
    xchg(client, b"gets g1\r\n",
         b"VALUE g1 3 2 %d\r\naa\r\nEND\r\n" % uniq["g1"])
    xchg(client, b"gets nope\r\n", b"END\r\n")
    client.send(b"gets g2 nope g1\r\n")
    assert sorted(client.read_values()) == [("g1", 3, b"aa", uniq["g1"]),
                                            ("g2", 4, b"bb", uniq["g2"])]


@pytest.mark.strata_only  # nutcracker 0.5.0 has no gat/gats (closes)
def test_gat(client, pool2):
    _, servers = pool2
    xchg(client, b"set t1 5 0 3\r\nabc\r\n", b"STORED\r\n")
    assert backend_ttl(servers, "t1") == -1
    xchg(client, b"gat 100 t1\r\n", b"VALUE t1 5 3\r\nabc\r\nEND\r\n")
    ttl = backend_ttl(servers, "t1")
    assert ttl is not None and 90 <= ttl <= 100
    xchg(client, b"gat 100 nope\r\n", b"END\r\n")
    xchg(client, b"set t2 6 0 1\r\nz\r\n", b"STORED\r\n")
    xchg(client, b"gat 200 t2 nope t1\r\n",
         b"VALUE t2 6 1\r\nz\r\nVALUE t1 5 3\r\nabc\r\nEND\r\n")
    assert 190 <= backend_ttl(servers, "t2") <= 200
    assert 190 <= backend_ttl(servers, "t1") <= 200


@pytest.mark.strata_only  # nutcracker 0.5.0 has no gat/gats (closes)
def test_gats(client, pool2):
    _, servers = pool2
    xchg(client, b"set t3 9 0 4\r\nwxyz\r\n", b"STORED\r\n")
    with owner_client(servers, "t3") as d:
        uniq = d.gets("t3")[1]
    xchg(client, b"gats 300 t3\r\n",
         b"VALUE t3 9 4 %d\r\nwxyz\r\nEND\r\n" % uniq)
    assert 290 <= backend_ttl(servers, "t3") <= 300
    xchg(client, b"gats 300 nope\r\n", b"END\r\n")


# -------------------------------------------------------------- storage ----

def test_add(client, pool2):
    _, servers = pool2
    xchg(client, b"add a1 0 0 3\r\nnew\r\n", b"STORED\r\n")
    xchg(client, b"add a1 0 0 3\r\nold\r\n", b"NOT_STORED\r\n")
    xchg(client, b"get a1\r\n", b"VALUE a1 0 3\r\nnew\r\nEND\r\n")
    assert backend_value(servers, "a1") == (b"new", 0)


def test_replace(client, pool2):
    _, servers = pool2
    xchg(client, b"replace r1 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
    assert backend_value(servers, "r1") is None
    xchg(client, b"set r1 0 0 1\r\na\r\n", b"STORED\r\n")
    xchg(client, b"replace r1 2 0 2\r\nbb\r\n", b"STORED\r\n")
    xchg(client, b"get r1\r\n", b"VALUE r1 2 2\r\nbb\r\nEND\r\n")


def test_append_prepend(client, pool2):
    _, servers = pool2
    xchg(client, b"append ap 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
    xchg(client, b"prepend ap 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
    xchg(client, b"set ap 3 0 4\r\nbase\r\n", b"STORED\r\n")
    xchg(client, b"append ap 0 0 4\r\n-app\r\n", b"STORED\r\n")
    xchg(client, b"prepend ap 0 0 4\r\npre-\r\n", b"STORED\r\n")
    xchg(client, b"get ap\r\n", b"VALUE ap 3 12\r\npre-base-app\r\nEND\r\n")
    assert backend_value(servers, "ap") == (b"pre-base-app", 3)


def test_cas(client, pool2):
    _, servers = pool2
    xchg(client, b"cas c1 0 0 1 12345\r\nx\r\n", b"NOT_FOUND\r\n")
    xchg(client, b"set c1 0 0 2\r\nv1\r\n", b"STORED\r\n")
    client.send(b"gets c1\r\n")
    vals = client.read_values()
    assert len(vals) == 1 and vals[0][:3] == ("c1", 0, b"v1")
    uniq = vals[0][3]
    assert uniq is not None
    xchg(client, b"cas c1 0 0 2 %d\r\nv2\r\n" % (uniq + 1000), b"EXISTS\r\n")
    xchg(client, b"cas c1 1 0 2 %d\r\nv3\r\n" % uniq, b"STORED\r\n")
    xchg(client, b"cas c1 0 0 2 %d\r\nv4\r\n" % uniq, b"EXISTS\r\n")
    xchg(client, b"get c1\r\n", b"VALUE c1 1 2\r\nv3\r\nEND\r\n")
    assert backend_value(servers, "c1") == (b"v3", 1)


def test_delete(client, pool2):
    _, servers = pool2
    xchg(client, b"set d1 0 0 1\r\nx\r\n", b"STORED\r\n")
    xchg(client, b"delete d1\r\n", b"DELETED\r\n")
    assert backend_value(servers, "d1") is None
    xchg(client, b"delete d1\r\n", b"NOT_FOUND\r\n")
    xchg(client, b"get d1\r\n", b"END\r\n")


def test_incr_decr(client, pool2):
    _, servers = pool2
    xchg(client, b"set n1 0 0 2\r\n10\r\n", b"STORED\r\n")
    xchg(client, b"incr n1 5\r\n", b"15\r\n")
    xchg(client, b"decr n1 3\r\n", b"12\r\n")
    xchg(client, b"decr n1 100\r\n", b"0\r\n")  # decr floors at 0
    xchg(client, b"incr n1 18446744073709551615\r\n",
         b"18446744073709551615\r\n")
    xchg(client, b"incr n1 1\r\n", b"0\r\n")  # 64-bit wrap
    assert backend_value(servers, "n1")[0].strip() == b"0"
    xchg(client, b"incr nokey 1\r\n", b"NOT_FOUND\r\n")
    xchg(client, b"decr nokey 1\r\n", b"NOT_FOUND\r\n")
    xchg(client, b"set s1 0 0 3\r\nabc\r\n", b"STORED\r\n")
    xchg(client, b"incr s1 1\r\n",
         b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
    xchg(client, b"decr s1 1\r\n",
         b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
    # the connection is still fine after the error
    xchg(client, b"get s1\r\n", b"VALUE s1 0 3\r\nabc\r\nEND\r\n")


def test_touch(client, pool2):
    _, servers = pool2
    xchg(client, b"touch tt 100\r\n", b"NOT_FOUND\r\n")
    xchg(client, b"set tt 0 0 1\r\nx\r\n", b"STORED\r\n")
    xchg(client, b"touch tt 100\r\n", b"TOUCHED\r\n")
    ttl = backend_ttl(servers, "tt")
    assert ttl is not None and 90 <= ttl <= 100
    xchg(client, b"get tt\r\n", b"VALUE tt 0 1\r\nx\r\nEND\r\n")


def test_key_of_250_bytes_is_fine(client, pool2):
    _, servers = pool2
    key = b"k" * 250
    xchg(client, b"set " + key + b" 0 0 2\r\nok\r\n", b"STORED\r\n")
    xchg(client, b"get " + key + b"\r\n",
         b"VALUE " + key + b" 0 2\r\nok\r\nEND\r\n")
    assert backend_value(servers, key.decode()) == (b"ok", 0)


# -------------------------------------------------------------- noreply ----

# (setup requests with their replies, noreply request, check request, reply)
NOREPLY_CASES = {
    "set": ([], b"set nr 0 0 3 noreply\r\nabc\r\n",
            b"get nr\r\n", b"VALUE nr 0 3\r\nabc\r\nEND\r\n"),
    "add": ([], b"add nr 1 0 3 noreply\r\nabc\r\n",
            b"get nr\r\n", b"VALUE nr 1 3\r\nabc\r\nEND\r\n"),
    "add_not_stored": ([(b"set nr 0 0 3\r\nold\r\n", b"STORED\r\n")],
                       b"add nr 0 0 3 noreply\r\nnew\r\n",
                       b"get nr\r\n", b"VALUE nr 0 3\r\nold\r\nEND\r\n"),
    "replace": ([(b"set nr 0 0 3\r\nold\r\n", b"STORED\r\n")],
                b"replace nr 2 0 3 noreply\r\nnew\r\n",
                b"get nr\r\n", b"VALUE nr 2 3\r\nnew\r\nEND\r\n"),
    "append": ([(b"set nr 0 0 3\r\nold\r\n", b"STORED\r\n")],
               b"append nr 0 0 2 noreply\r\n++\r\n",
               b"get nr\r\n", b"VALUE nr 0 5\r\nold++\r\nEND\r\n"),
    "prepend": ([(b"set nr 0 0 3\r\nold\r\n", b"STORED\r\n")],
                b"prepend nr 0 0 2 noreply\r\n--\r\n",
                b"get nr\r\n", b"VALUE nr 0 5\r\n--old\r\nEND\r\n"),
    "cas": ([(b"set nr 0 0 3\r\nold\r\n", b"STORED\r\n")],
            b"cas nr 0 0 3 {cas} noreply\r\nnew\r\n",
            b"get nr\r\n", b"VALUE nr 0 3\r\nnew\r\nEND\r\n"),
    "delete": ([(b"set nr 0 0 3\r\nold\r\n", b"STORED\r\n")],
               b"delete nr noreply\r\n", b"get nr\r\n", b"END\r\n"),
    "delete_not_found": ([], b"delete nr noreply\r\n",
                         b"get nr\r\n", b"END\r\n"),
    "incr": ([(b"set nr 0 0 2\r\n10\r\n", b"STORED\r\n")],
             b"incr nr 5 noreply\r\n",
             b"get nr\r\n", b"VALUE nr 0 2\r\n15\r\nEND\r\n"),
    "decr": ([(b"set nr 0 0 2\r\n10\r\n", b"STORED\r\n")],
             b"decr nr 3 noreply\r\n",
             b"get nr\r\n", b"VALUE nr 0 2\r\n7 \r\nEND\r\n"),
    "incr_not_found": ([], b"incr nr 5 noreply\r\n", b"get nr\r\n",
                       b"END\r\n"),
    "touch": ([(b"set nr 0 0 3\r\nold\r\n", b"STORED\r\n")],
              b"touch nr 500 noreply\r\n",
              b"get nr\r\n", b"VALUE nr 0 3\r\nold\r\nEND\r\n"),
}


@pytest.mark.parametrize("case", sorted(NOREPLY_CASES))
def test_noreply(case, client, pool2):
    _, servers = pool2
    setup, req, check, want = NOREPLY_CASES[case]
    for r, rep in setup:
        xchg(client, r, rep)
    if b"{cas}" in req:
        client.send(b"gets nr\r\n")
        uniq = client.read_values()[0][3]
        req = req.replace(b"{cas}", str(uniq).encode())
    # the noreply command and the check go out in one write: the first
    # bytes back must be the check's reply
    xchg(client, req + check, want)
    assert_silent(client)
    if case == "touch":
        assert 490 <= backend_ttl(servers, "nr") <= 500


def test_noreply_many_in_a_row(client):
    req = b"".join(b"set q%d 0 0 1 noreply\r\n%d\r\n" % (i, i % 10)
                   for i in range(50))
    want = b"".join(b"VALUE q%d 0 1\r\n%d\r\n" % (i, i % 10)
                    for i in range(50)) + b"END\r\n"
    xchg(client, req + b"get " + b" ".join(b"q%d" % i for i in range(50))
         + b"\r\n", want)


# ------------------------------------------------------ misc commands ----

def test_version(client):
    client.send(b"version\r\n")
    line = client.readline()
    assert re.match(rb"^VERSION [^\s]+\r\n$", line), line
    xchg(client, b"get x\r\n", b"END\r\n")


@pytest.mark.strata_only  # nutcracker 0.5.0 does not know verbosity (closes)
def test_verbosity(client):
    xchg(client, b"verbosity 1\r\n", b"OK\r\n")
    client.send(b"verbosity 1 noreply\r\nversion\r\n")
    line = client.readline()
    assert line.startswith(b"VERSION "), line


def test_quit_closes_after_earlier_replies(client):
    xchg(client, b"set qk 0 0 1\r\nx\r\n", b"STORED\r\n")
    client.send(b"get qk\r\nquit\r\n")
    assert client.read_expected(b"VALUE qk 0 1\r\nx\r\nEND\r\n") == \
        b"VALUE qk 0 1\r\nx\r\nEND\r\n"
    data, closed = client.read_available(2.0)
    assert data == b"" and closed


def test_quit_alone(pool2):
    proxy, _ = pool2
    with proxy.client() as c:
        c.send(b"quit\r\n")
        data, closed = c.read_available(2.0)
        assert data == b"" and closed


@pytest.mark.strata_only  # nutcracker closes on unknown commands
def test_unknown_command(pool2):
    proxy, _ = pool2
    with proxy.client() as c:
        xchg(c, b"bogus\r\n", b"ERROR\r\n")
        xchg(c, b"bogus with args 1 2 3\r\nget x\r\n", b"ERROR\r\nEND\r\n")
        xchg(c, b"set u 0 0 1\r\nx\r\n", b"STORED\r\n")


# ------------------------------------------------------------ flush_all ----

def _fill_both(client, servers, n=20):
    keys = ["fk%d" % i for i in range(n)]
    for k in keys:
        xchg(client, "set %s 0 0 1\r\nx\r\n" % k, b"STORED\r\n")
    owner = key_owner(servers, keys)
    assert len(owner) == n and len(set(owner.values())) == len(servers)
    return keys


@pytest.mark.strata_only  # nutcracker closes the connection on flush_all
@pytest.mark.parametrize("cmd", [b"flush_all\r\n", b"flush_all 0\r\n"])
def test_flush_all_refused_by_default(cmd, client, pool2):
    _, servers = pool2
    keys = _fill_both(client, servers)
    client.send(cmd)
    line = client.readline()
    assert line.startswith(b"SERVER_ERROR ") or \
        line.startswith(b"CLIENT_ERROR "), line
    # nothing was flushed, and the connection is still usable
    assert len(key_owner(servers, keys)) == len(keys)
    xchg(client, b"get fk0\r\n", b"VALUE fk0 0 1\r\nx\r\nEND\r\n")


@pytest.mark.strata_only  # allow_flush is a strata pool key
def test_flush_all_allowed(memcached_factory, proxy_factory):
    servers = memcached_factory(2)
    proxy = proxy_factory({"alpha": simple_pool(servers, allow_flush=True)})
    with proxy.client() as c:
        keys = _fill_both(c, servers)
        xchg(c, b"flush_all\r\n", b"OK\r\n")
        assert key_owner(servers, keys) == {}
        xchg(c, b"get fk0 fk1\r\n", b"END\r\n")
        # noreply form: the next reply is the get's
        _fill_both(c, servers)
        xchg(c, b"flush_all noreply\r\nget fk0\r\n", b"END\r\n")
        assert key_owner(servers, keys) == {}


# ------------------------------------------------------------ bad input ----

def expect_client_error(c, request, timeout=None):
    c.send(request)
    line = c.readline(timeout)
    assert line.startswith(b"CLIENT_ERROR"), (request[:80], line)
    return line


def still_usable(c):
    xchg(c, b"set ok 0 0 2\r\nok\r\nget ok\r\n",
         b"STORED\r\nVALUE ok 0 2\r\nok\r\nEND\r\n")


LONG = b"L" * 251


@pytest.mark.strata_only  # nutcracker closes the connection
@pytest.mark.parametrize("request_", [
    b"get " + LONG + b"\r\n",
    b"get a " + LONG + b" b\r\n",
    b"gets " + LONG + b"\r\n",
    b"set " + LONG + b" 0 0 1\r\nx\r\n",
    b"add " + LONG + b" 0 0 1\r\nx\r\n",
    b"cas " + LONG + b" 0 0 1 1\r\nx\r\n",
    b"delete " + LONG + b"\r\n",
    b"incr " + LONG + b" 1\r\n",
    b"touch " + LONG + b" 1\r\n",
], ids=["get", "get_multi", "gets", "set", "add", "cas", "delete", "incr",
        "touch"])
def test_key_too_long(request_, client, pool2):
    _, servers = pool2
    before = backend_command_counts(servers)
    expect_client_error(client, request_)
    assert backend_command_counts(servers) == before, "reached a backend"
    # a storage command's data block is skipped: framing is intact
    still_usable(client)


@pytest.mark.strata_only  # nutcracker forwards such keys
@pytest.mark.parametrize("ch", [b"\x01", b"\x1b", b"\x7f", b"\x00"],
                         ids=["soh", "esc", "del", "nul"])
@pytest.mark.parametrize("cmd", ["get", "set", "delete"])
def test_control_char_in_key(cmd, ch, client, pool2):
    _, servers = pool2
    key = b"bad" + ch + b"key"
    if cmd == "set":
        req = b"set " + key + b" 0 0 1\r\nx\r\n"
    else:
        req = cmd.encode() + b" " + key + b"\r\n"
    before = backend_command_counts(servers)
    expect_client_error(client, req)
    assert backend_command_counts(servers) == before, "reached a backend"
    still_usable(client)


@pytest.mark.strata_only  # nutcracker closes the connection
@pytest.mark.parametrize("request_,reply", [
    (b"get\r\n", b"ERROR\r\n"), (b"gets\r\n", b"ERROR\r\n"),
    (b"incr k\r\n", b"ERROR\r\n"), (b"decr\r\n", b"ERROR\r\n"),
    (b"touch k\r\n", b"ERROR\r\n"), (b"delete\r\n", b"ERROR\r\n"),
    (b"gat 10\r\n", b"END\r\n"), (b"gats\r\n", b"ERROR\r\n"),
])
def test_missing_arguments(request_, reply, client, pool2):
    """Framing is intact (no data block can follow): memcached 1.6's reply
    (ERROR for too few words; END for a gat with no key; compared side by
    side in test_hostile_clients.py) and the connection stays usable."""
    _, servers = pool2
    before = backend_command_counts(servers)
    xchg(client, request_, reply)
    assert backend_command_counts(servers) == before, "reached a backend"
    still_usable(client)


@pytest.mark.strata_only  # nutcracker closes the connection
@pytest.mark.parametrize("request_", [
    b"set k 0 0\r\n", b"set k\r\n", b"add\r\n", b"replace k 0\r\n",
    b"append k 0 0\r\n",
])
def test_storage_command_missing_length(request_, client, pool2):
    """Without a byte count the stream cannot be framed: CLIENT_ERROR, and
    the proxy may close the connection afterwards."""
    _, servers = pool2
    before = backend_command_counts(servers)
    expect_client_error(client, request_)
    assert backend_command_counts(servers) == before, "reached a backend"


@pytest.mark.strata_only  # nutcracker waits for the data forever
@pytest.mark.parametrize("length", [b"99999999999999999999",
                                    b"18446744073709551616", b"-1", b"abc"])
def test_bad_byte_count(length, client, pool2):
    """A length that overflows or is not a number: CLIENT_ERROR at once (the
    stream cannot be framed any more, so the proxy may then close)."""
    _, servers = pool2
    before = backend_command_counts(servers)
    t0 = time.monotonic()
    expect_client_error(client, b"set hk 0 0 " + length + b"\r\n",
                        timeout=3.0)
    assert time.monotonic() - t0 < 3.0
    assert backend_command_counts(servers) == before, "reached a backend"
    assert backend_value(servers, "hk") is None


@pytest.mark.strata_only  # nutcracker passes it on; memcached: SERVER_ERROR
def test_value_over_limit(client, pool2):
    _, servers = pool2
    big = b"B" * (2 * 1024 * 1024)
    before = backend_command_counts(servers)
    expect_client_error(client, b"set big 0 0 %d\r\n" % len(big) + big
                        + b"\r\n", timeout=10.0)
    assert backend_command_counts(servers) == before, "reached a backend"
    assert backend_value(servers, "big") is None
    still_usable(client)


@pytest.mark.strata_only  # nutcracker closes the connection
def test_data_block_without_crlf(pool2):
    proxy, servers = pool2
    with proxy.client() as c:
        expect_client_error(c, b"set dk 0 0 3\r\nabcde\r\n")
    assert backend_value(servers, "dk") is None
    with proxy.client() as c:
        expect_client_error(c, b"set dk 0 0 3\r\nabcXY")
    assert backend_value(servers, "dk") is None
    # the proxy keeps serving others
    with proxy.client() as c:
        still_usable(c)


# --------------------------------------------------------------- values ----

def test_binary_value_with_crlf_inside(client, pool2):
    _, servers = pool2
    val = bytes(range(256)) + b"\r\nEND\r\nVALUE x 0 1\r\n\r\n\x00\r"
    xchg(client, b"set bin 0 0 %d\r\n" % len(val) + val + b"\r\n",
         b"STORED\r\n")
    xchg(client, b"get bin\r\n",
         b"VALUE bin 0 %d\r\n" % len(val) + val + b"\r\nEND\r\n")
    assert backend_value(servers, "bin") == (val, 0)


def test_512k_value(client, pool2):
    _, servers = pool2
    val = bytes((i * 7 + 3) % 256 for i in range(512 * 1024))
    xchg(client, b"set big 0 0 %d\r\n" % len(val) + val + b"\r\n",
         b"STORED\r\n")
    xchg(client, b"get big\r\n",
         b"VALUE big 0 %d\r\n" % len(val) + val + b"\r\nEND\r\n",
         timeout=10.0)
    assert backend_value(servers, "big") == (val, 0)


def test_empty_value(client, pool2):
    _, servers = pool2
    xchg(client, b"set empty 5 0 0\r\n\r\n", b"STORED\r\n")
    xchg(client, b"get empty\r\n", b"VALUE empty 5 0\r\n\r\nEND\r\n")
    xchg(client, b"append empty 0 0 0\r\n\r\n", b"STORED\r\n")
    xchg(client, b"get empty missing\r\n", b"VALUE empty 5 0\r\n\r\nEND\r\n")
    assert backend_value(servers, "empty") == (b"", 5)


def test_value_split_over_many_writes(client):
    """Request bytes trickling in one at a time are reassembled."""
    req = b"set slow 0 0 10\r\n0123456789\r\nget slow\r\n"
    for i in range(len(req)):
        client.send(req[i:i + 1])
        time.sleep(0.002)
    assert client.read_expected(
        b"STORED\r\nVALUE slow 0 10\r\n0123456789\r\nEND\r\n") == \
        b"STORED\r\nVALUE slow 0 10\r\n0123456789\r\nEND\r\n"


def test_real_client_pymemcache(pool2):
    pymemcache = pytest.importorskip("pymemcache.client.base")
    proxy, _ = pool2
    c = pymemcache.Client(("127.0.0.1", proxy.port), connect_timeout=3,
                          timeout=3)
    try:
        assert c.set("pk", b"pv") is True
        assert c.get("pk") == b"pv"
        assert c.get_many(["pk", "nope"]) == {"pk": b"pv"}
        assert c.add("pk", b"x", noreply=False) is False
        assert c.incr("cnt", 1) is None
        c.set("cnt", b"41")
        assert c.incr("cnt", 1) == 42
        assert c.decr("cnt", 2) == 40
        val, cas = c.gets("pk")
        assert val == b"pv"
        assert c.cas("pk", b"pv2", cas) is True
        assert c.cas("pk", b"pv3", cas) is False
        assert c.get("pk") == b"pv2"
        assert c.delete("pk", noreply=False) is True
        assert c.get("pk") is None
        assert c.touch("cnt", 100, noreply=False) is True
    finally:
        c.close()


# ---------------------------------------------------------------- pools ----

def test_two_pools_are_independent(memcached_factory, proxy_factory):
    a, b = memcached_factory(2)
    proxy = proxy_factory({"alpha": simple_pool([a]),
                           "beta": simple_pool([b], hash="fnv1a_64")})
    with proxy.client("alpha") as ca, proxy.client("beta") as cb:
        xchg(ca, b"set same 0 0 5\r\nalpha\r\n", b"STORED\r\n")
        xchg(cb, b"set same 0 0 4\r\nbeta\r\n", b"STORED\r\n")
        xchg(ca, b"get same\r\n", b"VALUE same 0 5\r\nalpha\r\nEND\r\n")
        xchg(cb, b"get same\r\n", b"VALUE same 0 4\r\nbeta\r\nEND\r\n")
    with a.client() as d:
        assert d.get("same") == b"alpha"
    with b.client() as d:
        assert d.get("same") == b"beta"


def test_unix_socket_listener(workdir, memcached_factory, proxy_factory):
    servers = memcached_factory(2)
    path = os.path.join(workdir, "proxy.sock")
    proxy = proxy_factory({"alpha": simple_pool(
        servers, listen="%s 0666" % path)})
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666)
    with proxy.client() as c:
        xchg(c, b"set us 0 0 2\r\nok\r\nget us\r\n",
             b"STORED\r\nVALUE us 0 2\r\nok\r\nEND\r\n")
    assert backend_value(servers, "us") == (b"ok", 0)


@pytest.mark.strata_only  # nutcracker does not answer "stats"
def test_stats_command(client):
    client.send(b"stats\r\n")
    lines = []
    for _ in range(10000):
        line = client.readline()
        if line == b"END\r\n":
            break
        assert re.match(rb"^STAT \S+ [^\r\n]*\r\n$", line), line
        lines.append(line)
    assert lines, "no STAT lines"
    xchg(client, b"get x\r\n", b"END\r\n")
