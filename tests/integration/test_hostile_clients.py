"""Hostile and malformed clients (issue 8), side by side with memcached.

Each malformed request is sent on a fresh connection to a real memcached
1.6 and to Strata (in front of another memcached), followed by a sentinel
`get` whose reply is unique; the bytes before the sentinel's reply must be
the same from both (byte for byte, the VERSION line normalised). That is
what a `noreply` client relies on: a reply it does not expect shifts every
later reply by one.

Where Strata deliberately differs, the difference is asserted exactly:
the data block of a storage line it rejects is dropped as data (memcached
reads it as a command line and answers ERROR to it), and a storage line
with no usable byte count closes the connection (nothing can frame what
follows).

Also: fd exhaustion (accept never spins) and SIGTERM under steady load.
"""

import os
import re
import select
import signal
import socket
import threading
import time

import pytest

from compat_util import distinct_ports, strata_bin
from harness import (HOST, MCClient, Proxy, TIME_SCALE, read_stats,
                     wait_until, xchg)
from conftest import simple_pool

SENTINEL_KEY = b"__sentinel__"
SENTINEL_VAL = b"SENTINEL-VALUE-42"
SENTINEL_GET = b"get " + SENTINEL_KEY + b"\r\n"
SENTINEL_REPLY = (b"VALUE " + SENTINEL_KEY + b" 0 %d\r\n" % len(SENTINEL_VAL)
                  + SENTINEL_VAL + b"\r\nEND\r\n")
K251 = b"k" * 251


