"""Large multi-gets, deep pipelines and many concurrent clients."""

import threading
import time

import pytest

import harness

from harness import xchg, key_owner, MCClient, FakeBackend, HOST
from conftest import simple_pool


@pytest.fixture
def pool4(memcached_factory, proxy_factory):
    servers = memcached_factory(4)
    proxy = proxy_factory({"alpha": simple_pool(servers)})
    return proxy, servers


def _send_in_background(c, blob):
    """sendall() from a thread, so that reading replies concurrently can
    never deadlock against a proxy that applies backpressure."""
    err = []
    s = c.sock.dup()  # own timeout, independent of the reader's
    s.settimeout(60)

    def run():
        try:
            s.sendall(blob)
        except Exception as e:  # reported by the caller
            err.append(e)
        finally:
            s.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, err


KEYS_1000 = ["key:%04d" % i for i in range(1000)]
STORED_1000 = [k for i, k in enumerate(KEYS_1000) if i % 3 != 0]


def _value(k):
    return ("val-%s-" % k).encode() * (1 + len(k) % 4)


def _store_1000(proxy, servers):
    with proxy.client() as c:
        blob = b"".join(b"set %s 9 0 %d\r\n%s\r\n" % (k.encode(), len(_value(k)),
                                                    _value(k))
                        for k in STORED_1000)
        t, err = _send_in_background(c, blob)
        got = c.read_expected(b"STORED\r\n" * len(STORED_1000), timeout=20)
        t.join(5)
        assert not err
        assert got == b"STORED\r\n" * len(STORED_1000)
    # the keys are on the servers, each on exactly one, spread over all 4
    owner = key_owner(servers, KEYS_1000)
    assert set(owner) == set(STORED_1000)
    per_server = [sum(1 for v in owner.values() if v == i) for i in range(4)]
    assert all(n > 0 for n in per_server), per_server


def test_get_1000_keys_across_4_servers(pool4):
    proxy, servers = pool4
    _store_1000(proxy, servers)
    with proxy.client(timeout=20) as c:
        vals = c.get_raw(KEYS_1000)
    assert len(vals) == len(STORED_1000)
    assert sorted(v[0] for v in vals) == sorted(STORED_1000)
    for k, flags, data, cas in vals:
        assert (flags, data, cas) == (9, _value(k), None), k


@pytest.mark.strata_only  # nutcracker does not keep request order
def test_get_1000_keys_in_request_order(pool4):
    proxy, servers = pool4
    _store_1000(proxy, servers)
    want = b"".join(b"VALUE %s 9 %d\r\n%s\r\n" % (k.encode(), len(_value(k)),
                                                _value(k))
                    for k in STORED_1000) + b"END\r\n"
    with proxy.client(timeout=20) as c:
        xchg(c, ("get %s\r\n" % " ".join(KEYS_1000)).encode(), want)
        # and the same keys again, in another order, with gets
        order = KEYS_1000[500:] + KEYS_1000[:500]
        c.send(("gets %s\r\n" % " ".join(order)).encode())
        vals = c.read_values()
        assert [v[0] for v in vals] == [k for k in order if k in STORED_1000]
        assert all(v[3] is not None for v in vals)


