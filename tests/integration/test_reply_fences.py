"""Reply fences per written batch (issue 14): a backend that answers
correctly but once skips a reply, adds an extra one, or injects one
nobody asked for shifts its pipeline, and without fences every later
request in flight gets the reply of the request before (or after) its
own. Driven with pipelined GETs of distinct keys whose values name their
key, every reply a client gets must be its own key's value or an error,
and the proxy must serve correctly again afterwards.

Redis: a fake RESP server (RespLiar, in the style of
harness.ScriptedBackend) behind a Redis pool with the default settings
(redis_fence_replies on: "ECHO <token>:<seq>" after each batch).
memcached: harness.ScriptedBackend with mn=True behind
fence_replies = "batch" ("mn" after each batch). And a real redis-server
behind a pipeline of 1,000 requests in one write: all answered right,
with one ECHO per at most 64 requests."""

import threading

import pytest

from conftest import simple_pool
from harness import FakeBackend, ScriptedBackend, wait_until
from policy_util import read_stats, value_reply, write_settings
from redis_util import RedisServer, RespConn, bulk, encode, have_redis
from redis_util import redis_pool as real_redis_pool

pytestmark = pytest.mark.strata_only

LIES = ["skip", "extra", "unsolicited"]
OUT_OF_STEP = b"-ERR backend sent an out-of-step reply\r\n"


class Fake:
    """What simple_pool needs of a server."""

    def __init__(self, port):
        self.port = port


class RespLiar(FakeBackend):
    """A Redis server that keeps a value per key ("val:" + key unless
    SET), answers GET, SET, ECHO, PING, AUTH and SELECT correctly, and
    lies once, at the first GET of a key starting "lie": `skip` sends no
    reply to it, `extra` sends its reply twice, `unsolicited` sends a
    reply nobody asked for ("val:ghost") before it. .lied says the lie
    was told; .echoes counts ECHOs."""

    def __init__(self, lie, **kw):
        self.lie = lie
        self.lied = False
        self.echoes = 0
        self.data = {}
        super().__init__(mode="resp", **kw)

    @staticmethod
    def _frame(buf):
        """([args], rest) of the first whole request in buf, else
        (None, buf)."""
        nl = buf.find(b"\r\n")
        if nl < 0:
            return None, buf
        n, pos, args = int(buf[1:nl]), nl + 2, []
        for _ in range(n):
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                return None, buf
            size = int(buf[pos + 1:nl])
            if len(buf) < nl + 2 + size + 2:
                return None, buf
            args.append(buf[nl + 2:nl + 2 + size])
            pos = nl + 2 + size + 2
        return args, buf[pos:]

    def _answer(self, args):
        cmd = args[0].upper()
        if cmd == b"ECHO":
            with self.lock:
                self.echoes += 1
            return bulk(args[1])
        if cmd == b"SET":
            self.data[args[1]] = args[2]
            return b"+OK\r\n"
        if cmd == b"PING":
            return b"+PONG\r\n"
        if cmd in (b"AUTH", b"SELECT"):
            return b"+OK\r\n"
        if cmd != b"GET":
            return b"-ERR unknown command\r\n"
        reply = bulk(self.data.get(args[1], b"val:" + args[1]))
        with self.lock:
            lie = not self.lied and args[1].startswith(b"lie")
            self.lied = self.lied or lie
        if not lie:
            return reply
        return {"skip": b"", "extra": reply + reply,
                "unsolicited": bulk(b"val:ghost") + reply}[self.lie]

    def _handle(self, c, data, state):
        buf = state["pending"] + data
        out = b""
        while True:
            args, buf = self._frame(buf)
            if args is None:
                break
            out += self._answer(args)
        state["pending"] = buf
        c.sendall(out)
        return True


@pytest.fixture
def liars():
    started = []

    def make(cls, *a, **kw):
        b = cls(*a, **kw)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def redis_pool(port, **kw):
    return simple_pool([Fake(port)], redis=True, **kw)


def pipelined_redis_gets(conn, keys):
    """GETs of keys in one write; their replies."""
    conn.send(b"".join(encode("GET", k) for k in keys))
    return conn.replies(len(keys))


def assert_own_or_error(keys, replies, ok, is_error):
    """Every reply is its key's value or an error; returns the errors."""
    errors = 0
    for k, r in zip(keys, replies):
        if is_error(r):
            errors += 1
            continue
        assert r == ok(k), "key %s got %r: another key's reply" % (k, r)
    return errors


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("lie", LIES)
def test_redis_shifted_pipeline_never_delivers_another_keys_value(
        liars, proxy_factory, lie, workers):
    """Pipelined GETs in several batches with the lie in the middle of
    one: on main, every GET behind the lie in flight got the value of
    its neighbour. With a fence per batch the shift is caught before any
    reply of the batch is delivered: those GETs get -ERR, and the next
    ones are served on a new connection."""
    b = liars(RespLiar, lie)
    proxy = proxy_factory({"alpha": redis_pool(b.port)},
                          extra_args=["--workers", str(workers)])
    own = lambda k: bulk(b"val:" + k.encode())
    is_err = lambda r: r.startswith(b"-ERR ")
    c = RespConn(proxy.port)
    try:
        errors = 0
        for rnd in range(4):
            keys = ["k%d-%d" % (rnd, i) for i in range(40)]
            if rnd == 1:
                keys[17] = "lie-%s" % lie
            errors += assert_own_or_error(keys, pipelined_redis_gets(c, keys),
                                          own, is_err)
        assert b.lied
        assert errors >= 1   # the lie was caught, not passed on
        # served again, in step
        keys = ["after-%d" % i for i in range(30)]
        assert pipelined_redis_gets(c, keys) == [own(k) for k in keys]
    finally:
        c.close()
    assert b.echoes >= 4   # a fence per batch
    assert wait_until(lambda: b.accepted >= 2, 5.0)   # the lie reset it


