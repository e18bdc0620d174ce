"""Helpers for the tiered-pool (Master-Slave-L1) integration tests.

A `Tiers` object owns one topology: memcached servers per tier and a Strata
proxy with one tiered pool over them.  The tests look at each memcached
directly (raw sockets) to see what each tier holds.  Everything is on
127.0.0.1 with kernel-chosen ports; every wait is bounded.
"""

import os
import socket
import time

import pytest

from harness import HOST, TIME_SCALE, MCClient, read_stats, wait_until  # noqa: F401

TIMEOUT_MS = 500          # pool timeout of every tiered test pool
BACKFILL_TTL = 60         # backfill_ttl of every tiered test pool
SLACK = 0.75 * TIME_SCALE  # seconds allowed beyond a timeout
ASYNC_WAIT = 3.0          # bound for an async write to land


def entries(servers):
    return ["%s:%d:1" % (HOST, s.port) for s in servers]


def tiered_pool(master, slave=(), l1=(), replicas=(), **kw):
    """A pool body: `master`, `slave` lists of servers; `l1`, `replicas`
    lists of lists (one list of servers per tier)."""
    body = {
        "hash": "md5",
        "distribution": "ketama",
        "timeout": TIMEOUT_MS,
        "backfill_ttl": BACKFILL_TTL,
        "auto_eject_hosts": False,
        "master": {"servers": entries(master)},
    }
    if slave:
        body["slave"] = {"servers": entries(slave)}
    if l1:
        body["l1"] = [{"servers": entries(t)} for t in l1]
    if replicas:
        body["replicas"] = [{"servers": entries(t)} for t in replicas]
    body.update(kw)
    return body


class Tiers:
    """The standard topology: 2 masters, 1 slave, 2 L1s of one server,
    1 replica, and a proxy in front."""

    POOL = "beta"

    def __init__(self, proxy, masters, slave, l1s, replica):
        self.proxy = proxy
        self.masters = masters        # [Memcached, Memcached]
        self.slave = slave            # Memcached
        self.l1s = l1s                # [Memcached, Memcached]
        self.replica = replica        # Memcached

    @property
    def everything(self):
        return self.masters + [self.slave] + self.l1s + [self.replica]

    @property
    def not_l1(self):
        """Tiers other than master and L1: slave and replica."""
        return [self.slave, self.replica]

    @property
    def others(self):
        """Every server that is not master."""
        return [self.slave] + self.l1s + [self.replica]

    def client(self, timeout=5.0):
        return self.proxy.client(self.POOL, timeout=timeout)

    def master_of(self, key):
        """The master server holding key (asked directly); None if none."""
        found = [m for m in self.masters if held(m, key) is not None]
        assert len(found) <= 1, "key %s on both masters" % key
        return found[0] if found else None

    def tier_stats(self, tier):
        return tier_stats(self.proxy, self.POOL, tier)


def start_tiers(memcached_factory, proxy_factory, extra_args=(),
                replica=None, **pool_kw):
    """Starts the standard topology.  `replica` may be a stand-in server
    (e.g. a FakeBackend) instead of a memcached."""
    ms = memcached_factory(2)
    slave = memcached_factory(1)[0]
    l1s = memcached_factory(2)
    rep = replica if replica is not None else memcached_factory(1)[0]
    pool = tiered_pool(ms, [slave], [[l1s[0]], [l1s[1]]], [[rep]], **pool_kw)
    proxy = proxy_factory({Tiers.POOL: pool},
                          extra_args=["-i", "100"] + list(extra_args))
    return Tiers(proxy, ms, slave, l1s, rep)


# ------------------------------------------------------- direct access ----

def direct(server, timeout=3.0):
    return MCClient(server.port, timeout=timeout)


def held(server, key):
    """(flags, data) that server holds for key, or None."""
    with direct(server) as c:
        vals = c.get_raw([key])
    if not vals:
        return None
    return vals[0][1], vals[0][2]


def held_cas(server, key):
    """(data, cas) via gets on the server, or None."""
    with direct(server) as c:
        return c.gets(key)


def put(servers, key, value, flags=0, exptime=0):
    """`set` key directly on each server (no proxy)."""
    if not isinstance(servers, (list, tuple)):
        servers = [servers]
    for s in servers:
        with direct(s) as c:
            assert c.set(key, value, flags=flags, exptime=exptime) \
                == b"STORED\r\n"


def ttl(server, key):
    """Remaining TTL of key on server (-1: none), None on a miss."""
    with direct(server) as c:
        return c.meta_ttl(key)


def mc_stats(server):
    """memcached's own `stats` as {name: int-or-str}."""
    out = {}
    with direct(server) as c:
        c.send(b"stats\r\n")
        for _ in range(1000):
            line = c.readline()
            if line == b"END\r\n":
                break
            parts = line.decode().split()
            if len(parts) == 3 and parts[0] == "STAT":
                try:
                    out[parts[1]] = int(parts[2])
                except ValueError:
                    out[parts[1]] = parts[2]
    return out