def test_10000_pipelined_requests_one_write(pool4):
    proxy, servers = pool4
    reqs, want = [], []
    for i in range(5000):
        k = b"pipe:%d" % i
        v = b"v%d" % (i * 31)
        reqs.append(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v))
        want.append(b"STORED\r\n")
        if i % 5 == 4:  # a miss
            reqs.append(b"get pipe:none:%d\r\n" % i)
            want.append(b"END\r\n")
        else:  # a hit on a key set a few requests earlier
            j = max(0, i - 3)
            kj, vj = b"pipe:%d" % j, b"v%d" % (j * 31)
            reqs.append(b"get %s\r\n" % kj)
            want.append(b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (kj, len(vj), vj))
    assert len(reqs) == 10000
    blob, expected = b"".join(reqs), b"".join(want)
    t0 = time.monotonic()
    with proxy.client(timeout=30) as c:
        t, err = _send_in_background(c, blob)
        got = c.read_expected(expected, timeout=30)
        t.join(5)
        assert not err
        if got != expected:
            # locate the first differing reply for a readable failure
            i = next((i for i in range(min(len(got), len(expected)))
                      if got[i] != expected[i]),
                     min(len(got), len(expected)))
            pytest.fail("reply stream differs at byte %d: got %r, want %r"
                        % (i, got[max(0, i - 60):i + 60],
                           expected[max(0, i - 60):i + 60]))
        xchg(c, b"get pipe:0\r\n", b"VALUE pipe:0 0 2\r\nv0\r\nEND\r\n")
    assert time.monotonic() - t0 < 30
    owner = key_owner(servers, ["pipe:%d" % i for i in range(5000)])
    assert len(owner) == 5000 and len(set(owner.values())) == 4


