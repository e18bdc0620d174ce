"""Helpers for the test_compat_*.py modules: Strata next to Debian's
nutcracker 0.5.0 on the same memcached servers.

Built on harness.py (free ports, Memcached and Proxy stopped by PID,
MCClient with a deadline on every read).  Only what the compat modules
need beyond it lives here: stats-port reads, a set of memcached servers
shared by a whole module, per-key placement by value marker, and a
bounded wait on a process exit.
"""

import json
import os
import shutil
import socket
import tempfile

import harness
from harness import HOST, Memcached, Proxy, free_port, stats_raw, wait_until  # noqa: F401


def nutcracker_bin():
    return harness.default_nutcracker_bin()


def strata_bin():
    return harness.default_strata_bin()


def have_nutcracker():
    b = nutcracker_bin()
    return os.path.isfile(b) and os.access(b, os.X_OK)


# ------------------------------------------------------------- stats ----



def stats_doc(port, timeout=3.0):
    return json.loads(stats_raw(port, timeout).decode())


def pool_servers(doc, pool):
    """{server name: its stats} of one pool of a stats document."""
    return {k: v for k, v in doc[pool].items() if isinstance(v, dict)}


def pool_fields(doc, pool):
    return {k: v for k, v in doc[pool].items() if not isinstance(v, dict)}


def top_fields(doc):
    return {k: v for k, v in doc.items() if not isinstance(v, dict)}


def wait_stats(proxy, pred, timeout=3.0):
    """Polls the stats port until pred(doc) holds; returns the last doc.
    nutcracker publishes a snapshot every -i ms, so counts lag."""
    last = [None]

    def ok():
        try:
            last[0] = stats_doc(proxy.stats_port)
        except (OSError, ValueError):
            return False
        return pred(last[0])

    wait_until(ok, timeout, 0.05)
    return last[0]


# --------------------------------------------------------- memcached ----

class ServerSet:
    """n memcached servers shared by every test of a module; flush() wipes
    them between cases (directly, never through a proxy)."""

    def __init__(self, n):
        self.workdir = tempfile.mkdtemp(prefix="strata-compat-")
        self.servers = []
        try:
            for _ in range(n):
                self.servers.append(Memcached(self.workdir).start())
        except Exception:
            self.close()
            raise

    def flush(self):
        for s in self.servers:
            if not s.running():
                continue
            with s.client() as c:
                assert c.call("flush_all") == b"OK\r\n"

    def close(self):
        for s in self.servers:
            s.stop()
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------- placement ----

def store_pipelined(proxy, keys, value, pool=None, timeout=10.0):
    """Sets every key to `value` through the proxy in one write; asserts
    every reply is STORED."""
    value = value if isinstance(value, bytes) else value.encode()
    blob = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k.encode(), len(value), value)
                    for k in keys)
    with proxy.client(pool=pool, timeout=timeout) as c:
        c.send(blob)
        want = b"STORED\r\n" * len(keys)
        got = c.read_expected(want, timeout=timeout)
        assert got == want, "%s: not every set was STORED: %r" % (
            proxy.kind, got[:300])


def holders(servers, keys, value, chunk=100):
    """{key: [indices of the servers whose copy of key equals value]}.
    Servers that are not running (killed on purpose) are skipped."""
    value = value if isinstance(value, bytes) else value.encode()
    found = {k: [] for k in keys}
    for i, s in enumerate(servers):
        if hasattr(s, "running") and not s.running():
            continue
        with s.client() as c:
            for j in range(0, len(keys), chunk):
                for k, _, data, _ in c.get_raw(keys[j:j + chunk]):
                    if data == value:
                        found[k].append(i)
    return found


def placement(proxy, servers, keys, marker, pool=None):
    """Stores keys through proxy with value `marker`; {key: server index}.
    Asserts that each key landed on exactly one server."""
    store_pipelined(proxy, keys, marker, pool=pool)
    where = holders(servers, keys, marker)
    bad = {k: v for k, v in where.items() if len(v) != 1}
    assert not bad, "%s: keys not on exactly one server: %r" % (
        proxy.kind, dict(list(bad.items())[:10]))
    return {k: v[0] for k, v in where.items()}


# ---------------------------------------------------------- processes ----

def distinct_ports(n):
    """n different free ports.  free_port() closes its socket, so two calls
    in a row can return the same port: keep asking (bounded)."""
    ports = []
    for _ in range(n * 20):
        if len(ports) == n:
            break
        p = free_port()
        if p not in ports:
            ports.append(p)
    assert len(ports) == n, "could not find %d distinct free ports" % n
    return ports


class DeadPort:
    """A port where nothing listens (connections are refused) and that no
    one else gets while the object lives: bound, never listening."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def start_proxy(kind, workdir, pools, extra_args=(), name=None):
    """A started harness.Proxy of `kind` ('strata' or 'nutcracker'); every
    pool without a listen address gets a free port, all different, and
    different from the stats port."""
    pools = {n: dict(b) for n, b in pools.items()}
    ports = distinct_ports(len(pools) + 1)
    for body, port in zip(pools.values(), ports[1:]):
        body.setdefault("listen", "%s:%d" % (HOST, port))
    binary = strata_bin() if kind == "strata" else nutcracker_bin()
    p = Proxy(kind, binary, workdir, pools, extra_args=list(extra_args),
              stats_port=ports[0], name=name or kind)
    return p.start()


def wait_exit(proc, timeout):
    """Exit code of a Popen within timeout seconds, or None."""
    try:
        return proc.wait(timeout=timeout)
    except Exception:
        return None


def read_pid_file(path, timeout=5.0):
    """The pid in a pid file, waiting (bounded) for it to appear."""
    pid = [None]

    def ready():
        try:
            with open(path) as f:
                text = f.read().strip()
            pid[0] = int(text)
            return True
        except (OSError, ValueError):
            return False

    wait_until(ready, timeout, 0.02)
    return pid[0]
