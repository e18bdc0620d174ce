"""Redis pools under volume and failure, and redis_auth / redis_db, for
nutcracker and Strata (`proxy` parametrized; `-k nutcracker` /
`-k strata`).  Error strings are nutcracker 0.5.0's, as observed:
  a backend that does not answer within `timeout`: -ERR Connection timed out
  a backend killed with the request in flight:      -ERR Connection reset by peer
  a backend that is down (connect refused):         -ERR Connection refused
"""

import time

import pytest

from redis_util import (PROXY_KINDS, RedisSet, cli, encode,
                        have_nutcracker, have_redis, parse, proxy_conn,
                        redis_pool, redis_py, start_redis_proxy, where)

pytestmark = [
    pytest.mark.skipif(not have_redis(), reason="redis-server not installed"),
    pytest.mark.skipif(not have_nutcracker(), reason="nutcracker not installed"),
]

TIMEOUT_MS = 300
TIMED_OUT = b"-ERR Connection timed out\r\n"
RESET = b"-ERR Connection reset by peer\r\n"
REFUSED = b"-ERR Connection refused\r\n"


@pytest.fixture(scope="module")
def shards():
    rs = RedisSet(4)
    yield rs
    rs.close()


@pytest.fixture(scope="module", params=PROXY_KINDS)
def proxy(request, shards):
    p = start_redis_proxy(request.param, shards.workdir,
                          {"r": redis_pool(shards.servers, hash="md5",
                                           timeout=2000)},
                          name="%s-data" % request.param)
    yield p
    p.stop()


# ------------------------------------------------------------ volume ----

def test_mget_1000_keys_over_4_shards(proxy, shards):
    shards.flush()
    keys = ["big:%d" % i for i in range(1000)]
    vals = ["value-%d-" % i + "x" * (i % 50) for i in range(1000)]
    with proxy_conn(proxy, timeout=10) as c:
        assert c.call("MSET", *[x for kv in zip(keys, vals) for x in kv]) \
            == b"+OK\r\n"
        ask = keys + ["big:none"] + keys[::-1]
        got = parse(c.call("MGET", *ask, timeout=10))
    assert got == [v.encode() for v in vals] + [None] + \
        [v.encode() for v in vals[::-1]]
    placed = where(shards.servers, keys)
    counts = [sum(1 for v in placed.values() if v == [i]) for i in range(4)]
    assert sum(counts) == 1000 and min(counts) > 100, counts


