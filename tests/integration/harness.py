"""Process and socket helpers for the Strata integration tests.

Everything here binds to 127.0.0.1 only, takes ports from the kernel,
stops processes by PID and puts a timeout on every blocking call, so a
broken proxy makes a test fail, never hang.
"""

import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

HOST = "127.0.0.1"
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Default bound for a single blocking read.  Tests that measure latency use
# their own, tighter, bounds.
DEFAULT_TIMEOUT = 5.0


class HarnessError(Exception):
    pass


# ---------------------------------------------------------------- ports ----

_RECENT_PORTS = collections.deque(maxlen=512)


def free_port():
    """A TCP port that the kernel just handed out on 127.0.0.1, and not
    one this process was handed recently: the socket is closed before the
    port is used, so the kernel may hand the same port out twice in a row
    (a pool's listen and the stats port would then collide)."""
    for _ in range(64):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _RECENT_PORTS:
            break
    _RECENT_PORTS.append(port)
    return port


def port_accepts(port, host=HOST, timeout=0.2):
    """True if a TCP port (or a unix socket path, given as a str) accepts."""
    try:
        if isinstance(port, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.connect(port)
            finally:
                s.close()
            return True
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# A sanitizer build (tests/run.sh --sanitizers) runs several times slower
# and keeps freed memory in quarantine: time bounds are scaled and RSS
# bounds are not checked there.
SANITIZED = os.environ.get("STRATA_SANITIZERS") == "1"
TIME_SCALE = float(os.environ.get("STRATA_TIME_SCALE", "3" if SANITIZED else "1"))


def wait_until(pred, timeout, interval=0.01):
    """Poll pred() until it is true or timeout seconds pass; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def stop_pid(pid, grace=3.0):
    """SIGTERM, wait up to `grace` seconds, then SIGKILL.  Returns True if the
    process went away on SIGTERM alone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if wait_until(lambda: not pid_alive(pid), grace, 0.02):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_until(lambda: not pid_alive(pid), 2.0, 0.02)
    return False


def _stop_popen(proc, grace=3.0):
    """Stop a child we started: SIGTERM, bounded wait, SIGKILL; reap it."""
    if proc.poll() is not None:
        return True
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
        return True
    except subprocess.TimeoutExpired:
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=3.0)
    except subprocess.TimeoutExpired:
        pass
    return False


# ------------------------------------------------------------ memcached ----

MEMCACHED_BIN = os.environ.get("MEMCACHED_BIN") or shutil.which("memcached") \
    or "/usr/bin/memcached"


