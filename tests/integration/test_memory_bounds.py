"""Memory bounded by configuration (issue 8, failure 1 and the limits of
failure 5): a per-request reply limit, a per-client budget of reply bytes,
a process-wide limit of buffered bytes, a timeout for partial requests and
a limit on client connections. Each is counted in the proxy's own
"stats" command (Strata only: nutcracker's JSON keeps its exact shape).
"""

import threading
import time

import pytest

import harness
from conftest import simple_pool
from harness import MCClient, xchg
from policy_util import rss_kb, write_settings

pytestmark = pytest.mark.strata_only

VAL = b"x" * (100 * 1024)


def client_stat(c, name):
    """One counter of the proxy's own "stats" command, on client c."""
    c.send(b"stats\r\n")
    value = None
    for _ in range(1000):
        line = c.readline()
        if line == b"END\r\n":
            break
        parts = line.split()
        if parts[1] == name.encode():
            value = int(parts[2])
    assert value is not None, "no STAT %s" % name
    return value


def proxy_stat(port, name):
    with MCClient(port) as c:
        return client_stat(c, name)


def limited_proxy(memcached_factory, proxy_factory, workdir, settings,
                  nservers=1):
    servers = memcached_factory(nservers)
    cfg = write_settings(workdir, settings)
    proxy = proxy_factory({"alpha": simple_pool(servers)},
                          extra_args=["-C", cfg, "--workers", "1"])
    return proxy, servers


def test_reply_too_large(memcached_factory, proxy_factory, workdir):
    """get K K K ... (5,000 copies of a 100 KB value, a 25 KB line): the
    request fails with SERVER_ERROR once its reply passes max_reply_size,
    the proxy does not hold the 500 MB, and the client keeps working."""
    proxy, _ = limited_proxy(memcached_factory, proxy_factory, workdir,
                             "max_reply_size = 8388608;\n")
    with proxy.client(timeout=30) as c:
        xchg(c, b"set KKKK 0 0 %d\r\n" % len(VAL) + VAL + b"\r\n",
             b"STORED\r\n")
        rss0 = rss_kb(proxy.pid)
        peak = [rss0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kb(proxy.pid) or 0)
                time.sleep(0.01)
        t = threading.Thread(target=sample)
        t.start()
        try:
            line = b"get " + b" ".join([b"KKKK"] * 5000) + b"\r\n"
            assert len(line) < 256 * 1024
            xchg(c, line, b"SERVER_ERROR reply too large\r\n", timeout=30)
            xchg(c, b"get KKKK\r\n",
                 b"VALUE KKKK 0 %d\r\n" % len(VAL) + VAL + b"\r\nEND\r\n")
        finally:
            stop.set()
            t.join(5)
    assert proxy_stat(proxy.port, "reply_too_large") == 1
    assert harness.SANITIZED or peak[0] - rss0 < 48 * 1024, \
        "proxy RSS grew %d KiB for one request" % (peak[0] - rss0)


def test_reply_too_large_split_multiget(memcached_factory, proxy_factory,
                                        workdir):
    """The same over two servers (per-key slots): the error, the client
    and both backend connections stay in step."""
    proxy, _ = limited_proxy(memcached_factory, proxy_factory, workdir,
                             "max_reply_size = 1048576;\n", nservers=2)
    keys = [b"k%d" % i for i in range(40)]
    with proxy.client(timeout=30) as c:
        for k in keys:
            xchg(c, b"set %s 0 0 %d\r\n" % (k, len(VAL)) + VAL + b"\r\n",
                 b"STORED\r\n")
        xchg(c, b"get " + b" ".join(keys) + b"\r\n",
             b"SERVER_ERROR reply too large\r\n", timeout=30)
        got = c.get_multi([k.decode() for k in keys[:8]])
        assert sorted(got) == sorted(k.decode() for k in keys[:8])
        xchg(c, b"get nothere\r\n", b"END\r\n")