def test_many_concurrent_connections(pool4):
    proxy, _ = pool4
    nthreads, nreq = 50, 200
    errors, done = [], []
    start = threading.Barrier(nthreads, timeout=10)

    def worker(t):
        try:
            with MCClient(proxy.port, timeout=10) as c:
                start.wait()
                for i in range(nreq // 2):
                    k = "conc:%d:%d" % (t, i)
                    v = ("%d-%d" % (t, i)).encode() * (1 + i % 5)
                    r = c.set(k, v)
                    if r != b"STORED\r\n":
                        raise AssertionError("set %s -> %r" % (k, r))
                    got = c.get(k)
                    if got != v:
                        raise AssertionError("get %s -> %r" % (k, got))
            done.append(t)
        except Exception as e:
            errors.append((t, repr(e)))

    threads = [threading.Thread(target=worker, args=(t,), daemon=True)
               for t in range(nthreads)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    deadline = t0 + 60
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - t0
    assert not [th for th in threads if th.is_alive()], \
        "threads still running after %.1fs" % elapsed
    assert errors == []
    assert len(done) == nthreads
    assert elapsed < 60


def test_multigets_pipelined_with_sets(pool4):
    """Several multi-gets in flight at once on one connection, interleaved
    with writes to the same keys: each reply reflects the state at its
    position in the stream."""
    proxy, _ = pool4
    keys = ["mg:%d" % i for i in range(40)]
    reqs, want = [], []
    for rnd in range(20):
        for k in keys[rnd % 4::4]:
            v = ("%s/%d" % (k, rnd)).encode()
            reqs.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (k.encode(),
                                                             len(v), v))
        reqs.append(("get %s\r\n" % " ".join(keys)).encode())
        want.append(rnd)
    with proxy.client(timeout=20) as c:
        c.send(b"".join(reqs))
        state = {}
        for rnd in want:
            for k in keys[rnd % 4::4]:
                state[k] = ("%s/%d" % (k, rnd)).encode()
            vals = c.read_values()
            assert {v[0]: v[2] for v in vals} == state, "round %d" % rnd
            assert len(vals) == len(state)


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.strata_only  # nutcracker buffers without bound
def test_slow_reader_memory_bounded(pool4):
    """A client that pipelines gets for ~150 MB of replies and does not
    read: the proxy stops reading it instead of buffering everything."""
    proxy, _ = pool4
    val = b"x" * (100 * 1024)
    n = 1500
    with proxy.client(timeout=30) as c:
        xchg(c, b"set fat 0 0 %d\r\n" % len(val) + val + b"\r\n",
             b"STORED\r\n")
        rss0 = _rss_kb(proxy.pid)
        c.sock.setsockopt(__import__("socket").SOL_SOCKET,
                          __import__("socket").SO_RCVBUF, 64 * 1024)
        t, err = _send_in_background(c, b"get fat\r\n" * n)
        time.sleep(1.5)
        rss1 = _rss_kb(proxy.pid)
        one = b"VALUE fat 0 %d\r\n" % len(val) + val + b"\r\nEND\r\n"
        for i in range(n):
            got = c.read_expected(one, timeout=20)
            assert got == one, "reply %d: %r" % (i, got[:100])
        t.join(5)
        assert not err
    assert proxy.alive()
    assert harness.SANITIZED or rss1 - rss0 < 64 * 1024, \
        "proxy RSS grew %d KiB while the client was not reading" % (rss1 - rss0)


def test_order_kept_when_backends_answer_out_of_order(memcached_factory,
                                                      proxy_factory):
    """A slow server and a fast one: replies still come in request order."""
    slow = FakeBackend("slow", delay=0.25)
    try:
        (mc,) = memcached_factory(1)
        proxy = proxy_factory({"alpha": simple_pool([mc, (HOST, slow.port)])})
        keys = ["ord%d" % i for i in range(8)]
        with proxy.client() as c:
            c.send(b"".join(b"get %s\r\n" % k.encode() for k in keys))
            assert [c.read_reply() for _ in keys] == [b"END\r\n"] * len(keys)
        seen = slow.received_text()
        slow_keys = [k for k in keys if b"get %s\r\n" % k.encode() in seen]
        fast_keys = [k for k in keys if k not in slow_keys]
        assert slow_keys and fast_keys
        ks, kf = slow_keys[0].encode(), fast_keys[0].encode()
        with proxy.client() as c:
            t0 = time.monotonic()
            xchg(c, b"get %s\r\nset %s 0 0 4\r\nfast\r\nget %s\r\n"
                 b"get %s %s\r\nget %s\r\n" % (ks, kf, kf, ks, kf, ks),
                 b"END\r\nSTORED\r\nVALUE %s 0 4\r\nfast\r\nEND\r\n"
                 b"VALUE %s 0 4\r\nfast\r\nEND\r\nEND\r\n" % (kf, kf))
            assert time.monotonic() - t0 < 5
    finally:
        slow.stop()


BIG_KEYS = ["big:%d" % i for i in range(24)]


def _big(k):
    i = int(k.split(":")[1])
    return bytes((i + j) % 251 for j in range(256)) * (800 + 37 * i)


def _store_big(proxy, servers):
    with proxy.client(timeout=20) as c:
        for k in BIG_KEYS[::2] + BIG_KEYS[1::2][:6]:
            v = _big(k)
            xchg(c, b"set %s 3 0 %d\r\n" % (k.encode(), len(v)) + v + b"\r\n",
                 b"STORED\r\n")
    owner = key_owner(servers, BIG_KEYS)
    assert len(set(owner.values())) == 4
    return [k for k in BIG_KEYS if k in owner]


def test_multiget_of_large_values(pool4):
    """~4 MB of values in one multi-get reply from 4 servers."""
    proxy, servers = pool4
    stored = _store_big(proxy, servers)
    with proxy.client(timeout=20) as c:
        vals = c.get_raw(BIG_KEYS)
    assert sorted(v[0] for v in vals) == sorted(stored)
    for k, flags, data, _ in vals:
        assert flags == 3 and data == _big(k), k


@pytest.mark.strata_only  # nutcracker does not keep request order
def test_multiget_of_large_values_exact_bytes(pool4):
    proxy, servers = pool4
    stored = _store_big(proxy, servers)
    want = b"".join(b"VALUE %s 3 %d\r\n" % (k.encode(), len(_big(k))) + _big(k)
                    + b"\r\n" for k in stored) + b"END\r\n"
    with proxy.client(timeout=20) as c:
        xchg(c, ("get %s\r\n" % " ".join(BIG_KEYS)).encode(), want)
        # twice in one write
        xchg(c, ("get %s\r\n" % " ".join(BIG_KEYS)).encode() * 2, want * 2)
