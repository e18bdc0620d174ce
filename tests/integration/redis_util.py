"""Helpers for the Redis-pool integration tests (test_redis_*.py).

redis-server processes on kernel-chosen ports (stopped by PID), a raw RESP
client with a deadline on every read, and the Redis pool YAML for
nutcracker and Strata (started through harness.Proxy, like every other
proxy in this suite: -c -s -a -o, listen ports from the kernel).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import harness
from harness import HOST, HarnessError, free_port, port_accepts, wait_until
from compat_util import distinct_ports, have_nutcracker, start_proxy  # noqa: F401

REDIS_SERVER_BIN = os.environ.get("REDIS_SERVER_BIN") or \
    shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI_BIN = os.environ.get("REDIS_CLI_BIN") or \
    shutil.which("redis-cli") or "/usr/bin/redis-cli"

PROXY_KINDS = ["nutcracker", "strata"]


def have_redis():
    return os.access(REDIS_SERVER_BIN, os.X_OK) and \
        os.access(REDIS_CLI_BIN, os.X_OK)


# ----------------------------------------------------------------- RESP ----

def encode(*args):
    """A multibulk request: *N then each argument as a bulk string."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = str(a)
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


# the raw clients' errors are the harness's
Closed = harness.ConnectionClosed
Timeout = harness.ReplyTimeout


class Garbage(Exception):
    pass