def test_client_budget_counts_replies_in_flight(memcached_factory,
                                               proxy_factory, workdir):
    """Twenty clients pipeline gets of a 100 KB value and do not read: each
    is held to about client_max_pending (here 1 MB), counting the replies
    its requests in flight gather, not 128 values each (the issue measured
    396 MB). Every reply still arrives, in order, once they read."""
    proxy, _ = limited_proxy(memcached_factory, proxy_factory, workdir,
                             "client_max_pending = 1048576;\n")
    n, nclients = 300, 20
    with proxy.client() as c:
        xchg(c, b"set fat 0 0 %d\r\n" % len(VAL) + VAL + b"\r\n",
             b"STORED\r\n")
    rss0 = rss_kb(proxy.pid)
    clients = [MCClient(proxy.port, timeout=30) for _ in range(nclients)]
    try:
        for c in clients:
            c.sock.setsockopt(__import__("socket").SOL_SOCKET,
                              __import__("socket").SO_RCVBUF, 64 * 1024)
            c.sock.setblocking(False)
            try:
                c.sock.send(b"get fat\r\n" * n)
            except BlockingIOError:
                pass
            c.sock.setblocking(True)
            c.sock.settimeout(30)
        time.sleep(1.5)
        rss1 = rss_kb(proxy.pid)
        one = b"VALUE fat 0 %d\r\n" % len(VAL) + VAL + b"\r\nEND\r\n"
        for c in clients:
            for i in range(n):
                assert c.read_expected(one, timeout=20) == one, i
    finally:
        for c in clients:
            c.close()
    assert proxy.alive()
    assert harness.SANITIZED or rss1 - rss0 < 64 * 1024, \
        "proxy RSS grew %d KiB for %d non-reading clients" % (rss1 - rss0,
                                                              nclients)


def _send_nonblocking(c, data):
    """Sends what the socket takes now; the rest is not sent."""
    c.sock.setblocking(False)
    try:
        c.sock.send(data)
    except BlockingIOError:
        pass
    c.sock.setblocking(True)
    c.sock.settimeout(30)


def get_fat(c):
    """get fat: its first line, the value (if any) read past."""
    line = c.call("get fat")
    if line.startswith(b"VALUE"):
        c.read_exact(len(VAL) + 2)
        assert c.readline() == b"END\r\n"
    return line


def test_max_memory_sheds_new_requests(memcached_factory, proxy_factory,
                                       workdir):
    """A client that does not read makes the proxy hold more than
    max_memory: new requests from anyone get SERVER_ERROR out of memory
    before any backend is asked (counted); once it is gone, they work."""
    proxy, servers = limited_proxy(
        memcached_factory, proxy_factory, workdir,
        "max_memory = 4194304;\nclient_max_pending = 16777216;\n")
    one = b"VALUE fat 0 %d\r\n" % len(VAL) + VAL + b"\r\nEND\r\n"
    with proxy.client() as c:
        xchg(c, b"set fat 0 0 %d\r\n" % len(VAL) + VAL + b"\r\n",
             b"STORED\r\n")
    hog = MCClient(proxy.port, timeout=30)
    hog.sock.setsockopt(__import__("socket").SOL_SOCKET,
                        __import__("socket").SO_RCVBUF, 64 * 1024)
    _send_nonblocking(hog, b"get fat\r\n" * 200)
    try:
        with proxy.client() as c:
            assert harness.wait_until(
                lambda: get_fat(c) == b"SERVER_ERROR out of memory\r\n", 10)
            # the hog's requests already taken finish; then nothing moves
            gets = lambda: harness.backend_command_counts(servers)["cmd_get"]
            seen = [gets()]

            def settled():
                time.sleep(0.2)
                before, seen[0] = seen[0], gets()
                return before == seen[0]
            assert harness.wait_until(settled, 10)
            xchg(c, b"get fat\r\n", b"SERVER_ERROR out of memory\r\n")
            assert gets() == seen[0]
        assert proxy_stat(proxy.port, "out_of_memory") >= 2
        for i in range(200):
            line = hog.readline()
            if line.startswith(b"VALUE"):
                hog.read_exact(len(VAL) + 2)
                assert hog.readline() == b"END\r\n", i
            else:
                assert line == b"SERVER_ERROR out of memory\r\n", (i, line)
        assert get_fat(hog).startswith(b"VALUE")   # drained: served again
    finally:
        hog.close()
    with proxy.client() as c:
        xchg(c, b"get fat\r\n", one)