def test_redis_out_of_step_reply_is_named(liars, proxy_factory):
    """The GET whose reply was skipped learns why: the fence's echo came
    where its reply was due."""
    b = liars(RespLiar, "skip")
    proxy = proxy_factory({"alpha": redis_pool(b.port)},
                          extra_args=["--workers", "1"])
    c = RespConn(proxy.port)
    try:
        assert c.call("GET", "lie-alone") == OUT_OF_STEP
        assert c.call("GET", "k") == bulk(b"val:k")
    finally:
        c.close()
    stats = read_stats(proxy.stats_port)["alpha"]
    server = [v for v in stats.values() if isinstance(v, dict)][0]
    assert server["server_err"] == 1


def test_redis_fences_off_by_setting(liars, proxy_factory, workdir):
    """redis_fence_replies = false: no ECHO reaches the server."""
    b = liars(RespLiar, "skip")
    cfg = write_settings(workdir, "redis_fence_replies = false;\n",
                         name="nofence.cfg")
    proxy = proxy_factory({"alpha": redis_pool(b.port)},
                          extra_args=["--workers", "1", "-C", cfg])
    c = RespConn(proxy.port)
    try:
        for i in range(5):
            assert c.call("GET", "k%d" % i) == bulk(b"val:k%d" % i)
    finally:
        c.close()
    assert b.echoes == 0


class McLiar:
    """A ScriptedBackend script: `get KEY` answers KEY's value
    ("val-" + KEY), anything else STORED; the first `get lie...` gets
    the lie: `skip` no reply, `extra` its reply then an extra END (a
    false miss for whoever is next), `unsolicited` an END nobody asked
    for before its reply."""

    def __init__(self, lie):
        self.lie = lie
        self.lied = False
        self.lock = threading.Lock()

    def __call__(self, line):
        if not line.startswith(b"get "):
            return b"STORED\r\n"
        k = line[4:].decode()
        reply = value_reply(k, "val-" + k)
        with self.lock:
            lie = not self.lied and k.startswith("lie")
            self.lied = self.lied or lie
        if not lie:
            return reply
        return {"skip": b"", "extra": reply + b"END\r\n",
                "unsolicited": b"END\r\n" + reply}[self.lie]


def batch_args(workdir, mode="batch"):
    cfg = write_settings(workdir, 'fence_replies = "%s";\n' % mode,
                         name="fence-%s.cfg" % mode)
    return ["--workers", "1", "-C", cfg]


@pytest.mark.parametrize("lie", LIES)
def test_memcached_batch_fence_never_a_miss_or_another_value(
        liars, proxy_factory, workdir, lie):
    """The same with memcached and one "mn" per written batch: every get
    is its own value or SERVER_ERROR (never a false miss, never another
    key's value), and the proxy serves again afterwards. Fewer "mn" than
    requests reach the server."""
    script = McLiar(lie)
    b = liars(ScriptedBackend, script, mn=True)
    proxy = proxy_factory({"alpha": simple_pool([Fake(b.port)])},
                          extra_args=batch_args(workdir))
    own = lambda k: value_reply(k, "val-" + k)
    is_err = lambda r: r.startswith(b"SERVER_ERROR backend ")
    requests = 0
    with proxy.client() as c:
        errors = 0
        for rnd in range(4):
            keys = ["k%d-%d" % (rnd, i) for i in range(40)]
            if rnd == 1:
                keys[17] = "lie-%s" % lie
            c.send(b"".join(b"get %s\r\n" % k.encode() for k in keys))
            replies = [c.read_reply() for _ in keys]
            requests += len(keys)
            errors += assert_own_or_error(keys, replies, own, is_err)
        assert script.lied and errors >= 1
        keys = ["after-%d" % i for i in range(30)]
        c.send(b"".join(b"get %s\r\n" % k.encode() for k in keys))
        assert [c.read_reply() for _ in keys] == [own(k) for k in keys]
        requests += len(keys)
    assert b.accepted >= 2              # the lie reset the connection
    assert 2 <= b.fences < requests / 4  # probes and one "mn" per batch


@pytest.mark.skipif(not have_redis(), reason="redis-server not installed")
def test_real_redis_long_pipeline_fenced_every_64(proxy_factory, workdir):
    """Against a real redis-server: 1,000 pipelined SETs and GETs in one
    write come back right, and the server saw one ECHO per at most 64
    requests (the fences), not one per request."""
    server = RedisServer(workdir).start()
    try:
        proxy = proxy_factory({"r": real_redis_pool([server], timeout=2000)},
                              extra_args=["--workers", "1"])
        keys = ["long:%d" % i for i in range(1000)]
        c = RespConn(proxy.port, timeout=10)
        try:
            c.send(b"".join(encode("SET", k, "v-" + k) for k in keys))
            assert c.replies(len(keys)) == [b"+OK\r\n"] * len(keys)
            c.send(b"".join(encode("GET", k) for k in keys))
            assert c.replies(len(keys)) == \
                [bulk(("v-" + k).encode()) for k in keys]
        finally:
            c.close()
        echoes = server.commandstats().get("echo", 0)
        assert 2 * 1000 / 64 <= echoes < 2 * 1000 / 4, echoes
    finally:
        server.stop()