class RespConn(harness.SocketPlumbing):
    """Raw RESP over TCP; every read has a deadline.  reply() returns the
    exact bytes of one whole top-level reply; value() parses it."""

    def __init__(self, port, host=HOST, timeout=harness.DEFAULT_TIMEOUT):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()   # appended in place: a large reply is not
                                 # copied once per read

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout("no complete reply in time; have %r"
                          % self.buf[:300])
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 18)
        except socket.timeout:
            raise Timeout("no complete reply in time; have %r"
                          % self.buf[:300])
        except ConnectionResetError:
            raise Closed(bytes(self.buf))
        if not data:
            raise Closed(bytes(self.buf))
        self.buf += data

    def _frame(self, pos):
        """End offset of the reply starting at pos, or None if incomplete.
        Raises Garbage on bytes that are not RESP."""
        nl = self.buf.find(b"\r\n", pos)
        if nl < 0:
            return None
        t = self.buf[pos:pos + 1]
        if t in (b"+", b"-", b":"):
            return nl + 2
        try:
            n = int(self.buf[pos + 1:nl])
        except ValueError:
            raise Garbage(self.buf[pos:nl + 2])
        if t == b"$":
            if n < 0:
                return nl + 2
            end = nl + 2 + n + 2
            return end if len(self.buf) >= end else None
        if t == b"*":
            p = nl + 2
            for _ in range(max(n, 0)):
                p = self._frame(p)
                if p is None:
                    return None
            return p
        raise Garbage(self.buf[pos:nl + 2])

    def reply(self, timeout=None):
        """Exact bytes of the next whole reply."""
        deadline = time.monotonic() + (self.timeout if timeout is None
                                       else timeout)
        for _ in range(1000000):
            end = self._frame(0) if self.buf else None
            if end is not None:
                r = bytes(self.buf[:end])
                del self.buf[:end]
                return r
            self._fill(deadline)
        raise Timeout("reply never completed")

    def replies(self, n, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None
                                       else timeout)
        return [self.reply(max(0.0, deadline - time.monotonic()))
                for _ in range(n)]

    def call(self, *args, timeout=None):
        """Send one command, return the exact bytes of its reply."""
        self.send(encode(*args))
        return self.reply(timeout)

    def outcome(self, data, timeout=None):
        """Send raw bytes; the reply bytes, or b'<closed>' (with any bytes
        received before the close in front), or b'<timeout>'."""
        try:
            self.send(data)
        except (BrokenPipeError, ConnectionResetError):
            return bytes(self.buf) + b"<closed>"
        try:
            return self.reply(timeout)
        except Closed as e:
            return e.pending + b"<closed>"
        except Timeout:
            return bytes(self.buf) + b"<timeout>"

    def read_available(self, wait=0.3):
        """(bytes that arrive within `wait` s, closed?)."""
        deadline = time.monotonic() + wait
        closed = False
        while True:
            try:
                self._fill(deadline)
            except Timeout:
                break
            except Closed:
                closed = True
                break
        data, self.buf = bytes(self.buf), bytearray()
        return data, closed

    def closed_within(self, timeout=2.0):
        """True if the peer closes within timeout (unread data dropped)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
        except Closed:
            return True
        except Timeout:
            return False


def parse(raw):
    """Bytes of one reply -> Python value (str for status, Exception-free:
    errors become ('ERR', text), bulk -> bytes, nil -> None)."""
    def go(p):
        nl = raw.index(b"\r\n", p)
        t, body = raw[p:p + 1], raw[p + 1:nl]
        if t == b"+":
            return body.decode(), nl + 2
        if t == b"-":
            return ("ERR", body.decode()), nl + 2
        if t == b":":
            return int(body), nl + 2
        n = int(body)
        if t == b"$":
            if n < 0:
                return None, nl + 2
            return raw[nl + 2:nl + 2 + n], nl + 4 + n
        if n < 0:
            return None, nl + 2
        out, q = [], nl + 2
        for _ in range(n):
            v, q = go(q)
            out.append(v)
        return out, q
    return go(0)[0]


def bulk(v):
    if v is None:
        return b"$-1\r\n"
    if isinstance(v, str):
        v = v.encode()
    return b"$%d\r\n%s\r\n" % (len(v), v)


def array(items):
    return b"*%d\r\n" % len(items) + b"".join(items)


# --------------------------------------------------------- redis-server ----

class RedisServer(harness.ServerProcess):
    """One redis-server on 127.0.0.1 in the foreground (we own its PID),
    no persistence, its own temp dir."""
    LOG_TAIL = 4000

    def __init__(self, workdir, port=None, password=None, replicaof=None,
                 master_password=None, extra_args=()):
        self.workdir = workdir
        self.port = port
        self.password = password
        self.replicaof = replicaof          # a RedisServer or a port
        self.master_password = master_password
        self.extra_args = list(extra_args)
        self.proc = None
        self.dir = None
        self.logpath = None
        self.stopped = False                # SIGSTOPped by a test

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    def _cmd(self):
        cmd = [REDIS_SERVER_BIN, "--port", str(self.port), "--bind", HOST,
               "--save", "", "--appendonly", "no", "--daemonize", "no",
               "--dir", self.dir, "--logfile", self.logpath,
               "--protected-mode", "no",
               # a replica's initial sync starts at once, not after 5 s
               "--repl-diskless-sync-delay", "0"]
        if self.password:
            cmd += ["--requirepass", self.password]
        if self.replicaof is not None:
            mport = getattr(self.replicaof, "port", self.replicaof)
            cmd += ["--replicaof", HOST, str(mport)]
            if self.master_password:
                cmd += ["--masterauth", self.master_password]
        return cmd + self.extra_args

    def start(self, timeout=5.0):
        fixed = self.port is not None
        for _ in range(1 if fixed else 5):
            if not fixed:
                self.port = free_port()
            self.dir = tempfile.mkdtemp(prefix="redis-%d-" % self.port,
                                        dir=self.workdir)
            self.logpath = os.path.join(self.dir, "redis.log")
            self.proc = subprocess.Popen(self._cmd(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            ok = wait_until(lambda: self.proc.poll() is not None
                            or self._pings(), timeout, 0.01)
            if ok and self.proc.poll() is None:
                return self
            self.stop()
        raise HarnessError("redis-server did not start on %s: %s"
                           % (self.port, self.read_log()))

    def _pings(self):
        if not port_accepts(self.port):
            return False
        try:
            with RespConn(self.port, timeout=0.5) as c:
                if self.password:
                    c.call("AUTH", self.password)
                return c.call("PING") == b"+PONG\r\n"
        except (OSError, Timeout, Closed):
            return False


    def stop(self):
        """SIGKILL by PID (test data does not matter); reaped."""
        if self.proc is not None and self.proc.poll() is None:
            # SIGKILL ends a SIGSTOPped process too; no SIGCONT first, so
            # a paused server dies without answering what it was sent
            self.proc.kill()
            self.stopped = False
            try:
                self.proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                pass

    def kill(self):
        self.stop()
        wait_until(lambda: not port_accepts(self.port), 2.0)

    def pause(self):
        """SIGSTOP: the port still accepts, nothing answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.stopped = True

    def resume(self):
        if self.stopped and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False

    def restart(self, timeout=5.0):
        self.stop()
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                return self.start(timeout=max(0.5, deadline - time.monotonic()))
            except HarnessError as e:
                last = e
                time.sleep(0.05)
        raise last or HarnessError("restart failed")

    def conn(self, timeout=harness.DEFAULT_TIMEOUT, db=None):
        c = RespConn(self.port, timeout=timeout)
        if self.password:
            assert c.call("AUTH", self.password) == b"+OK\r\n"
        if db is not None:
            assert c.call("SELECT", db) == b"+OK\r\n"
        return c

    def call(self, *args, db=None):
        """One command straight to this server; the reply bytes."""
        with self.conn(db=db) as c:
            return c.call(*args)

    def cli(self, *args, db=None, timeout=10.0):
        """redis-cli against this server; its stdout (text)."""
        argv = [REDIS_CLI_BIN, "-h", HOST, "-p", str(self.port)]
        if self.password:
            argv += ["--no-auth-warning", "-a", self.password]
        if db is not None:
            argv += ["-n", str(db)]
        r = harness.run_cli(argv + [str(a) for a in args], timeout=timeout)
        return r.stdout

    def info(self, section=None):
        raw = self.call(*(["INFO", section] if section else ["INFO"]))
        out = {}
        for line in parse(raw).decode().splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def flush(self):
        assert self.call("FLUSHALL") == b"+OK\r\n"

    def keys(self, db=None):
        """Every key in db (or the current default db 0), as a set of str."""
        with self.conn(db=db) as c:
            return set(k.decode() for k in parse(c.call("KEYS", "*")))

    def commandstats(self):
        """{command: calls} from INFO commandstats."""
        out = {}
        for k, v in self.info("commandstats").items():
            if k.startswith("cmdstat_"):
                calls = dict(x.split("=") for x in v.split(","))["calls"]
                out[k[len("cmdstat_"):]] = int(calls)
        return out

    def reset_stats(self):
        assert self.call("CONFIG", "RESETSTAT") == b"+OK\r\n"

    def wait_replica_synced(self, timeout=10.0):
        """A replica: wait until master_link_status:up and the initial
        sync is over."""
        def up():
            try:
                i = self.info("replication")
            except (OSError, Timeout, Closed):
                return False
            return i.get("master_link_status") == "up" and \
                i.get("master_sync_in_progress") == "0"
        if not wait_until(up, timeout, 0.05):
            raise HarnessError("replica %s never synced: %s"
                               % (self.addr, self.read_log()))
        return self

    def __repr__(self):
        return "<redis %s pid=%s>" % (self.addr, self.pid)