def test_partial_requests_time_out(memcached_factory, proxy_factory, workdir):
    """Slowloris: 50 connections each hold 1 MB of an unfinished set. After
    client_request_timeout (here 500 ms) without a new byte each is closed
    (counted) and its memory released; a client that keeps sending, or
    sends whole requests, is not."""
    proxy, _ = limited_proxy(memcached_factory, proxy_factory, workdir,
                             "client_request_timeout = 500;\n"
                             "max_value_size = 2097152;\n")
    rss0 = rss_kb(proxy.pid)
    part = b"set slow 0 0 %d\r\n" % (2 * 1024 * 1024) + b"y" * (1024 * 1024)
    hogs = [MCClient(proxy.port, timeout=10) for _ in range(50)]
    idle = MCClient(proxy.port, timeout=10)
    try:
        for h in hogs:
            h.send(part)
        time.sleep(0.3)
        rss1 = rss_kb(proxy.pid)
        xchg(idle, b"get a\r\n", b"END\r\n")
        for h in hogs:
            assert h.expect_closed(timeout=5 * harness.TIME_SCALE)
        time.sleep(0.3)
        rss2 = rss_kb(proxy.pid)
        xchg(idle, b"get a\r\n", b"END\r\n")   # whole requests: not closed
    finally:
        for h in hogs:
            h.close()
        idle.close()
    assert proxy_stat(proxy.port, "request_timeout") == 50
    assert harness.SANITIZED or rss1 - rss0 > 40 * 1024, (rss0, rss1)
    assert harness.SANITIZED or rss2 - rss0 < 16 * 1024, \
        "RSS still %d KiB above the start after the clients were closed" % (
            rss2 - rss0)


def test_max_clients(memcached_factory, proxy_factory, workdir):
    """Beyond max_clients a new connection is closed at once (counted; the
    warning at most once a second), the others keep working, and a place
    freed is taken again."""
    proxy, _ = limited_proxy(memcached_factory, proxy_factory, workdir,
                             "max_clients = 5;\n")
    # The harness's readiness probe was a client too: wait until the proxy
    # has seen it go, or it would hold one of the five places.
    def no_clients():
        return harness.read_stats(proxy.stats_port)["alpha"]["client_connections"] == 0
    assert harness.wait_until(no_clients, 5)
    held = [MCClient(proxy.port, timeout=5) for _ in range(5)]
    try:
        for c in held:
            xchg(c, b"get a\r\n", b"END\r\n")
        for _ in range(100):
            extra = MCClient(proxy.port, timeout=5)
            try:
                extra.sock.sendall(b"get a\r\n")
            except OSError:
                pass
            assert extra.expect_closed(timeout=2)
            extra.close()
        xchg(held[0], b"get a\r\n", b"END\r\n")
        assert client_stat(held[0], "clients_refused") == 100
        held.pop().close()
        def admitted():
            with MCClient(proxy.port, timeout=2) as c:
                try:
                    return c.call("get a") == b"END\r\n"
                except Exception:
                    return False
        assert harness.wait_until(admitted, 5)
    finally:
        for c in held:
            c.close()
    warnings = [l for l in proxy.read_log().splitlines() if "max_clients" in l]
    assert 1 <= len(warnings) <= 5, warnings


def test_max_memory_counts_a_stalled_servers_queue(proxy_factory, workdir):
    """Bytes waiting to be written to a server that does not read count
    in max_memory: sets piled up behind a stalled server shed new work
    with SERVER_ERROR out of memory before the proxy holds much more than
    the limit (before, they left the count once framed, and the proxy
    held them all)."""
    from harness import FakeBackend
    stalled = FakeBackend(mode="silent", rcvbuf=4096, read_size=1024,
                          read_pause=30)
    sender = None
    try:
        cfg = write_settings(workdir, "max_memory = 2097152;\n"
                                      "client_max_pending = 67108864;\n")
        pool = simple_pool([stalled])
        pool["timeout"] = 20000   # no write-stall timeout during the test
        proxy = proxy_factory({"alpha": pool},
                              extra_args=["-C", cfg, "--workers", "1"])
        chunk = b"x" * 256 * 1024
        # 64 sets of 256 KB, 16 MB, for a server that takes almost none:
        # more than the kernel's socket buffers can hide (a few MB)
        data = b"".join(b"set s%d 0 0 %d\r\n" % (i, len(chunk)) + chunk + b"\r\n"
                        for i in range(64))
        c = MCClient(proxy.port, timeout=30)

        def push():
            try:
                c.sock.sendall(data)
            except OSError:
                pass
        sender = threading.Thread(target=push)
        sender.start()
        # The proxy reads it all; what would take it past max_memory it
        # refuses (those replies wait, in order, behind the sets the
        # stalled server never answers). The kernel hides at most its
        # socket buffers (4 MB here), so of 16 MB most must be refused.
        sender.join(20)
        assert not sender.is_alive(), "the proxy stopped reading the client"
        shed = proxy_stat(proxy.port, "out_of_memory")
        assert shed >= 32, \
            "only %d of 64 sets refused: the bytes queued for the stalled " \
            "server were not counted" % shed
        c.close()
    finally:
        if sender is not None:
            sender.join(30)
        stalled.stop()
