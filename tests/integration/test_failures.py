"""Backends that die, hang or talk nonsense: every request still gets one
reply within the pool's timeout, and the proxy keeps serving the rest."""

import threading
import time

import pytest

from harness import xchg, key_owner, FakeBackend, HOST, TIME_SCALE, assert_silent
from conftest import simple_pool

TIMEOUT_MS = 500
SLACK = 0.75 * TIME_SCALE  # seconds allowed beyond the pool timeout
BOUND = TIMEOUT_MS / 1000.0 + SLACK
RETRY_MS = 1000


def failure_pool(servers, **kw):
    body = simple_pool(servers, timeout=TIMEOUT_MS, server_failure_limit=2,
                       auto_eject_hosts=False,
                       server_retry_timeout=RETRY_MS)
    body.update(kw)
    return body


def is_server_error(reply):
    return reply.startswith(b"SERVER_ERROR ") and reply.endswith(b"\r\n") \
        and reply.count(b"\r\n") == 1


def split_keys(proxy, servers, n=40, prefix="fk"):
    """Store n keys through the proxy; {server index: [keys]}."""
    keys = ["%s%d" % (prefix, i) for i in range(n)]
    with proxy.client() as c:
        for k in keys:
            assert c.set(k, "v-" + k) == b"STORED\r\n"
    owner = key_owner(servers, keys)
    by = {}
    for k in keys:
        by.setdefault(owner[k], []).append(k)
    assert len(by) == len(servers)
    return by


def value_reply(k, v=None):
    v = (v or ("v-" + k)).encode()
    return b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (k.encode(), len(v), v)


@pytest.fixture
def fpool(memcached_factory, proxy_factory):
    servers = memcached_factory(2)
    proxy = proxy_factory({"alpha": failure_pool(servers)})
    return proxy, servers


# ------------------------------------------------------------- killed ----

def test_killed_backend_gives_server_error_within_timeout(fpool):
    proxy, servers = fpool
    by = split_keys(proxy, servers)
    ka, kb = by[0][0], by[1][0]
    with proxy.client() as c:
        xchg(c, ("get %s\r\n" % ka).encode(), value_reply(ka))
        servers[0].kill()
        for i in range(5):
            for req in (b"get %s\r\n" % ka.encode(),
                        b"set %s 0 0 1\r\nx\r\n" % ka.encode(),
                        b"delete %s\r\n" % by[0][1].encode()):
                r, dt = c.timed(req, timeout=BOUND + 2)
                assert is_server_error(r), (i, req, r)
                assert dt < BOUND, (req, dt)
            # keys on the live server are unaffected, on the same connection
            r, dt = c.timed(b"get %s\r\n" % kb.encode())
            assert r == value_reply(kb)
            assert dt < BOUND
    assert proxy.alive()
    with proxy.client() as c:
        for k in by[1]:
            xchg(c, ("get %s\r\n" % k).encode(), value_reply(k))


