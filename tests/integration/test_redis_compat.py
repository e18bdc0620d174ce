"""Redis pools: the same requests through nutcracker 0.5.0 and through
Strata give the same reply bytes, and the connection is closed in the same
cases.

Every test takes the `proxy` fixture, parametrized ["nutcracker",
"strata"]: run one side with `-k nutcracker` or `-k strata`.  Replies of
ordinary commands are compared with a reference redis-server spoken to
directly (the proxy passes a backend reply through untouched); what the
proxy says by itself (PING, AUTH, errors, closing the connection) is
asserted with the exact bytes nutcracker 0.5.0 was observed to send.
"""

import time

import pytest

from redis_util import (PROXY_KINDS, RedisServer, RedisSet, cli, encode,
                        have_nutcracker, have_redis, parse, proxy_conn,
                        redis_pool, redis_py, start_redis_proxy, where)

pytestmark = [
    pytest.mark.skipif(not have_redis(), reason="redis-server not installed"),
    pytest.mark.skipif(not have_nutcracker(), reason="nutcracker not installed"),
]

CLOSED = b"<closed>"


@pytest.fixture(scope="module")
def shards():
    rs = RedisSet(4)
    # a fifth server, never behind a proxy: what redis itself answers
    rs.ref = RedisServer(rs.workdir).start()
    rs.servers_plus_ref = rs.servers + [rs.ref]
    yield rs
    rs.ref.stop()
    rs.close()


@pytest.fixture(scope="module", params=PROXY_KINDS)
def proxy(request, shards):
    p = start_redis_proxy(request.param, shards.workdir,
                          {"r": redis_pool(shards.servers, hash="md5",
                                           timeout=1000)},
                          name="%s-compat" % request.param)
    yield p
    p.stop()


@pytest.fixture(autouse=True)
def clean(shards):
    shards.flush()
    shards.ref.flush()
    yield


def run_both(proxy, ref, commands):
    """Send each command through the proxy and to the reference server on
    one connection each; returns [(command, proxy reply, redis reply)]."""
    out = []
    with proxy_conn(proxy) as pc, ref.conn() as rc:
        for cmd in commands:
            out.append((cmd, pc.call(*cmd), rc.call(*cmd)))
    return out


def assert_same(rows):
    diff = [(c, p, r) for c, p, r in rows if p != r]
    assert not diff, "proxy and redis differ (cmd, proxy, redis): %r" % diff[:5]


def outcome(proxy, data, wait=0.4):
    """Raw bytes in one write; everything that arrives within `wait` s,
    with <closed> appended when the proxy closed the connection."""
    with proxy_conn(proxy) as c:
        c.send(data)
        got, closed = c.read_available(wait)
        return got + (CLOSED if closed else b"")


# ------------------------------------------------------ single key ----

SINGLE_KEY = [
    ("SET", "s1", "v1"), ("GET", "s1"), ("GET", "missing"),
    ("SET", "s2", b"\x00bin\r\nary\xff"), ("GET", "s2"),
    ("SET", "empty", ""), ("GET", "empty"), ("STRLEN", "s1"),
    ("APPEND", "s1", "-more"), ("GET", "s1"), ("GETSET", "s1", "new"),
    ("SETNX", "s1", "x"), ("SETNX", "s3", "x"), ("SETEX", "s4", 100, "v"),
    ("TTL", "s4"), ("EXPIRE", "s3", 200), ("TTL", "s3"), ("PERSIST", "s3"),
    ("TTL", "s3"), ("TTL", "missing"), ("EXISTS", "s1"), ("TYPE", "s1"),
    ("INCR", "n"), ("INCRBY", "n", 41), ("DECR", "n"), ("DECRBY", "n", 2),
    ("INCRBYFLOAT", "f", "1.5"), ("INCR", "s1"), ("GET", "n"),
    ("DEL", "n"), ("DEL", "n"),
    ("HSET", "h", "f1", "a"), ("HSET", "h", "f2", "b", "f3", "c"),
    ("HGET", "h", "f1"), ("HGETALL", "h"), ("HMGET", "h", "f1", "zz", "f3"),
    ("HINCRBY", "h", "cnt", 5), ("HDEL", "h", "f2"), ("HLEN", "h"),
    ("HEXISTS", "h", "f2"), ("HKEYS", "h"), ("HVALS", "h"),
    ("LPUSH", "l", "a", "b"), ("RPUSH", "l", "c"), ("LRANGE", "l", 0, -1),
    ("LLEN", "l"), ("LPOP", "l"), ("RPOP", "l"), ("LINDEX", "l", 0),
    ("LPUSH", "h", "x"),
    # integer members: an intset, whose SMEMBERS order does not depend on
    # the server's hash seed
    ("SADD", "s", 30, 10, 20), ("SISMEMBER", "s", 20), ("SADD", "s", 10),
    ("SCARD", "s"), ("SREM", "s", 30), ("SMEMBERS", "s"),
    ("ZADD", "z", 1, "one", 2, "two", 3, "three"), ("ZSCORE", "z", "two"),
    ("ZRANGE", "z", 0, -1, "WITHSCORES"), ("ZRANK", "z", "three"),
    ("ZINCRBY", "z", 10, "one"), ("ZREVRANGE", "z", 0, 1),
    ("ZRANGEBYSCORE", "z", 2, "+inf"), ("ZCARD", "z"), ("ZREM", "z", "two"),
    ("SET", "arity"),            # wrong arity: redis' own error, passed on
    ("HSET", "h", "f"), ("ZADD", "z"), ("SADD", "s"),
    ("gEt", "s1"), ("get", "s1"),  # command names in any case
    ("GET", ""),                    # empty key
]