def eventually(pred, timeout=ASYNC_WAIT, interval=0.02):
    """Bounded poll for asynchronous effects."""
    return wait_until(pred, timeout, interval)


def stays(pred, duration=0.3, interval=0.05):
    """pred() holds throughout `duration` seconds (for 'nothing happened'
    checks on asynchronous paths)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not pred():
            return False
        time.sleep(interval)
    return pred()


# --------------------------------------------------------------- stats ----



def tier_stats(proxy, pool, tier):
    """The "tier:<tier>" object of pool in the proxy's stats JSON."""
    doc = read_stats(proxy.stats_port)
    return doc[pool]["tier:%s" % tier]


def wait_tier_stat(proxy, pool, tier, field, pred, timeout=ASYNC_WAIT):
    """Polls the stats port until pred(value) holds; returns last value."""
    last = [None]

    def ok():
        last[0] = tier_stats(proxy, pool, tier)[field]
        return pred(last[0])

    wait_until(ok, timeout, 0.05)
    return last[0]


def settle(proxy, pool, timeout=ASYNC_WAIT):
    """Waits until no asynchronous write of pool is queued or in flight
    (every tier's async_pending is 0), so their outcome is counted."""
    def idle():
        doc = read_stats(proxy.stats_port)[pool]
        return all(v["async_pending"] == 0 for k, v in doc.items()
                   if k.startswith("tier:"))
    return wait_until(idle, timeout, 0.05)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def write_settings(workdir, text, name="strata.cfg"):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def value_reply(key, value, flags=0):
    if isinstance(value, str):
        value = value.encode()
    return b"VALUE %s %d %d\r\n%s\r\nEND\r\n" % (key.encode(), flags,
                                                 len(value), value)


# --------------------------------------------------------------- relay ----

class StuckRelay:
    """A TCP relay on 127.0.0.1 in front of a real server that forwards
    everything except reads: once a connection sends a chunk starting with
    one of `stick_on` (by default "get "/"gets "), that chunk and everything
    after it on that connection are held forever (never forwarded, never
    answered).  Other connections are unaffected.  So a proxy's read of
    this server times out while its writes (on a fresh connection) go
    through: a "hung for reads" server."""

    def __init__(self, target_port, stick_on=(b"get ", b"gets ")):
        import threading
        self.target_port = target_port
        self.stick_on = tuple(stick_on)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.socks = []
        self.threads = []
        self.stuck = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._spawn(self._accept_loop)

    def _spawn(self, fn, *args):
        import threading
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                u = socket.create_connection((HOST, self.target_port),
                                             timeout=2.0)
            except OSError:
                c.close()
                continue
            for s in (c, u):
                s.settimeout(0.1)
            with self.lock:
                self.socks += [c, u]
            self._spawn(self._pump, c, u, True)
            self._spawn(self._pump, u, c, False)

    def _pump(self, src, dst, from_client):
        stuck = False
        while not self.stopping.is_set():
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            if from_client and not stuck and data.startswith(self.stick_on):
                stuck = True
                with self.lock:
                    self.stuck += 1
            if stuck:
                continue
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass
        for t in self.threads:
            t.join(timeout=1.0)


class Blackhole:
    """A TCP server on 127.0.0.1 that accepts connections and never reads
    from them nor answers: what a peer sends piles up in the kernel
    buffers, then in the sender."""

    def __init__(self):
        import threading
        self.stopping = threading.Event()
        self.conns = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # small receive buffers (inherited by accepted sockets)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.conns.append(c)

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        self.thread.join(timeout=1.0)
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


# ------------------------------------------------------------ fixtures ----

@pytest.fixture
def relay_factory():
    """relay_factory(target_port) -> a running StuckRelay, stopped after."""
    made = []

    def make(target_port, **kw):
        r = StuckRelay(target_port, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def tiers(memcached_factory, proxy_factory):
    """The standard topology (2 masters, slave, 2 L1s, replica)."""
    return start_tiers(memcached_factory, proxy_factory)


_fence_seq = [0]


def fence(t, c, servers=None):
    """Orders the asynchronous fan-out: sets a fresh key through client c
    (the same connection, so the same worker and backend connections as the
    requests before it) and waits until every single-server tier in
    `servers` (default: all but master) holds it.  Afterwards, an async
    write queued before the fence has landed, or never will."""
    _fence_seq[0] += 1
    key = "fence-%d-%d" % (os.getpid(), _fence_seq[0])
    assert c.set(key, "f") == b"STORED\r\n"
    servers = t.others if servers is None else servers
    assert eventually(lambda: all(held(s, key) is not None for s in servers)),\
        "fence %s did not reach %s" % (key, servers)