class ServerProcess:
    """What the harness's server processes share: self.proc (a Popen or
    None) and self.logpath.  LOG_TAIL: read_log's last bytes, or all."""
    LOG_TAIL = None

    def read_log(self):
        try:
            with open(self.logpath, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""
        return text if self.LOG_TAIL is None else text[-self.LOG_TAIL:]

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None


class Memcached(ServerProcess):
    """One memcached server on 127.0.0.1, started in the foreground so that
    we own its PID."""

    def __init__(self, workdir, port=None, extra_args=()):
        self.workdir = workdir
        self.port = port
        self.extra_args = list(extra_args)
        self.proc = None
        self.logpath = None

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    def _cmd(self):
        cmd = [MEMCACHED_BIN]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        cmd += ["-l", HOST, "-p", str(self.port), "-U", "0", "-t", "1",
                "-m", "64"] + self.extra_args
        return cmd

    def start(self, timeout=5.0):
        fixed = self.port is not None  # restart: same port, one try
        for _ in range(1 if fixed else 5):
            if not fixed:
                self.port = free_port()
            self.logpath = os.path.join(self.workdir,
                                        "memcached-%d.log" % self.port)
            log = open(self.logpath, "ab")
            try:
                self.proc = subprocess.Popen(self._cmd(), stdout=log,
                                             stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
            finally:
                log.close()
            ok = wait_until(lambda: self.proc.poll() is not None
                            or port_accepts(self.port), timeout)
            # The port may accept because another process took it between
            # free_port() and our bind: ours then exits at once.
            if ok and not wait_until(lambda: self.proc.poll() is not None, 0.15):
                return self
            _stop_popen(self.proc)
        raise HarnessError("memcached did not start on port %s: %s"
                           % (self.port, self.read_log()))


    def kill(self):
        """SIGKILL, as a crash would; waits until the port is closed."""
        if self.running():
            self.proc.kill()
            try:
                self.proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                pass
        wait_until(lambda: not port_accepts(self.port), 2.0)

    def stop(self):
        """Stop by PID.  SIGKILL: a test server's data does not matter and
        memcached takes up to a second to act on SIGTERM."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                pass

    def restart(self, timeout=5.0):
        """Start again on the same port (after kill() or stop())."""
        self.stop()
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                return self.start(timeout=max(0.5, deadline - time.monotonic()))
            except HarnessError as e:  # port may linger briefly
                last = e
                time.sleep(0.05)
        raise last or HarnessError("restart failed")

    def client(self, timeout=DEFAULT_TIMEOUT):
        return MCClient(self.port, timeout=timeout)

    def __repr__(self):
        return "<memcached %s pid=%s>" % (self.addr, self.pid)


# --------------------------------------------------------------- yaml ----

def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def pool_yaml(pools):
    """Render {pool_name: {key: value}} as a twemproxy YAML file.  Values are
    scalars, lists of scalars (rendered as block sequences), or nested
    dicts (for tiered pools)."""
    out = []

    def emit(d, indent):
        pad = " " * indent
        for k, v in d.items():
            if isinstance(v, dict):
                out.append("%s%s:" % (pad, k))
                emit(v, indent + 2)
            elif isinstance(v, (list, tuple)):
                out.append("%s%s:" % (pad, k))
                for item in v:
                    if isinstance(item, dict):
                        first = True
                        for ik, iv in item.items():
                            lead = "- " if first else "  "
                            first = False
                            if isinstance(iv, (list, tuple)):
                                out.append("%s  %s%s: [%s]" % (
                                    pad, lead, ik,
                                    ", ".join(_yaml_scalar(x) for x in iv)))
                            else:
                                out.append("%s  %s%s: %s" % (
                                    pad, lead, ik, _yaml_scalar(iv)))
                    else:
                        out.append("%s  - %s" % (pad, _yaml_scalar(item)))
            else:
                out.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))

    for name, body in pools.items():
        out.append("%s:" % name)
        emit(body, 2)
    return "\n".join(out) + "\n"


def server_entries(servers, weight=1, names=False):
    """twemproxy server lines 'host:port:weight [name]' for Memcached objects
    or (host, port) pairs or 'host:port' strings."""
    res = []
    for i, s in enumerate(servers):
        if isinstance(s, Memcached) or hasattr(s, "port"):
            addr = "%s:%d" % (HOST, s.port)
        elif isinstance(s, tuple):
            addr = "%s:%d" % s
        else:
            addr = s
        line = "%s:%d" % (addr, weight)
        if names:
            line += " server%d" % i
        res.append(line)
    return res


# --------------------------------------------------------------- proxy ----

def default_strata_bin():
    return os.environ.get("STRATA_BIN") or os.path.join(REPO, "src", "strata")


def default_nutcracker_bin():
    return os.environ.get("NUTCRACKER_BIN") or shutil.which("nutcracker") \
        or "/usr/sbin/nutcracker"


class Proxy:
    """A proxy process (strata or nutcracker) started from a pool dict."""

    def __init__(self, kind, binary, workdir, pools, extra_args=(),
                 stats_port=None, name="proxy"):
        self.kind = kind
        self.binary = binary
        self.workdir = workdir
        self.pools = pools
        self.extra_args = list(extra_args)
        self.stats_port = stats_port or free_port()
        self.name = name
        self.proc = None
        self.confpath = os.path.join(workdir, "%s.yml" % name)
        self.logpath = os.path.join(workdir, "%s.log" % name)
        self.outpath = os.path.join(workdir, "%s.out" % name)

    @property
    def port(self):
        """Listen port of the first pool."""
        return self.pool_port(next(iter(self.pools)))

    def pool_port(self, pool):
        """TCP port of a pool, or its unix socket path."""
        listen = str(self.pools[pool]["listen"]).split()[0]
        if listen.startswith("/"):
            return listen
        return int(listen.rsplit(":", 1)[1])

    def argv(self):
        argv = [self.binary, "-c", self.confpath, "-s", str(self.stats_port),
                "-a", HOST, "-o", self.logpath]
        v = os.environ.get("PROXY_VERBOSITY")
        if v:
            argv += ["-v", v]
        return argv + self.extra_args

    def start(self, timeout=10.0):
        with open(self.confpath, "w") as f:
            f.write(pool_yaml(self.pools))
        out = open(self.outpath, "ab")
        try:
            self.proc = subprocess.Popen(self.argv(), stdout=out,
                                         stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            out.close()
        ports = [self.pool_port(p) for p in self.pools]
        ok = wait_until(lambda: self.proc.poll() is not None
                        or all(port_accepts(p) for p in ports), timeout)
        if not ok or self.proc.poll() is not None:
            rc = self.proc.poll()
            self.stop()
            raise HarnessError(
                "%s did not start (exit=%s, argv=%s)\n--- config ---\n%s"
                "--- output ---\n%s\n--- log ---\n%s"
                % (self.kind, rc, " ".join(self.argv()), pool_yaml(self.pools),
                   self.read_output(), self.read_log()))
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=3.0):
        if self.proc is None:
            return True
        return _stop_popen(self.proc, grace)

    def read_log(self, limit=20000):
        return _tail(self.logpath, limit)

    def read_output(self, limit=20000):
        return _tail(self.outpath, limit)

    def client(self, pool=None, timeout=DEFAULT_TIMEOUT):
        port = self.pool_port(pool) if pool else self.port
        if isinstance(port, str):
            return MCClient(None, timeout=timeout, unix_path=port)
        return MCClient(port, timeout=timeout)

    def diagnostics(self):
        return ("%s %s pid=%s exit=%s\n--- config %s ---\n%s"
                "--- stdout/stderr ---\n%s\n--- log %s ---\n%s"
                % (self.kind, self.name, self.pid,
                   self.proc.poll() if self.proc else None,
                   self.confpath, pool_yaml(self.pools), self.read_output(),
                   self.logpath, self.read_log()))


def _tail(path, limit):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
        text = data.decode("utf-8", "replace")
        return ("[... %d bytes cut ...]\n" % (size - limit) + text) \
            if size > limit else text
    except OSError:
        return "(no file %s)" % path


def run_cli(argv, timeout=10.0, cwd=None):
    """Run a short-lived command with a hard timeout; returns CompletedProcess
    with text stdout/stderr."""
    return subprocess.run(argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, cwd=cwd,
                          universal_newlines=True, errors="replace")


# -------------------------------------------------------------- client ----

class ConnectionClosed(Exception):
    def __init__(self, pending=b""):
        Exception.__init__(self, "connection closed by peer "
                           "(unconsumed bytes: %r)" % bytes(pending[:200]))
        self.pending = bytes(pending)


class ReplyTimeout(Exception):
    pass


class UnexpectedReply(Exception):
    def __init__(self, line):
        Exception.__init__(self, "unexpected reply line %r" % (line,))
        self.line = line


VALUE_RE = re.compile(rb"^VALUE (\S+) (\d+) (\d+)(?: (\d+))?\r\n$")


class SocketPlumbing:
    """What every raw test client shares: close (quietly), `with`, and a
    send bounded by the client's timeout.  Needs self.sock, self.timeout."""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)


class MCClient(SocketPlumbing):
    """A minimal text-protocol client.  Every read has a deadline."""

    def __init__(self, port, host=HOST, timeout=DEFAULT_TIMEOUT,
                 unix_path=None):
        self.port = port
        self.timeout = timeout
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(unix_path)
            except OSError:
                self.sock.close()
                raise
        else:
            self.sock = socket.create_connection((host, port),
                                                 timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0  # consumed prefix of buf

    # -- plumbing (close, with, send: SocketPlumbing) --
    def _pending(self):
        return self.buf[self.pos:]

    def _compact(self):
        # callers keep offsets relative to self.pos, never absolute ones
        if self.pos > 1 << 20 or self.pos == len(self.buf):
            del self.buf[:self.pos]
            self.pos = 0

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReplyTimeout("no complete reply within %.2fs; have %r"
                               % (self.timeout, bytes(self._pending()[:300])))
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 18)
        except socket.timeout:
            raise ReplyTimeout("no complete reply within deadline; have %r"
                               % bytes(self._pending()[:300]))
        except ConnectionResetError:
            raise ConnectionClosed(self._pending())
        if not data:
            raise ConnectionClosed(self._pending())
        self._compact()
        self.buf += data

    def _deadline(self, timeout):
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    # -- reads --
    def readline(self, timeout=None):
        """One line including its \r\n."""
        deadline = self._deadline(timeout)
        scanned = 0  # bytes after self.pos known to hold no \r\n start
        while True:
            i = self.buf.find(b"\r\n", self.pos + scanned)
            if i >= 0:
                line = bytes(self.buf[self.pos:i + 2])
                self.pos = i + 2
                return line
            scanned = max(0, len(self.buf) - self.pos - 1)
            self._fill(deadline)  # may compact: offsets relative to pos

    def read_exact(self, n, timeout=None):
        deadline = self._deadline(timeout)
        while len(self.buf) - self.pos < n:
            self._fill(deadline)
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    def read_expected(self, expected, timeout=None):
        """Read len(expected) bytes, but stop early as soon as the bytes
        diverge from `expected` (then return what arrived, through the end
        of the offending line) or the peer closes / the deadline passes
        (then '<closed>' / '<timeout>' is appended).  So a wrong reply fails
        fast; compare the result with ==."""
        deadline = self._deadline(timeout)
        n = len(expected)
        while True:
            have = bytes(self.buf[self.pos:self.pos + n])
            if len(have) == n:
                self.pos += n
                return have
            if not expected.startswith(have):
                # diverged: wait briefly for the rest of the offending line
                brief = min(deadline, time.monotonic() + 0.3)
                while self.buf.find(b"\r\n", self.pos + len(have) - 1) < 0:
                    try:
                        self._fill(brief)
                    except (ReplyTimeout, ConnectionClosed):
                        break
                rest = bytes(self.buf[self.pos:])
                self.pos = len(self.buf)
                return rest
            try:
                self._fill(deadline)
            except ReplyTimeout:
                rest = bytes(self.buf[self.pos:])
                self.pos = len(self.buf)
                return rest + b"<timeout>"
            except ConnectionClosed:
                rest = bytes(self.buf[self.pos:])
                self.pos = len(self.buf)
                return rest + b"<closed>"

    def read_value(self, timeout=None):
        """Reads 'VALUE ...' + block, or END.  Returns (key, flags, data, cas)
        or None on END; raises UnexpectedReply on anything else."""
        deadline = self._deadline(timeout)
        line = self.readline(max(0.0, deadline - time.monotonic()))
        if line == b"END\r\n":
            return None
        m = VALUE_RE.match(line)
        if not m:
            raise UnexpectedReply(line)
        n = int(m.group(3))
        block = self.read_exact(n + 2, max(0.0, deadline - time.monotonic()))
        if block[-2:] != b"\r\n":
            raise UnexpectedReply(line + block)
        cas = int(m.group(4)) if m.group(4) is not None else None
        return (m.group(1).decode(), int(m.group(2)), block[:-2], cas)

    def read_values(self, timeout=None, max_values=1000000):
        """All VALUE blocks up to END, as a list (order preserved)."""
        deadline = self._deadline(timeout)
        out = []
        for _ in range(max_values + 1):
            v = self.read_value(max(0.0, deadline - time.monotonic()))
            if v is None:
                return out
            out.append(v)
        raise UnexpectedReply(b"too many values")

    def read_until_end(self, timeout=None):
        """Raw bytes of a retrieval reply, through END\r\n (inclusive)."""
        deadline = self._deadline(timeout)
        parts = []
        for _ in range(1000000):
            line = self.readline(max(0.0, deadline - time.monotonic()))
            parts.append(line)
            if line == b"END\r\n":
                break
            m = VALUE_RE.match(line)
            if not m:
                raise UnexpectedReply(b"".join(parts))
            parts.append(self.read_exact(int(m.group(3)) + 2,
                                         max(0.0, deadline - time.monotonic())))
        return b"".join(parts)

    def read_reply(self, timeout=None):
        """One complete reply of any kind: a single line, or VALUE blocks
        through END.  Returns the raw bytes."""
        deadline = self._deadline(timeout)
        line = self.readline(timeout)
        if not line.startswith(b"VALUE "):
            return line
        parts = [line]
        for _ in range(1000000):
            m = VALUE_RE.match(line)
            if not m:
                raise UnexpectedReply(b"".join(parts))
            parts.append(self.read_exact(int(m.group(3)) + 2,
                                         max(0.0, deadline - time.monotonic())))
            line = self.readline(max(0.0, deadline - time.monotonic()))
            parts.append(line)
            if line == b"END\r\n":
                break
        return b"".join(parts)

    def timed(self, request, timeout=None):
        """Send a request, read one full reply: (reply bytes, seconds).  On
        timeout or close the reply is '<timeout>' / '<closed>'."""
        t0 = time.monotonic()
        try:
            self.send(request)
            r = self.read_reply(timeout)
        except ReplyTimeout:
            r = b"<timeout>"
        except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
            r = b"<closed>"
        return r, time.monotonic() - t0

    def read_available(self, wait=0.2):
        """Whatever arrives within `wait` seconds (b'' if nothing).  Returns
        (data, closed)."""
        deadline = time.monotonic() + wait
        closed = False
        while True:
            try:
                self._fill(deadline)
            except ReplyTimeout:
                break
            except ConnectionClosed:
                closed = True
                break
        data = bytes(self._pending())
        self.pos = len(self.buf)
        return data, closed

    def expect_closed(self, timeout=None):
        """True if the peer closes within timeout (any unread data is
        returned in .pending of the exception path -> we return it too)."""
        deadline = self._deadline(timeout)
        try:
            while True:
                self._fill(deadline)
        except ConnectionClosed:
            return True
        except ReplyTimeout:
            return False

    # -- requests --
    def call(self, line, timeout=None):
        """Send one line (\\r\\n added if missing), return one reply line."""
        if isinstance(line, str):
            line = line.encode()
        if not line.endswith(b"\r\n"):
            line += b"\r\n"
        self.send(line)
        return self.readline(timeout)

    def store(self, cmd, key, value, flags=0, exptime=0, cas=None,
              noreply=False, timeout=None):
        if isinstance(value, str):
            value = value.encode()
        if isinstance(key, str):
            key = key.encode()
        parts = [cmd.encode(), key, str(flags).encode(),
                 str(exptime).encode(), str(len(value)).encode()]
        if cas is not None:
            parts.append(str(cas).encode())
        if noreply:
            parts.append(b"noreply")
        self.send(b" ".join(parts) + b"\r\n" + value + b"\r\n")
        if noreply:
            return None
        return self.readline(timeout)

    def set(self, key, value, **kw):
        return self.store("set", key, value, **kw)

    def get(self, key, timeout=None):
        """Value bytes or None."""
        vals = self.get_multi([key], timeout=timeout)
        return vals.get(key)

    def get_multi(self, keys, cmd="get", timeout=None):
        """{key: data} for hits."""
        return {k: d for (k, f, d, c) in
                self.get_raw(keys, cmd=cmd, timeout=timeout)}

    def get_raw(self, keys, cmd="get", timeout=None):
        """List of (key, flags, data, cas) in reply order."""
        self.send(("%s %s\r\n" % (cmd, " ".join(keys))).encode())
        return self.read_values(timeout)

    def gets(self, key, timeout=None):
        """(data, cas) or None."""
        vals = self.get_raw([key], cmd="gets", timeout=timeout)
        if not vals:
            return None
        return vals[0][2], vals[0][3]

    def delete(self, key, timeout=None):
        return self.call("delete %s" % key, timeout)

    def meta_ttl(self, key):
        """Direct memcached only: remaining TTL (-1: none) or None on miss."""
        line = self.call("mg %s t" % key)
        if line == b"EN\r\n":
            return None
        m = re.match(rb"^HD t(-?\d+)\r\n$", line)
        if not m:
            raise UnexpectedReply(line)
        return int(m.group(1))

    def keys_present(self, keys, chunk=100):
        """Subset of keys this (direct) server holds."""
        found = set()
        keys = list(keys)
        for i in range(0, len(keys), chunk):
            found |= set(self.get_multi(keys[i:i + chunk]))
        return found


# ------------------------------------------------------- fake backends ----

class FakeBackend:
    """A TCP server on 127.0.0.1 that misbehaves.

    Every mode first answers the proxy's probe of a new connection, the
    meta no-op "mn" (sent alone), with ERROR, as memcached < 1.6 does: no
    fences, replies matched by position (ScriptedBackend can answer MN).

    mode 'silent'  : accepts, reads everything, never answers.
    mode 'garbage' : answers every received chunk with `garbage` bytes.
    mode 'close'   : answers the first chunk with `garbage` bytes (e.g. half
                     a reply), then closes the connection.
    mode 'slow'    : answers each get/gets line with END after `delay`
                     seconds (a slow but correct memcached for misses).
    Records all received bytes in .received (for routing checks).

    A slow reader: `rcvbuf` sets SO_RCVBUF of the connections (a small
    kernel buffer), and each recv takes at most `read_size` bytes and is
    followed by `read_pause` seconds of not reading."""

    def __init__(self, mode="silent", garbage=b"HELLO I AM NOT MEMCACHED\r\n",
                 delay=0.3, rcvbuf=None, read_size=65536, read_pause=0.0):
        self.mode = mode
        self.garbage = garbage
        self.delay = delay
        self.read_size = read_size
        self.read_pause = read_pause
        self.received = bytearray()
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:   # inherited by the accepted sockets
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.conns = []
        self.threads = []
        self.accepted = 0
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(0.1)
            with self.lock:
                self.conns.append(c)
                self.accepted += 1
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, c):
        state = {"pending": b""}   # what a connection's handler keeps
        while not self.stopping.is_set():
            try:
                data = c.recv(self.read_size)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.received += data
            try:
                if not self._handle(c, data, state):
                    return
            except OSError:
                return
            if self.read_pause and self.stopping.wait(self.read_pause):
                return

    def _handle(self, c, data, state):
        """Answers one received chunk as the mode says; False to stop
        serving the connection."""
        if not state.get("probed"):
            state["probed"] = True
            if data.startswith(b"mn\r\n"):
                c.sendall(b"ERROR\r\n")
                data = data[4:]
                if not data:
                    return True
        if self.mode == "garbage":
            c.sendall(self.garbage)
        elif self.mode == "close":
            c.sendall(self.garbage)
            c.close()
            return False
        elif self.mode == "slow":
            state["pending"] += data
            while b"\r\n" in state["pending"]:
                line, state["pending"] = state["pending"].split(b"\r\n", 1)
                if self.stopping.wait(self.delay):
                    return False
                if line.startswith((b"get ", b"gets ")):
                    c.sendall(b"END\r\n")
                else:
                    c.sendall(b"ERROR\r\n")
        return True

    def received_text(self):
        with self.lock:
            return bytes(self.received)

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass
        for t in self.threads:
            t.join(timeout=1.0)


class Reply:
    """What a ScriptedBackend's script may return instead of bytes: send
    `data` after `delay` seconds (the requests behind it wait), then close
    the connection if `close`, or leave it open and silent (read no more,
    answer nothing) if `hang`."""

    def __init__(self, data=b"", delay=0.0, close=False, hang=False):
        self.data = data
        self.delay = delay
        self.close = close
        self.hang = hang


class ScriptedBackend(FakeBackend):
    """A FakeBackend that speaks the protocol as the test's script says:
    it frames each request the proxy sends (a line, and the data block
    of a storage command) and answers it with script(line) -> bytes or a
    Reply (the line without "\r\n"; the answer may be any bytes, a lie
    included). Records the request lines in .lines; .accepted counts
    connections. The meta no-op "mn" (the proxy's probe, and with `mn`
    its fence after every request) is answered by the backend itself, not
    the script: MN when `mn` is true (memcached >= 1.6), else ERROR
    (memcached < 1.6); .fences counts them. Other keyword arguments go to
    FakeBackend (a slow reader)."""

    STORAGE = (b"set", b"add", b"replace", b"append", b"prepend", b"cas")

    def __init__(self, script, mn=False, **kw):
        self.script = script
        self.mn = mn
        self.lines = []
        self.fences = 0
        super().__init__(mode="scripted", **kw)

    def _frame(self, buf):
        """(line, rest) of the first whole request in buf, else (None, buf)."""
        line, sep, rest = buf.partition(b"\r\n")
        if not sep:
            return None, buf
        words = line.split()
        if words and words[0] in self.STORAGE:
            n = int(words[4])
            if len(rest) < n + 2:
                return None, buf
            rest = rest[n + 2:]
        return line, rest

    def _answers(self, buf):
        """([answer to each whole request in buf], what is left)."""
        out = []
        while True:
            line, buf = self._frame(buf)
            if line is None:
                return out, buf
            if line == b"mn":
                with self.lock:
                    self.fences += 1
                out.append(b"MN\r\n" if self.mn else b"ERROR\r\n")
                continue
            with self.lock:
                self.lines.append(line)
            out.append(self.script(line))

    def _handle(self, c, data, state):
        answers, state["pending"] = self._answers(state["pending"] + data)
        out = b""
        for a in answers:
            if not isinstance(a, Reply):
                out += a
                continue
            c.sendall(out)
            out = b""
            if self.stopping.wait(a.delay):
                return False
            c.sendall(a.data)
            if a.close:
                c.close()
            if a.close or a.hang:
                return False
        c.sendall(out)
        return True


# --------------------------------------------------------------- misc ----

def key_owner(servers, keys):
    """{key: index of the server holding it} by asking each server
    directly.  Raises if a key is on more than one server."""
    owner = {}
    for i, s in enumerate(servers):
        with s.client() as c:
            for k in c.keys_present(keys):
                if k in owner:
                    raise HarnessError("key %s on servers %d and %d"
                                       % (k, owner[k], i))
                owner[k] = i
    return owner


def xchg(c, request, expected, timeout=None):
    """Send `request` and assert that exactly `expected` comes back next."""
    if isinstance(request, str):
        request = request.encode()
    if isinstance(expected, str):
        expected = expected.encode()
    c.send(request)
    got = c.read_expected(expected, timeout)
    assert got == expected, "request %r" % (request[:200],)
    return got


def assert_silent(c, wait=0.15):
    """Nothing more arrives on c within `wait` seconds."""
    data, closed = c.read_available(wait)
    assert data == b"" and not closed, \
        "unexpected extra reply bytes %r (closed=%s)" % (data[:300], closed)


COMMAND_COUNTERS = ("cmd_get", "cmd_set", "cmd_touch", "cmd_flush",
                    "delete_hits", "delete_misses", "incr_hits",
                    "incr_misses", "decr_hits", "decr_misses", "cas_hits",
                    "cas_misses", "cas_badval", "touch_hits", "touch_misses")


def stat_lines(port, host=HOST, timeout=3.0, command="stats"):
    """A `stats` command (`command`, e.g. "stats backends") of a memcached
    or of the proxy on a fresh connection: {name: value as text}."""
    out = {}
    with MCClient(port, host=host, timeout=timeout) as c:
        c.send(command.encode() + b"\r\n")
        for _ in range(1000):
            line = c.readline()
            if line == b"END\r\n":
                break
            parts = line.decode().rstrip("\r\n").split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                out[parts[1]] = parts[2]
    return out


def backend_command_counts(servers):
    """Sum over servers of memcached's per-command counters: unchanged
    across a request means no backend saw it."""
    total = dict.fromkeys(COMMAND_COUNTERS, 0)
    for s in servers:
        st = stat_lines(s.port)
        for name in total:
            total[name] += int(st.get(name, 0))
    return total


# --------------------------------------------------------------- stats ----

def stats_raw(port, timeout=3.0):
    """The bytes a stats port sends before it closes (bounded in time)."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return data


def read_stats(port, timeout=3.0):
    """The stats port's JSON document, parsed."""
    return json.loads(stats_raw(port, timeout).decode())