def exchange(port, data, timeout=3.0):
    """Sends data then the sentinel get on a new connection. Returns (what
    came before the sentinel's reply, closed): closed is True when the peer
    closed before the sentinel was answered."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    buf = b""
    try:
        try:
            s.sendall(data + SENTINEL_GET)
        except (BrokenPipeError, ConnectionResetError):
            pass
        deadline = time.monotonic() + timeout
        while SENTINEL_REPLY not in buf and time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return buf, True
            except socket.timeout:
                break
            if not chunk:
                return buf, True
            buf += chunk
    finally:
        s.close()
    assert SENTINEL_REPLY in buf, "no sentinel reply, got %r" % buf[:300]
    return buf[:buf.index(SENTINEL_REPLY)], False


def normalise(b):
    return re.sub(rb"VERSION [^\r]*\r\n", b"VERSION *\r\n", b)


@pytest.fixture
def side_by_side(memcached_factory, proxy_factory):
    """(memcached port, strata port, proxy): the sentinel stored in both."""
    ref, behind = memcached_factory(2)
    proxy = proxy_factory({"alpha": simple_pool([behind])})
    for port in (ref.port, proxy.port):
        with MCClient(port) as c:
            xchg(c, b"set %s 0 0 %d\r\n%s\r\n" % (SENTINEL_KEY, len(SENTINEL_VAL),
                                                   SENTINEL_VAL), b"STORED\r\n")
            xchg(c, b"set num 0 0 1\r\n5\r\n", b"STORED\r\n")
    return ref.port, proxy.port, proxy


# Requests memcached 1.6.18 and Strata answer byte for byte alike.
SAME = [
    # noreply: the error is not written (failure 3 of issue 8) ...
    b"incr num abc noreply\r\n", b"decr num abc noreply\r\n",
    b"incr num noreply\r\n", b"touch k abc noreply\r\n", b"touch k noreply\r\n",
    b"delete k 5 noreply\r\n", b"delete k noreply noreply\r\n",
    b"delete " + K251 + b" noreply\r\n", b"incr " + K251 + b" 1 noreply\r\n",
    b"touch " + K251 + b" 1 noreply\r\n", b"flush_all abc noreply\r\n",
    b"verbosity abc noreply\r\n", b"verbosity noreply\r\n",
    b"verbosity 1 noreply\r\n",
    b"set k 0 0 1 noreply\r\nxyz\r\n",          # bad data chunk, then "\r\n"
    b"set k 0 0 2000000 noreply\r\n" + b"v" * 2000000 + b"\r\n",  # too large
    b"incr num 1 noreply\r\n", b"delete num noreply\r\n",
    # ... but a line with too many words (or no key) is ERROR even so
    b"incr noreply\r\n", b"incr num 1 2 noreply\r\n",
    b"touch k 1 2 noreply\r\n", b"delete k x y noreply\r\n",
    b"delete k 0 0 noreply\r\n", b"flush_all 1 2 noreply\r\n",
    b"verbosity 1 2 noreply\r\n", b"incr num 1 noreply extra\r\n",
    b"delete noreply\r\n",                       # the key "noreply"
    # proxy-answered commands and argument counts (failure 6)
    b"gat 10\r\n", b"gats 10\r\n", b"gat 10 \r\n", b"gat\r\n", b"gats\r\n",
    b"get\r\n", b"gets\r\n", b"get  \r\n", b"gat abc\r\n", b"gats abc\r\n",
    b"gat abc k\r\n", b"verbosity\r\n", b"verbosity 1\r\n",
    b"verbosity 1 2\r\n", b"verbosity abc\r\n", b"verbosity 1 2 3\r\n",
    b"incr num\r\n", b"incr num abc\r\n", b"touch k abc\r\n",
    b"stats noreply\r\n",
]


@pytest.mark.strata_only
@pytest.mark.parametrize("request_", SAME, ids=lambda r: repr(r[:40]))
def test_same_reply_as_memcached(request_, side_by_side):
    mc_port, st_port, _ = side_by_side
    mc = exchange(mc_port, request_)
    st = exchange(st_port, request_)
    assert (normalise(st[0]), st[1]) == (normalise(mc[0]), mc[1])


@pytest.mark.strata_only
@pytest.mark.parametrize("request_", [
    b"version foo\r\n", b"version noreply\r\n", b"version foo bar\r\n",
    b"quit extra\r\n", b"quit noreply\r\n"])
def test_version_quit_with_arguments(request_, side_by_side):
    """memcached 1.6 ignores the arguments (VERSION; quit closes); Strata
    answers ERROR, as memcached before 1.6 did, because memccapable
    demands it of a server announcing a version below 1.6
    (docs/compatibility.md). One line either way: no client is shifted."""
    mc_port, st_port, _ = side_by_side
    mc = exchange(mc_port, request_)
    assert mc in ((b"", True), (b"VERSION 1.6.18\r\n", False)) or \
        normalise(mc[0]) == b"VERSION *\r\n"
    assert exchange(st_port, request_) == (b"ERROR\r\n", False)


@pytest.mark.strata_only
def test_quit_closes_as_memcached(side_by_side):
    mc_port, st_port, _ = side_by_side
    for port in (mc_port, st_port):
        with MCClient(port) as c:
            c.send(b"quit\r\n")
            assert c.expect_closed(timeout=2.0)
            assert bytes(c._pending()) == b""


# A storage line rejected with a known byte count: the line's reply is as
# memcached's; Strata drops the data block, memcached reads it as a command
# line ("x" -> ERROR). (docs/compatibility.md)
BLOCK_DROPPED = [
    (b"set k abc 0 1 noreply\r\nx\r\n", b""),
    (b"set k 0 abc 1 noreply\r\nx\r\n", b""),
    (b"cas k 0 0 1 abc noreply\r\nx\r\n", b""),
    (b"cas k 0 0 1 noreply\r\nx\r\n", b""),
    (b"set " + K251 + b" 0 0 1 noreply\r\nx\r\n", b""),
    (b"set k 0 0 1 extra noreply\r\nx\r\n", b"ERROR\r\n"),
]


@pytest.mark.strata_only
@pytest.mark.parametrize("request_,strata", BLOCK_DROPPED,
                         ids=lambda r: repr(r[:40]))
def test_rejected_storage_block_is_data(request_, strata, side_by_side):
    mc_port, st_port, _ = side_by_side
    assert exchange(mc_port, request_) == (strata + b"ERROR\r\n", False)
    assert exchange(st_port, request_) == (strata, False)


@pytest.mark.strata_only
@pytest.mark.parametrize("request_", [
    b"set k 0 0 abc noreply\r\nx\r\n", b"set k 0 0 noreply\r\nx\r\n",
    b"set k 0 0 -1 noreply\r\nx\r\n",
])
def test_unframeable_noreply_closes_silently(request_, side_by_side):
    """No byte count: the rest of the stream cannot be framed. A noreply
    client is not answered out of step: nothing is written, the
    connection is closed, the error is counted."""
    _, st_port, proxy = side_by_side
    before = read_stats(proxy.stats_port)["alpha"]["client_err"]
    assert exchange(st_port, request_) == (b"", True)
    assert wait_until(lambda: read_stats(proxy.stats_port)["alpha"]
                      ["client_err"] == before + 1, 3.0)


@pytest.mark.strata_only
def test_noreply_error_counted_and_next_reply_in_step(side_by_side):
    """The failure as reported: a noreply client that sends a bad incr then
    reads the next reply gets the reply to its next request."""
    _, st_port, proxy = side_by_side
    before = read_stats(proxy.stats_port)["alpha"]["client_err"]
    with MCClient(st_port) as c:
        c.send(b"incr num abc noreply\r\nset a 0 0 1 noreply\r\n1\r\n"
               b"incr num 1 noreply\r\nget num\r\n")
        assert c.read_expected(b"VALUE num 0 1\r\n6\r\nEND\r\n") == \
            b"VALUE num 0 1\r\n6\r\nEND\r\n"
    assert wait_until(lambda: read_stats(proxy.stats_port)["alpha"]
                      ["client_err"] == before + 1, 3.0)


# ------------------------------------------------ out of file descriptors --

def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_lines(proxy):
    try:
        with open(proxy.logpath, "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0


def fdlimit_proxy(workdir, server, ports, workers, name):
    """A started proxy under RLIMIT_NOFILE 64 (soft and hard, so it cannot
    raise it): stats on ports[0], pool alpha on ports[1]."""
    pools = {"alpha": simple_pool([server], listen="%s:%d" % (HOST, ports[1]))}
    # max_clients (default: the fd limit less what backends need) would
    # refuse clients before the fds run out: raised, so accept hits EMFILE
    cfg = os.path.join(workdir, "%s.cfg" % name)
    with open(cfg, "w") as f:
        f.write("max_clients = 1000;\n")
    proxy = Proxy("strata", strata_bin(), workdir, pools, stats_port=ports[0],
                  extra_args=["--workers", str(workers), "-C", cfg], name=name)
    plain_argv = proxy.argv
    proxy.argv = lambda: ["prlimit", "--nofile=64:64", "--"] + plain_argv()
    proxy.start()
    return proxy


@pytest.mark.strata_only
def test_fd_exhaustion_does_not_spin(memcached_factory, workdir):
    """Under RLIMIT_NOFILE 64 (soft and hard, so the proxy cannot raise
    it), 100 clients: the proxy pauses accepting instead of spinning, the
    log does not flood, and once the clients leave new ones are served."""
    server, = memcached_factory(1)
    ports = distinct_ports(2)
    proxy = fdlimit_proxy(workdir, server, ports, workers=2, name="fdlimit")
    try:
        fd_exhaustion_run(proxy, ports[1])
    finally:
        proxy.stop()   # not the factory's: stopped here, even on failure


def fd_exhaustion_run(proxy, port):
    socks = []
    try:
        assert "open files limit 64" in proxy.read_log()
        for _ in range(100):
            socks.append(socket.create_connection((HOST, port), timeout=3))
        time.sleep(0.5)             # let the first failures happen
        lines0, cpu0 = log_lines(proxy), cpu_seconds(proxy.pid)
        time.sleep(2.0)
        cpu = cpu_seconds(proxy.pid) - cpu0
        grown = log_lines(proxy) - lines0
        assert cpu < 0.3 * 2.0 * TIME_SCALE, \
            "proxy used %.2f s of CPU in 2 s" % cpu
        assert grown <= 6, "log grew by %d lines in 2 s" % grown
        assert "accept failed" in proxy.read_log()
    finally:
        for s in socks:
            s.close()
    # Served again once the proxy has seen the clients go: until it has
    # closed their sockets, a first request may still find no descriptor
    # for its backend connection (SERVER_ERROR, then the next one works).
    def served():
        with MCClient(port, timeout=5) as c:
            return c.call("set fd 0 0 2\r\nok") == b"STORED\r\n"
    assert wait_until(served, 5 * TIME_SCALE, 0.2)
    with MCClient(port) as c:
        xchg(c, b"get fd\r\n", b"VALUE fd 0 2\r\nok\r\nEND\r\n")


@pytest.mark.strata_only
def test_fd_exhaustion_stats_port_does_not_spin(memcached_factory, workdir):
    """Out of descriptors with a stats connection waiting in the stats
    port's backlog: the stats listener backs off as the pool listeners do
    (it spun at a full core before), says so in the log, and answers the
    waiting connection once descriptors are free again."""
    server, = memcached_factory(1)
    ports = distinct_ports(2)
    proxy = fdlimit_proxy(workdir, server, ports, workers=1, name="fdstats")
    socks, waiting = [], None
    try:
        for _ in range(80):
            socks.append(socket.create_connection((HOST, ports[1]), timeout=3))
        # the descriptors are gone once the pool's listener says so; only
        # then may the stats connection come (else main may still accept it)
        assert wait_until(lambda: "pool alpha: worker 0: accept failed" in proxy.read_log(),
                          10 * TIME_SCALE, 0.05), "the pool's descriptors never ran out"
        waiting = socket.create_connection((HOST, ports[0]), timeout=3)
        assert wait_until(lambda: "stats port: accept failed" in proxy.read_log(),
                          10 * TIME_SCALE, 0.05), "no backoff warning for the stats port"
        cpu0 = cpu_seconds(proxy.pid)
        time.sleep(2.0)             # the window CPU is measured over
        cpu = cpu_seconds(proxy.pid) - cpu0
        assert cpu < 0.3 * 2.0 * TIME_SCALE, "proxy used %.2f s of CPU in 2 s" % cpu
        for s in socks:
            s.close()
        socks = []
        waiting.settimeout(10 * TIME_SCALE)
        doc = b""
        while True:
            chunk = waiting.recv(65536)
            if not chunk:
                break
            doc += chunk
        assert b'"alpha"' in doc, doc[:200]
    finally:
        for s in socks:
            s.close()
        if waiting is not None:
            waiting.close()
        proxy.stop()


# ------------------------------------------------ SIGTERM under steady load --

NKEYS = 50


def expected_reply(i):
    k = i % NKEYS
    v = b"value-%d" % k
    return b"VALUE k%d 0 %d\r\n%s\r\nEND\r\n" % (k, len(v), v)


def pipelining_client(port, result):
    """Sends gets as fast as the proxy takes them and reads replies, until
    the proxy closes. result gets (requests wholly handed to the kernel,
    bytes received, how the stream ended: "eof" or an error name)."""
    s = socket.create_connection((HOST, port), timeout=5)
    s.setblocking(False)
    batch = b"".join(b"get k%d\r\n" % (j % NKEYS) for j in range(NKEYS))
    out, sent_bytes, buf, how, sending = b"", 0, b"", "timeout", True
    end = time.monotonic() + 15
    try:
        while time.monotonic() < end:
            if sending and len(out) < 65536:
                out += batch
            r, w, _ = select.select([s], [s] if sending else [], [], 0.1)
            if w:
                try:
                    n = s.send(out)
                    sent_bytes += n
                    out = out[n:]
                except BlockingIOError:
                    pass
                except OSError:
                    sending = False     # the proxy no longer takes requests
            if r:
                try:
                    chunk = s.recv(262144)
                except BlockingIOError:
                    continue
                except OSError as e:
                    how = type(e).__name__
                    break
                if not chunk:
                    how = "eof"
                    break
                buf += chunk
    finally:
        s.close()
    whole, part = divmod(sent_bytes, len(batch))
    result.append((whole * NKEYS + batch[:part].count(b"\n"), buf, how))


@pytest.mark.strata_only
def test_sigterm_under_load_stops_reading(memcached_factory, proxy_factory):
    """SIGTERM while clients pipeline steadily: the proxy stops reading
    requests, answers those it had read, closes each client, and exits
    well under its 5 s drain limit. Each client's bytes are exactly the
    replies to a prefix of its requests, every one correct, then EOF."""
    server, = memcached_factory(1)
    proxy = proxy_factory({"alpha": simple_pool([server])})
    with proxy.client() as c:
        for k in range(NKEYS):
            v = b"value-%d" % k
            xchg(c, b"set k%d 0 0 %d\r\n%s\r\n" % (k, len(v), v), b"STORED\r\n")
    results, threads = [], []
    for _ in range(4):
        t = threading.Thread(target=pipelining_client,
                             args=(proxy.port, results))
        t.start()
        threads.append(t)
    time.sleep(1.0)
    t0 = time.monotonic()
    os.kill(proxy.pid, signal.SIGTERM)
    rc = proxy.proc.wait(timeout=8)
    took = time.monotonic() - t0
    for t in threads:
        t.join(timeout=10)
    assert rc == 0
    assert took < 2.0 * TIME_SCALE, "drain took %.2f s" % took
    assert len(results) == 4
    for sent, buf, how in results:
        assert how == "eof", "the stream ended by %s" % how
        n = buf.count(b"END\r\n")
        assert 0 < n <= sent
        want = b"".join(expected_reply(i) for i in range(n))
        assert buf == want, "replies are not a correct prefix"