class RedisSet:
    """n redis-servers (optionally each with a replica), shared by a module;
    flush() empties them between cases, straight, never through a proxy."""

    def __init__(self, n, password=None, replicas=0):
        self.workdir = tempfile.mkdtemp(prefix="strata-redis-")
        self.servers = []
        self.replicas = []    # replicas[tier][shard]
        try:
            for _ in range(n):
                self.servers.append(RedisServer(self.workdir,
                                                password=password).start())
            for _ in range(replicas):
                tier = []
                for m in self.servers:
                    tier.append(RedisServer(self.workdir, password=password,
                                            replicaof=m,
                                            master_password=password).start())
                self.replicas.append(tier)
            for tier in self.replicas:
                for r in tier:
                    r.wait_replica_synced()
        except Exception:
            self.close()
            raise

    def all(self):
        return self.servers + [r for t in self.replicas for r in t]

    def flush(self):
        for s in self.servers:
            if s.running() and not s.stopped:
                s.flush()

    def close(self):
        for s in self.all():
            s.stop()
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(self.workdir, ignore_errors=True)


# ------------------------------------------------------------- pools ----

SHARD_NAMES = ["shard-a", "shard-b", "shard-c", "shard-d", "shard-e",
               "shard-f", "shard-g", "shard-h"]