def test_10000_pipelined_commands_in_order(proxy, shards):
    shards.flush()
    r = redis_py(proxy, socket_timeout=20)
    try:
        pipe = r.pipeline(transaction=False)
        want = []
        for i in range(2500):
            k = "pl:%d" % (i % 700)
            pipe.set(k, str(i))
            want.append(True)
            pipe.get(k)
            want.append(str(i).encode())
            pipe.incr("pl:ctr:%d" % (i % 13))
            want.append(i // 13 + 1)
            pipe.mget(k, "pl:none", "pl:%d" % ((i + 1) % 700))
            nxt = (i + 1) % 700
            # the next key was set earlier in this pipeline if i+1-700 >= 0
            prev = i + 1 - 700 if i + 1 >= 700 else None
            want.append([str(i).encode(), None,
                         str(prev).encode() if prev is not None else None])
            assert nxt == (i + 1) % 700
        got = pipe.execute()
    finally:
        r.close()
    assert len(got) == 10000
    bad = [(j, got[j], want[j]) for j in range(10000) if got[j] != want[j]]
    assert not bad, bad[:5]


# ----------------------------------------------------------- failure ----

@pytest.fixture
def fragile(request):
    """Its own 2 shards and proxy (timeout TIMEOUT_MS): the tests kill and
    pause them."""
    rs = RedisSet(2)
    p = None
    try:
        p = start_redis_proxy(request.param, rs.workdir,
                              {"r": redis_pool(rs.servers, hash="md5",
                                               timeout=TIMEOUT_MS)},
                              name="%s-fragile" % request.param)
        yield p, rs
    finally:
        if p:
            p.stop()
        rs.close()


def keys_by_shard(p, rs, n=40):
    keys = ["f:%d" % i for i in range(n)]
    with proxy_conn(p) as c:
        for k in keys:
            assert c.call("SET", k, "v" + k) == b"+OK\r\n"
    placed = where(rs.servers, keys)
    by = [[k for k in keys if placed[k] == [i]] for i in range(len(rs.servers))]
    assert all(by), by
    return by


@pytest.mark.parametrize("fragile", PROXY_KINDS, indirect=True)
def test_paused_backend_times_out(fragile):
    p, rs = fragile
    by = keys_by_shard(p, rs)
    rs.servers[1].pause()
    try:
        with proxy_conn(p) as c:
            t0 = time.monotonic()
            assert c.call("GET", by[1][0], timeout=3) == TIMED_OUT
            took = time.monotonic() - t0
            assert TIMEOUT_MS / 1000.0 * 0.8 <= took < TIMEOUT_MS / 1000.0 + 1
            # the other shard still answers, on the same connection
            assert c.call("GET", by[0][0]) == b"$%d\r\nv%s\r\n" % (
                len(by[0][0]) + 1, by[0][0].encode())
        with proxy_conn(p) as c:
            # a split request with a part on the paused shard
            assert c.call("MGET", by[0][0], by[1][0], timeout=3) == TIMED_OUT
    finally:
        rs.servers[1].resume()


@pytest.mark.parametrize("fragile", PROXY_KINDS, indirect=True)
def test_backend_killed_mid_run(fragile):
    p, rs = fragile
    by = keys_by_shard(p, rs)
    with proxy_conn(p) as c:
        # a request in flight when the backend dies
        rs.servers[1].pause()
        c.send(encode("GET", by[1][0]))
        time.sleep(0.05)
        rs.servers[1].kill()
        t0 = time.monotonic()
        assert c.reply(timeout=3) == RESET
        assert time.monotonic() - t0 < TIMEOUT_MS / 1000.0
        # later requests to the dead shard: refused, at once
        for k in by[1][:5]:
            t0 = time.monotonic()
            assert c.call("GET", k, timeout=3) == REFUSED
            assert time.monotonic() - t0 < TIMEOUT_MS / 1000.0
        assert c.call("DEL", by[0][0], by[1][0], timeout=3) == REFUSED
        # the live shard still works
        assert c.call("GET", by[0][1]) == b"$%d\r\nv%s\r\n" % (
            len(by[0][1]) + 1, by[0][1].encode())


@pytest.mark.parametrize("fragile", PROXY_KINDS, indirect=True)
def test_killed_backend_under_pipelined_load(fragile):
    """Every request of a steady pipelined run gets exactly one reply, a
    right value or one of the three errors, in order."""
    p, rs = fragile
    by = keys_by_shard(p, rs)
    keys = by[0][:5] + by[1][:5]
    with proxy_conn(p, timeout=5) as c:
        ok = errs = 0
        deadline = time.monotonic() + 8
        for rnd in range(40):
            if rnd == 10:
                rs.servers[1].kill()
            c.send(b"".join(encode("GET", k) for k in keys))
            for k, r in zip(keys, c.replies(len(keys), timeout=3)):
                if r in (REFUSED, RESET, TIMED_OUT):
                    errs += 1
                else:
                    assert r == b"$%d\r\nv%s\r\n" % (len(k) + 1, k.encode())
                    ok += 1
            assert time.monotonic() < deadline
    assert ok >= 40 * 5 and errs >= 30 * 5 - 5


# ------------------------------------------------------ large values ----

def test_mget_of_large_binary_values(proxy, shards):
    """twemproxy's own tests/test_redis test_mget_binary_value: five 16 MB
    binary values set with one MSET and read back with one MGET (80 MB
    each way). Redis pools take Redis's limits (512 MB a bulk), not
    memcached's 1 MB."""
    import random
    rnd = random.Random(14)
    vals = [bytes(rnd.getrandbits(8) for _ in range(4096)) * 4096 for _ in range(5)]
    keys = ["bin:%d" % i for i in range(5)]
    with proxy_conn(proxy, timeout=60) as c:
        assert c.call("MSET", *[x for kv in zip(keys, vals) for x in kv],
                      timeout=60) == b"+OK\r\n"
        assert parse(c.call("MGET", *keys, timeout=60)) == vals
    placed = where(shards.servers, keys)
    assert len({v[0] for v in placed.values()}) >= 2   # the MSET was split


@pytest.mark.strata_only
def test_large_request_refused_when_max_memory_has_no_room(shards, workdir):
    """A request is counted against max_memory as soon as its lengths are
    announced: one that cannot fit is answered and its connection closed
    before its bytes arrive; one that fits is served."""
    from policy_util import write_settings
    cfg = write_settings(workdir, "max_memory = 67108864;\n", name="mem64.cfg")
    p = start_redis_proxy("strata", workdir, {"r": redis_pool(shards.servers, hash="md5")},
                          extra_args=["-C", cfg], name="strata-mem64")
    try:
        with proxy_conn(p, timeout=10) as c:
            head = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % (100 << 20)
            got = c.outcome(head + b"x" * 1000)
            assert got == b"-ERR request too large for the proxy's max_memory\r\n", got
            assert c.outcome(b"") == b"<closed>"
        with proxy_conn(p, timeout=30) as c:            # 8 MB fits
            assert c.call("SET", "fits", b"y" * (8 << 20), timeout=30) == b"+OK\r\n"
            assert c.call("STRLEN", "fits") == b":%d\r\n" % (8 << 20)
        assert "a request of" in p.read_log()
    finally:
        p.stop()


# -------------------------------------------------------------- auth ----

@pytest.fixture(scope="module")
def auth_shards():
    rs = RedisSet(2, password="sekret")
    yield rs
    rs.close()


@pytest.fixture(scope="module")
def auth_proxy(request, auth_shards):
    p = start_redis_proxy(request.param, auth_shards.workdir, {
        "auth": redis_pool(auth_shards.servers, hash="md5",
                           redis_auth="sekret"),
        "noauth": redis_pool(auth_shards.servers, hash="md5")},
        name="%s-auth" % request.param)
    yield p
    p.stop()


NOAUTH = b"-NOAUTH Authentication required\r\n"


@pytest.mark.parametrize("auth_proxy", PROXY_KINDS, indirect=True)
def test_redis_auth_required_first(auth_proxy, auth_shards):
    p = auth_proxy
    with proxy_conn(p, "auth") as c:
        assert c.call("GET", "a") == NOAUTH
        assert c.call("PING") == NOAUTH
        assert c.call("MGET", "a", "b") == NOAUTH
        assert c.call("AUTH", "nope") == b"-ERR invalid password\r\n"
        assert c.call("GET", "a") == NOAUTH
        assert c.call("AUTH", "sekret") == b"+OK\r\n"
        assert c.call("PING") == b"+PONG\r\n"
        keys = ["au:%d" % i for i in range(20)]
        assert c.call("MSET", *[x for k in keys for x in (k, k)]) == \
            b"+OK\r\n"
        assert parse(c.call("MGET", *keys)) == [k.encode() for k in keys]
        # a wrong AUTH later takes the authentication away
        assert c.call("AUTH", "nope") == b"-ERR invalid password\r\n"
        assert c.call("GET", keys[0]) == NOAUTH
    # the proxy authenticated itself to both password-protected backends
    placed = where(auth_shards.servers, keys)
    assert {v[0] for v in placed.values()} == {0, 1}
    with proxy_conn(p, "auth") as c:
        assert c.outcome(encode("AUTH")) == b"<closed>"
    # QUIT needs no AUTH: it closes at once, with no reply, as nutcracker
    with proxy_conn(p, "auth") as c:
        assert c.outcome(encode("QUIT")) == b"<closed>"


@pytest.mark.strata_only
@pytest.mark.parametrize("auth_proxy", ["strata"], indirect=True)
def test_redis_auth_brute_force_is_closed_and_logged(auth_proxy):
    """Wrong passwords: each is answered, the third closes the connection
    (what was pipelined behind it is not run), every one is counted, and
    the log gets at most about one line a second with the count, not one
    per attempt."""
    p = auth_proxy
    wrong = encode("AUTH", "nope")

    def until_closed(data):
        with proxy_conn(p, "auth") as c:
            got = c.outcome(data)
            while not got.endswith((b"<closed>", b"<timeout>")):
                got += c.outcome(b"")
        return got
    assert until_closed(wrong * 3 + encode("AUTH", "sekret") + encode("PING")) \
        == b"-ERR invalid password\r\n" * 3 + b"<closed>"
    lines0 = p.read_log().count("failed AUTH attempt")
    for _ in range(100):             # 300 more guesses on 100 connections
        assert until_closed(wrong * 3).endswith(b"<closed>")
    log = p.read_log()
    assert "failed AUTH attempt(s) since the last report, the latest from 127.0.0.1:" in log
    grown = log.count("failed AUTH attempt") - lines0
    assert 1 <= grown <= 40, "%d log lines for 300 failed AUTHs" % grown
    # the right password still works on a new connection
    with proxy_conn(p, "auth") as c:
        assert c.call("AUTH", "sekret") == b"+OK\r\n"
        assert c.call("PING") == b"+PONG\r\n"


@pytest.mark.parametrize("auth_proxy", PROXY_KINDS, indirect=True)
def test_no_redis_auth_on_password_backends(auth_proxy):
    """Without redis_auth the backend's own NOAUTH (redis 7 adds a '.')
    comes back, and the proxy refuses AUTH itself."""
    with proxy_conn(auth_proxy, "noauth") as c:
        assert c.call("GET", "a") == b"-NOAUTH Authentication required.\r\n"
        assert c.call("AUTH", "sekret") == \
            b"-ERR Client sent AUTH, but no password is set\r\n"


@pytest.mark.parametrize("auth_proxy", PROXY_KINDS, indirect=True)
def test_redis_auth_real_clients(auth_proxy):
    r = redis_py(auth_proxy, "auth", password="sekret")
    try:
        assert r.set("rp", "1") is True and r.get("rp") == b"1"
    finally:
        r.close()
    res = cli(auth_proxy, "GET", "rp", pool="auth",
              extra=["--no-auth-warning", "-a", "sekret"])
    assert (res.returncode, res.stdout) == (0, "1\n"), res
    res = cli(auth_proxy, "GET", "rp", pool="auth")
    assert res.stdout.strip() == "NOAUTH Authentication required", res


# ---------------------------------------------------------------- db ----

@pytest.mark.parametrize("kind", PROXY_KINDS)
def test_redis_db(kind, shards):
    shards.flush()
    p = start_redis_proxy(kind, shards.workdir,
                          {"db3": redis_pool(shards.servers, hash="md5",
                                             redis_db=3)},
                          name="%s-db" % kind)
    try:
        keys = ["db:%d" % i for i in range(40)]
        with proxy_conn(p) as c:
            assert c.call("MSET", *[x for k in keys for x in (k, "d" + k)]) \
                == b"+OK\r\n"
            assert c.call("SET", "db:one", "1") == b"+OK\r\n"
            assert parse(c.call("MGET", *keys)) == \
                [("d" + k).encode() for k in keys]
    finally:
        p.stop()
    in3 = set()
    for s in shards.servers:
        assert s.keys(db=0) == set()
        got = s.cli("KEYS", "*", db=3).split()
        in3 |= set(got)
    assert in3 == set(keys) | {"db:one"}


# ------------------------------------------------------------ ejection ----

@pytest.mark.parametrize("kind", PROXY_KINDS)
def test_dead_shard_ejected_and_keys_rerouted(kind):
    """auto_eject_hosts as for memcached pools, through the same code: a
    killed shard fails server_failure_limit requests, is ejected (counted
    in server_ejects), and its keys then go to the live shard — with
    nutcracker's behaviour on the same file."""
    from harness import read_stats, wait_until
    rs = RedisSet(2)
    p = None
    try:
        p = start_redis_proxy(kind, rs.workdir,
                              {"r": redis_pool(rs.servers, hash="md5",
                                               timeout=TIMEOUT_MS,
                                               auto_eject_hosts=True,
                                               server_failure_limit=1,
                                               server_retry_timeout=60000)},
                              extra_args=["-i", "100"], name="%s-eject" % kind)
        by = keys_by_shard(p, rs)
        rs.servers[1].kill()
        moved = by[1][0]
        with proxy_conn(p, timeout=5) as c:
            # an error while the failure is being noticed, or already a
            # miss on the live shard (the closed idle connection counted)
            first = c.call("GET", moved)
            assert first in (REFUSED, RESET, TIMED_OUT, b"$-1\r\n"), first

            def rerouted():
                return c.call("SET", moved, "again") == b"+OK\r\n"
            assert wait_until(rerouted, 5, 0.1)
            assert c.call("GET", moved) == b"$5\r\nagain\r\n"
            # the live shard's own keys are where they were
            assert c.call("GET", by[0][0]) == b"$%d\r\nv%s\r\n" % (
                len(by[0][0]) + 1, by[0][0].encode())
        assert where(rs.servers[:1], [moved])[moved] == [0]

        def ejected():
            return read_stats(p.stats_port)["r"]["server_ejects"] >= 1
        assert wait_until(ejected, 5, 0.1)   # nutcracker publishes every -i
    finally:
        if p:
            p.stop()
        rs.close()