def test_backend_killed_mid_run(fpool):
    """A client keeps issuing requests while a backend is SIGKILLed: every
    request gets exactly one reply within the bound."""
    proxy, servers = fpool
    by = split_keys(proxy, servers)
    ka, kb = by[0][0], by[1][0]
    results, errors = [], []
    stop = threading.Event()

    def run():
        try:
            with proxy.client(timeout=BOUND + 2) as c:
                for i in range(100000):
                    if stop.is_set():
                        return
                    k = (ka, kb)[i % 2]
                    if i % 4 < 2:
                        req = b"get %s\r\n" % k.encode()
                    else:
                        req = b"set %s 0 0 %d\r\n%s\r\n" % (
                            k.encode(), len(k) + 2, ("v-" + k).encode())
                    r, dt = c.timed(req, timeout=BOUND + 2)
                    results.append((k, req[:3], r, dt, time.monotonic()))
                    if r in (b"<timeout>", b"<closed>"):
                        return
        except Exception as e:
            errors.append(repr(e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.3)
    t_kill = time.monotonic()
    servers[0].kill()
    time.sleep(BOUND + 1.0)     # long enough for results past t_kill + BOUND
    stop.set()
    t.join(BOUND + 5)
    assert not t.is_alive()
    assert errors == []
    assert results, "no request completed"
    before = [r for r in results if r[4] < t_kill]
    after = [r for r in results if r[4] > t_kill + BOUND]
    assert before and after
    assert any(r[0] == ka for r in after)
    for k, cmd, r, dt, _ in results:
        assert dt < BOUND, (k, cmd, r, dt)
        want = value_reply(k) if cmd == b"get" else b"STORED\r\n"
        if k == kb:
            assert r == want, (k, cmd, r)
        else:
            assert r == want or is_server_error(r), (k, cmd, r)
    for k, cmd, r, dt, _ in after:
        if k == ka:
            assert is_server_error(r), (k, cmd, r)


@pytest.mark.strata_only  # nutcracker sends a broken reply, then closes
def test_multiget_with_a_dead_server(fpool):
    proxy, servers = fpool
    by = split_keys(proxy, servers)
    ka, kb = by[0][0], by[1][0]
    servers[0].kill()
    with proxy.client() as c:
        r, dt = c.timed(("get %s %s\r\n" % (ka, kb)).encode(),
                        timeout=BOUND + 2)
        assert dt < BOUND
        # exactly one reply: an error, or what the live server had
        assert is_server_error(r) or r == value_reply(kb), r
        xchg(c, ("get %s\r\n" % kb).encode(), value_reply(kb))
        assert_silent(c)


def test_restarted_backend_serves_again(fpool):
    proxy, servers = fpool
    by = split_keys(proxy, servers)
    ka = by[0][0]
    servers[0].kill()
    with proxy.client() as c:
        r, dt = c.timed(b"get %s\r\n" % ka.encode(), timeout=BOUND + 2)
        assert is_server_error(r) and dt < BOUND
        servers[0].restart()
        deadline = time.monotonic() + RETRY_MS / 1000.0 + 3.0
        r = None
        while time.monotonic() < deadline:
            r, dt = c.timed(b"set %s 0 0 3\r\nnew\r\n" % ka.encode(),
                            timeout=BOUND + 2)
            assert dt < BOUND
            if r == b"STORED\r\n":
                break
            assert is_server_error(r), r
            time.sleep(0.1)
        assert r == b"STORED\r\n", "key never served again after restart"
        xchg(c, b"get %s\r\n" % ka.encode(), value_reply(ka, "new"))
    # and it really is on the restarted server
    with servers[0].client() as d:
        assert d.get(ka) == b"new"


def test_auto_eject_and_return(memcached_factory, proxy_factory):
    """auto_eject_hosts: after server_failure_limit failures the dead server
    leaves the ring (its keys go elsewhere); after server_retry_timeout it is
    tried again and, once back, gets its keys back."""
    servers = memcached_factory(2)
    proxy = proxy_factory({"alpha": failure_pool(
        servers, auto_eject_hosts=True, server_failure_limit=2)})
    by = split_keys(proxy, servers)
    ka = by[0][0]
    servers[0].kill()
    with proxy.client() as c:
        replies = []
        for i in range(10):
            r, dt = c.timed(b"set %s 0 0 3\r\nnew\r\n" % ka.encode(),
                            timeout=BOUND + 2)
            assert dt < BOUND
            replies.append(r)
            if r == b"STORED\r\n":
                break
            assert is_server_error(r), r
        assert replies[-1] == b"STORED\r\n", replies
        with servers[1].client() as d:
            assert d.get(ka) == b"new"
        servers[0].restart()
        deadline = time.monotonic() + RETRY_MS / 1000.0 + 4.0
        back = False
        while time.monotonic() < deadline and not back:
            r, dt = c.timed(b"set %s 0 0 4\r\nback\r\n" % ka.encode(),
                            timeout=BOUND + 2)
            assert dt < BOUND
            with servers[0].client() as d:
                back = d.get(ka) == b"back"
            if not back:
                time.sleep(0.1)
        assert back, "restarted server never took its keys back"


# ------------------------------------------------------------- silent ----

# At most a fresh client's first window (CLIENT_START_WINDOW, 16): every
# get of the discovery reaches its backend before any reply comes back.
DISCOVERY_KEYS = ["sk%d" % i for i in range(16)]


def _discover(proxy, fake, keys):
    """Pipeline one get per key; keys the fake backend received are
    routed to it.  Returns (fake_keys, real_keys, replies, elapsed).
    A pipelined get that failed with the fake's connection before it was
    written never reached the fake: such keys are asked again alone, so
    that the fake sees each key routed to it."""
    with proxy.client(timeout=BOUND + 3) as c:
        t0 = time.monotonic()
        c.send(b"".join(b"get %s\r\n" % k.encode() for k in keys))
        replies = [c.read_reply() for _ in keys]
        elapsed = time.monotonic() - t0
        seen = fake.received_text()
        for k, r in zip(keys, replies):
            if r != b"END\r\n" and (b"get %s\r\n" % k.encode()) not in seen:
                c.send(b"get %s\r\n" % k.encode())
                c.read_reply()
    seen = fake.received_text()
    fake_keys = [k for k in keys if (b"get %s\r\n" % k.encode()) in seen]
    real_keys = [k for k in keys if k not in fake_keys]
    return fake_keys, real_keys, replies, elapsed


@pytest.fixture
def silent_backend():
    f = FakeBackend("silent")
    yield f
    f.stop()


def test_backend_that_never_answers(memcached_factory, proxy_factory,
                                    silent_backend):
    (mc,) = memcached_factory(1)
    proxy = proxy_factory({"alpha": failure_pool(
        [mc, (HOST, silent_backend.port)])})
    keys = DISCOVERY_KEYS
    fake_keys, real_keys, replies, elapsed = _discover(proxy, silent_backend,
                                                       keys)
    assert fake_keys and real_keys
    assert elapsed < BOUND
    for k, r in zip(keys, replies):
        if k in fake_keys:
            assert is_server_error(r), (k, r)
        else:
            assert r == b"END\r\n", (k, r)
    kf, kr = fake_keys[0], real_keys[0]
    with proxy.client() as c:
        for req in (b"get %s\r\n" % kf.encode(),
                    b"set %s 0 0 1\r\nx\r\n" % kf.encode(),
                    b"incr %s 1\r\n" % kf.encode()):
            r, dt = c.timed(req, timeout=BOUND + 2)
            assert is_server_error(r), (req, r)
            assert dt < BOUND, (req, dt)
        # a request to the live server queued behind a hanging one
        c.send(b"get %s\r\nset %s 0 0 2\r\nok\r\nget %s\r\n"
               % (kf.encode(), kr.encode(), kr.encode()))
        assert is_server_error(c.read_reply(BOUND + 2))
        assert c.read_reply() == b"STORED\r\n"
        assert c.read_reply() == value_reply(kr, "ok")
    with proxy.client() as c:
        r, dt = c.timed(b"get %s\r\n" % kr.encode())
        assert r == value_reply(kr, "ok") and dt < BOUND
    assert proxy.alive()


@pytest.mark.strata_only
def test_backend_failures_logged_with_pool_tier_and_server(proxy_factory):
    """Every backend failure line names the pool, the tier and the server;
    at the default level a failing server writes one WARN a second at
    most, with the count (each failure is an INFO line, -v 6)."""
    from compat_util import DeadPort
    with DeadPort() as hole:
        pool = simple_pool([(HOST, hole.port)])
        pool["auto_eject_hosts"] = False
        proxy = proxy_factory({"alpha": pool}, extra_args=["--workers", "1"])
        t0 = time.monotonic()
        with proxy.client() as c:
            for i in range(50):
                r, _ = c.timed(b"get k%d\r\n" % i, timeout=BOUND + 2)
                assert is_server_error(r), r
        took = time.monotonic() - t0
    lines = [l for l in proxy.read_log().splitlines()
             if "server %s:%d:1" % (HOST, hole.port) in l and " WARN " in l]
    assert lines, proxy.read_log()
    import re
    assert re.search(r"pool alpha tier master server %s:%d:1( \S+)?: backend connect "
                     r"failed" % (re.escape(HOST), hole.port), lines[0]), lines[0]
    assert "failure(s) since the last report" in lines[0]
    assert len(lines) <= took + 2, (took, lines)


# ------------------------------------------------------------ garbage ----

GARBAGE = {
    "text": ("garbage", b"HELLO I AM NOT MEMCACHED\r\n"),
    "binary": ("garbage", b"\x00\x01\xff\xfe\x80garbage\r\n"),
    "bad_value_block": ("garbage", b"VALUE sk1 0 5\r\nabcdefghij\r\nEND\r\n"),
    "truncated_value": ("garbage", b"VALUE x 0 99999\r\nab"),
    "close_mid_reply": ("close", b"VALUE sk1 0 10\r\nabc"),
    "close_at_once": ("close", b""),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_backend_answering_garbage(kind, memcached_factory, proxy_factory):
    mode, garbage = GARBAGE[kind]
    fake = FakeBackend(mode, garbage)
    try:
        (mc,) = memcached_factory(1)
        proxy = proxy_factory({"alpha": failure_pool(
            [mc, (HOST, fake.port)])})
        keys = DISCOVERY_KEYS
        fake_keys, real_keys, replies, elapsed = _discover(proxy, fake, keys)
        assert fake_keys and real_keys
        assert elapsed < BOUND + 1
        for k, r in zip(keys, replies):
            if k in fake_keys:
                assert is_server_error(r), (k, r)
            else:
                assert r == b"END\r\n", (k, r)
        kf, kr = fake_keys[0], real_keys[0]
        for _ in range(3):
            with proxy.client() as c:
                r, dt = c.timed(b"get %s\r\n" % kf.encode(), timeout=BOUND + 2)
                assert is_server_error(r) and dt < BOUND, (r, dt)
                xchg(c, b"set %s 0 0 2\r\nok\r\n" % kr.encode(), b"STORED\r\n")
                xchg(c, b"get %s\r\n" % kr.encode(), value_reply(kr, "ok"))
        assert proxy.alive()
    finally:
        fake.stop()


def test_client_gone_with_requests_in_flight(memcached_factory,
                                             proxy_factory, silent_backend):
    """Clients that disconnect while their requests hang on a backend do not
    hurt the proxy."""
    (mc,) = memcached_factory(1)
    proxy = proxy_factory({"alpha": failure_pool(
        [mc, (HOST, silent_backend.port)])})
    keys = DISCOVERY_KEYS
    fake_keys, real_keys, _, _ = _discover(proxy, silent_backend, keys)
    kf, kr = fake_keys[0].encode(), real_keys[0].encode()
    for i in range(30):
        c = proxy.client()
        c.send(b"get %s\r\nset %s 0 0 1\r\nx\r\nget %s %s\r\n"
               % (kf, kr, kr, kf) * 5)
        c.close()
    time.sleep(TIMEOUT_MS / 1000.0 + 0.2)
    assert proxy.alive()
    with proxy.client() as c:
        r, dt = c.timed(b"get %s\r\n" % kf, timeout=BOUND + 2)
        assert is_server_error(r) and dt < BOUND, (r, dt)
        xchg(c, b"set %s 0 0 2\r\nok\r\nget %s\r\n" % (kr, kr),
             b"STORED\r\n" + value_reply(kr.decode(), "ok"))