def redis_servers(servers, names=True, weights=None):
    out = []
    for i, s in enumerate(servers):
        e = "%s:%d:%d" % (HOST, s.port, weights[i] if weights else 1)
        if names:
            e += " " + SHARD_NAMES[i]
        out.append(e)
    return out


def redis_pool(servers, hash="fnv1a_64", distribution="ketama",
               timeout=1000, names=True, **kw):
    """A twemproxy Redis pool body (listen is added by start_proxy)."""
    body = {"redis": True, "hash": hash, "distribution": distribution,
            "timeout": timeout, "auto_eject_hosts": False,
            "servers": redis_servers(servers, names)}
    body.update(kw)
    return body


def split_pool(masters, slave_tiers, hash="fnv1a_64",
               distribution="ketama", timeout=500, read_from=None, **kw):
    """Strata's Redis pool with read splitting: master + slaves tiers."""
    body = {"redis": True, "hash": hash, "distribution": distribution,
            "timeout": timeout, "auto_eject_hosts": False,
            "master": {"servers": redis_servers(masters)},
            "slaves": [{"servers": redis_servers(t)} for t in slave_tiers]}
    if read_from:
        body["read_from"] = read_from
    body.update(kw)
    return body


def start_redis_proxy(kind, workdir, pools, extra_args=(), name=None):
    """nutcracker or Strata with Redis pools (harness.Proxy via
    compat_util.start_proxy: free listen and stats ports)."""
    return start_proxy(kind, workdir, pools, extra_args=extra_args,
                       name=name)


def proxy_conn(proxy, pool=None, timeout=harness.DEFAULT_TIMEOUT):
    port = proxy.pool_port(pool) if pool else proxy.port
    return RespConn(port, timeout=timeout)


def redis_py(proxy, pool=None, **kw):
    """A redis-py client on a proxy pool (no connection-time commands:
    nutcracker does not support CLIENT SETNAME/HELLO)."""
    import redis
    port = proxy.pool_port(pool) if pool else proxy.port
    kw.setdefault("socket_timeout", 5)
    kw.setdefault("socket_connect_timeout", 5)
    return redis.Redis(host=HOST, port=port, **kw)


def cli(proxy, *args, pool=None, timeout=10.0, extra=()):
    """redis-cli against a proxy pool: CompletedProcess (text)."""
    port = proxy.pool_port(pool) if pool else proxy.port
    argv = [REDIS_CLI_BIN, "-h", HOST, "-p", str(port)] + list(extra) + \
        [str(a) for a in args]
    return harness.run_cli(argv, timeout=timeout)


def where(servers, keys, db=None):
    """{key: [indices of servers holding key]} (EXISTS on each server,
    pipelined in one write)."""
    found = {k: [] for k in keys}
    for i, s in enumerate(servers):
        if not s.running():
            continue
        with s.conn(db=db, timeout=10.0) as c:
            c.send(b"".join(encode("EXISTS", k) for k in keys))
            for k, r in zip(keys, c.replies(len(keys), timeout=10.0)):
                if r == b":1\r\n":
                    found[k].append(i)
    return found