def test_single_key_commands_like_redis(proxy, shards):
    rows = run_both(proxy, shards.ref, SINGLE_KEY)
    assert_same(rows)
    # and the keys are really spread over the shards
    used = {tuple(v) for v in where(shards.servers,
                                    ["s1", "s2", "s3", "s4", "h", "l", "s",
                                     "z", "f"]).values()}
    assert len(used) >= 2, used


def test_pipelined_single_key_commands_in_order(proxy, shards):
    cmds = []
    for i in range(200):
        cmds.append(("SET", "p%d" % i, "v%d" % i))
        cmds.append(("INCR", "c%d" % (i % 7)))
        cmds.append(("GET", "p%d" % (i // 2)))
    blob = b"".join(encode(*c) for c in cmds)
    with proxy_conn(proxy) as pc, shards.ref.conn() as rc:
        pc.send(blob)
        rc.send(blob)
        got = pc.replies(len(cmds), timeout=10)
        want = rc.replies(len(cmds), timeout=10)
    assert got == want


# ------------------------------------------------------- multi key ----

MKEYS = ["mk:%d" % i for i in range(40)]


def test_multi_key_commands_merged_in_key_order(proxy, shards):
    half = MKEYS[:20]
    cmds = [("MSET",) + tuple(x for k in half for x in (k, "val-" + k)),
            ("MGET",) + tuple(MKEYS),                      # half missing
            ("MGET",) + tuple(reversed(MKEYS)),
            ("MGET", MKEYS[3], MKEYS[3], "nope", MKEYS[3]),  # repeated key
            ("MGET", MKEYS[0]),
            ("TOUCH",) + tuple(MKEYS) + (MKEYS[0],),        # counts repeats
            ("DEL",) + tuple(MKEYS[:10]) + ("nope",),
            ("UNLINK",) + tuple(MKEYS[5:15]),
            ("TOUCH",) + tuple(MKEYS),
            ("MGET",) + tuple(MKEYS),
            ("DEL", "nope1", "nope2")]
    rows = run_both(proxy, shards.ref, cmds)
    assert_same(rows)
    # the keys really were split: every shard holds some of them
    shards.flush()
    with proxy_conn(proxy) as c:
        assert c.call(*cmds[0]) == b"+OK\r\n"
    placed = where(shards.servers, half)
    assert all(len(v) == 1 for v in placed.values()), placed
    assert len({v[0] for v in placed.values()}) == 4, placed


def test_exists_is_not_split(proxy, shards):
    """nutcracker 0.5.0 does not split EXISTS: a multi-key EXISTS goes whole
    to the first key's shard, which counts only the keys it holds (DEL,
    UNLINK and TOUCH are split and summed)."""
    keys = ["ex:%d" % i for i in range(24)]
    with proxy_conn(proxy) as c:
        assert c.call("MSET", *[x for k in keys for x in (k, k)]) == \
            b"+OK\r\n"
        placed = where(shards.servers, keys + ["ex:none"])
        for first in (keys[0], keys[7], keys[13]):
            ks = [first] + [k for k in keys if k != first]
            on_first = sum(1 for k in ks if placed[k] == placed[first])
            ks.insert(5, "ex:none")
            assert on_first < len(keys)      # keys are on several shards
            assert c.call("EXISTS", *ks) == b":%d\r\n" % on_first
        assert c.call("EXISTS", keys[3]) == b":1\r\n"
        assert c.call("EXISTS", "ex:none") == b":0\r\n"


def test_mget_values_are_the_shards_values(proxy, shards):
    """Values written straight to the shard that owns each key (found by
    writing through the proxy first) come back in the MGET's key order."""
    keys = ["own:%d" % i for i in range(30)]
    with proxy_conn(proxy) as c:
        for k in keys:
            assert c.call("SET", k, "x") == b"+OK\r\n"
    placed = where(shards.servers, keys)
    for k in keys:
        shards.servers[placed[k][0]].call("SET", k, "direct-" + k)
    with proxy_conn(proxy) as c:
        got = parse(c.call("MGET", *keys))
    assert got == [("direct-" + k).encode() for k in keys]


# ------------------------------------------------------------- eval ----

def test_eval_routed_by_first_key(proxy, shards):
    keys = ["ev:%d" % i for i in range(12)]
    with proxy_conn(proxy) as c:
        for k in keys:
            r = c.call("EVAL", "return redis.call('SET', KEYS[1], ARGV[1])",
                       1, k, "e-" + k)
            assert r == b"+OK\r\n", r
        for k in keys:
            assert c.call("GET", k) == b"$%d\r\ne-%s\r\n" % (len(k) + 2,
                                                            k.encode())
            assert c.call("EVAL", "return {KEYS[1], ARGV[1]}", 1, k, "a") \
                == b"*2\r\n$%d\r\n%s\r\n$1\r\na\r\n" % (len(k), k.encode())
    # a script's writes land where a SET through the proxy lands
    by_eval = where(shards.servers, keys)
    shards.flush()
    with proxy_conn(proxy) as c:
        for k in keys:
            assert c.call("SET", k, "x") == b"+OK\r\n"
    assert where(shards.servers, keys) == by_eval
    assert len({v[0] for v in by_eval.values()}) >= 2


def test_evalsha_routed_by_first_key(proxy, shards):
    script = "return redis.call('GET', KEYS[1])"
    sha = None
    for s in shards.servers:
        sha = parse(s.call("SCRIPT", "LOAD", script))
    keys = ["es:%d" % i for i in range(12)]
    with proxy_conn(proxy) as c:
        for k in keys:
            assert c.call("SET", k, "v" + k) == b"+OK\r\n"
        for k in keys:
            assert parse(c.call("EVALSHA", sha, 1, k)) == ("v" + k).encode()
        assert c.call("EVALSHA", "0" * 40, 1, keys[0]) == \
            b"-NOSCRIPT No matching script. Please use EVAL.\r\n"


# ------------------------------------------------ proxy's own replies ----

def test_ping(proxy):
    with proxy_conn(proxy) as c:
        assert c.call("PING") == b"+PONG\r\n"
        assert c.call("ping") == b"+PONG\r\n"
        c.send(encode("PING") * 3)
        assert c.replies(3) == [b"+PONG\r\n"] * 3


def test_quit_closes_without_reply(proxy):
    """nutcracker 0.5.0 answers QUIT by closing: no +OK."""
    assert outcome(proxy, encode("QUIT")) == CLOSED
    with proxy_conn(proxy) as c:
        assert c.call("SET", "q", "1") == b"+OK\r\n"
        c.send(encode("QUIT"))
        assert c.read_available(0.4) == (b"", True)


def test_auth_without_redis_auth(proxy):
    with proxy_conn(proxy) as c:
        assert c.call("AUTH", "x") == \
            b"-ERR Client sent AUTH, but no password is set\r\n"
        assert c.call("PING") == b"+PONG\r\n"


# nutcracker 0.5.0 closes the connection, sending nothing, on a command it
# does not support or on a supported one with the wrong number of
# arguments (when its table knows the arity).
CLOSES = {
    "keys": encode("KEYS", "*"),
    "unknown": encode("FOOBAR", "x"),
    "flushall": encode("FLUSHALL"),
    "select": encode("SELECT", "1"),
    "multi": encode("MULTI"),
    "script-load": encode("SCRIPT", "LOAD", "return 1"),
    "ping-arg": encode("PING", "hi"),
    "auth-no-arg": encode("AUTH"),
    "get-0": encode("GET"),
    "get-2": encode("GET", "a", "b"),
    "ttl-0": encode("TTL"),
    "expire-1": encode("EXPIRE", "a"),
    "lrange-2": encode("LRANGE", "l", "0"),
    "mget-0": encode("MGET"),
    "del-0": encode("DEL"),
    "exists-0": encode("EXISTS"),
    "touch-0": encode("TOUCH"),
    "mset-0": encode("MSET"),
    "mset-odd": encode("MSET", "a", "1", "b"),
    "eval-0-keys": encode("EVAL", "return 1", "0"),
    "eval-no-key": encode("EVAL", "return 1", "1"),
}


@pytest.mark.parametrize("case", list(CLOSES))
def test_unsupported_or_bad_arity_closes(proxy, case):
    assert outcome(proxy, CLOSES[case]) == CLOSED


# INFO and COMMAND: nutcracker 0.5.0 closes the connection, as on any
# command it does not know, except a bare COMMAND, which it forwards to a
# server (Redis's whole table comes back); Strata answers them all itself
# (redis-cli 7 sends COMMAND DOCS first; docs/compatibility.md).
# test_redis_info.py checks what Strata answers.
PROXY_ANSWERS = {
    "info": encode("INFO"),
    "info-section": encode("INFO", "stats"),
    "command": encode("COMMAND"),
    "command-count": encode("COMMAND", "COUNT"),
    "command-docs": encode("COMMAND", "DOCS"),
}


@pytest.mark.parametrize("case", list(PROXY_ANSWERS))
def test_info_and_command_close_on_nutcracker_answered_by_strata(proxy, case):
    got = outcome(proxy, PROXY_ANSWERS[case])
    if proxy.kind == "nutcracker" and case == "command":
        assert got.startswith(b"*") and not got.endswith(CLOSED), got[:80]
    elif proxy.kind == "nutcracker":
        assert got == CLOSED
    else:
        assert not got.endswith(CLOSED) and got[:1] in (b"$", b"*", b":"), got[:80]
        parse(got)   # one whole RESP reply


def test_refused_command_is_logged_with_its_name_and_peer(proxy):
    """As nutcracker's "parsed unsupported command 'keys'", at the default
    level; Strata adds the peer and writes one line a second at most."""
    if proxy.kind != "strata":
        pytest.skip("nutcracker's line is its own")
    for _ in range(30):
        assert outcome(proxy, CLOSES["keys"], wait=5.0) == CLOSED
    lines = [l for l in proxy.read_log().splitlines() if "unsupported command 'KEYS'" in l]
    assert lines and " WARN " in lines[0], proxy.read_log()[-2000:]
    assert "from 127.0.0.1:" in lines[0] and "connection closed" in lines[0]
    assert len(lines) < 30


# Malformed RESP: nutcracker closes, sending nothing.
MALFORMED = {
    "inline-ping": b"PING\r\n",
    "inline-get": b"GET k1\r\n",
    "bad-bulk-len": b"*1\r\n$x\r\n",
    "negative-argc": b"*-1\r\n",
    "zero-argc": b"*0\r\n",
    "bulk-shorter-than-len": b"*2\r\n$3\r\nGET\r\n$5\r\nk1\r\n\r\n",
    "integer-arg": b"*1\r\n:1\r\n",
    "bulk-no-crlf": b"*1\r\n$4\r\nPINGxx",
    "lf-only-after-bulk": b"*1\r\n$4\r\nPING\n",
    "lf-only-after-argc": b"*1\n$4\r\nPING\r\n",
    "nil-bulk-arg": b"*2\r\n$3\r\nGET\r\n$-1\r\n",
    "empty-command": b"*1\r\n$0\r\n\r\n",
    "huge-bulk-len": b"*2\r\n$3\r\nGET\r\n$999999999999\r\n",
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_closes(proxy, case):
    assert outcome(proxy, MALFORMED[case]) == CLOSED


@pytest.mark.parametrize("data", [b"*100000\r\n",
                                  b"*99999999999999999999\r\n"],
                         ids=["argc-100000", "argc-overflow"])
def test_huge_argument_count_never_answered(proxy, data):
    """nutcracker keeps waiting for the announced arguments (the
    connection stays open, nothing is sent).  Strata may close instead
    (its parser limits max_args); either way no reply and no crash."""
    got = outcome(proxy, data, wait=0.5)
    assert got in (b"", CLOSED)
    with proxy_conn(proxy) as c:
        assert c.call("PING") == b"+PONG\r\n"


def test_bad_request_after_good_one(proxy, shards):
    """A good request pipelined before an unsupported one: nutcracker
    runs it but closes before (or right after) its reply — only a prefix
    of '+OK' ever arrives, then the close."""
    got = outcome(proxy, encode("SET", "before", "1") + encode("KEYS", "*")
                  + encode("GET", "before"), wait=0.5)
    assert got in (CLOSED, b"+OK\r\n" + CLOSED), got
    with proxy_conn(proxy) as c:
        assert c.call("GET", "before") == b"$1\r\n1\r\n"


# -------------------------------------------------- split requests ----

def send_bytewise(conn, data, pause=0.0005):
    for i in range(len(data)):
        conn.send(data[i:i + 1])
        if pause:
            time.sleep(pause)


def test_request_split_at_every_byte(proxy, shards):
    keys = ["bw:%d" % i for i in range(6)]
    reqs = [(encode("SET", "bw:0", "value-0"), b"+OK\r\n"),
            (encode("MSET", *[x for k in keys[1:] for x in (k, k)]),
             b"+OK\r\n"),
            (encode("GET", "bw:0"), b"$7\r\nvalue-0\r\n"),
            (encode("MGET", *keys + ["none"]),
             b"*7\r\n$7\r\nvalue-0\r\n" + b"".join(
                 b"$4\r\n%s\r\n" % k.encode() for k in keys[1:]) +
             b"$-1\r\n"),
            (encode("DEL", *keys), b":6\r\n"),
            (encode("PING"), b"+PONG\r\n")]
    with proxy_conn(proxy) as c:
        for data, want in reqs:
            send_bytewise(c, data)
            assert c.reply() == want, data
        # every split point of one request, each in two writes
        data = encode("SET", "split", "0123456789")
        for cut in range(1, len(data)):
            c.send(data[:cut])
            time.sleep(0.001)
            c.send(data[cut:])
            assert c.reply() == b"+OK\r\n", cut


# ----------------------------------------------------- real clients ----

def test_redis_cli(proxy):
    r = cli(proxy, "SET", "cli-key", "cli value")
    assert (r.returncode, r.stdout) == (0, "OK\n"), r
    r = cli(proxy, "GET", "cli-key")
    assert (r.returncode, r.stdout) == (0, "cli value\n"), r
    r = cli(proxy, "MGET", "cli-key", "cli-none", "cli-key")
    assert (r.returncode, r.stdout) == (0, "cli value\n\ncli value\n"), r
    r = cli(proxy, "PING")
    assert (r.returncode, r.stdout) == (0, "PONG\n"), r
    r = cli(proxy, "KEYS", "*")    # unsupported: the proxy closes
    assert r.returncode == 1
    assert "Server closed the connection" in r.stderr, r


def test_redis_py(proxy):
    r = redis_py(proxy)
    try:
        assert r.ping() is True
        assert r.set("py:a", "1") is True
        assert r.mset({"py:%d" % i: str(i) for i in range(50)}) is True
        assert r.mget(["py:%d" % i for i in range(50)] + ["py:none"]) == \
            [str(i).encode() for i in range(50)] + [None]
        assert r.incr("py:a") == 2
        assert r.hset("py:h", mapping={"a": "1", "b": "2"}) == 2
        assert r.hgetall("py:h") == {b"a": b"1", b"b": b"2"}
        assert r.delete(*["py:%d" % i for i in range(50)]) == 50
        assert r.exists("py:a") == 1 and r.exists("py:0") == 0
    finally:
        r.close()
