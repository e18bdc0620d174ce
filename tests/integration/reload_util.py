"""Helpers for test_reload.py: live reload (SIGUSR1) of a running Strata.

- `reload()` rewrites the proxy's pool file (-c) atomically, sends SIGUSR1
  by PID and waits (bounded) until `config_generation` in the stats JSON
  goes up by one; `reload_rejected()` does the same with a file that must
  be refused (`reload_failures` +1, generation unchanged, the file and
  line in the log).
- `Load`: a bounded, checked memcached load through one pool: threads,
  one connection each, pipelined batches of get/set on keys that the
  thread owns, every reply checked.  A value read must be one that thread
  wrote for that key; a miss or an older value is "explained" only when a
  reload began after the key's last write, or was under way when it was
  written (`Load.epoch`: odd while a reload is being applied).  A
  connection is
  never re-opened: a close is a dropped connection.
- `routing_matches_nutcracker()`: keys written through Strata land on the
  memcached server that nutcracker 0.5.0, started with the same pool, picks.

Everything binds to 127.0.0.1, ports come from the kernel, processes are
signalled by PID, and every wait is bounded.
"""

import os
import re
import signal
import socket
import threading
import time

from harness import (HOST, TIME_SCALE, VALUE_RE, ConnectionClosed, MCClient,
                     ReplyTimeout, UnexpectedReply, pool_yaml, read_stats,
                     stat_lines, wait_until)
from compat_util import distinct_ports, holders, start_proxy

RELOAD_WAIT = 5.0 * TIME_SCALE     # bound for a reload to be applied
SWITCH_SLACK = 0.25 * TIME_SCALE   # after the generation moved: workers switch
NEW_FIELDS = ("config_generation", "config_source", "config_loaded_at",
              "reloads", "reload_failures")
NUTCRACKER_TOP = ("service", "source", "version", "uptime", "timestamp",
                  "total_connections", "curr_connections")


# ------------------------------------------------------------- reload ----

def write_atomically(path, text):
    """Replace path's content in one rename, so a reload never reads half
    a file."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def _stat_lines(proxy):
    """The proxy's `stats` command on its first memcached pool, as a dict
    of the reload fields; None when every pool is a Redis pool."""
    for body in proxy.pools.values():
        if body.get("redis") in (True, "true"):
            continue
        host, port = body["listen"].rsplit(":", 1)
        st = stat_lines(int(port), host=host, timeout=2)
        return {f: st[f] if f == "config_source" else int(st[f])
                for f in NEW_FIELDS if f in st}
    return None


def _log_fields(proxy):
    """The reload fields as the log tells them (a proxy with only Redis
    pools has no stats command): generations handed over and rejected."""
    log = log_since(proxy, 0)
    handed = re.findall(r"configuration (\d+) from .*handed to the workers", log)
    return {"config_generation": int(handed[-1]) if handed else 1,
            "reloads": len(handed),
            "reload_failures": len(re.findall(r"configuration from .* rejected", log))}


def stats(proxy):
    """The stats JSON (nutcracker's document, kept byte for byte) with
    Strata's reload fields merged in: they are STAT lines of the proxy's
    `stats` command (docs/operations.md)."""
    # the stats command first: the main thread takes a new configuration
    # before any worker does, so the JSON read after it is never older
    extra = _stat_lines(proxy)
    doc = read_stats(proxy.stats_port)
    doc["_stats_port"] = proxy.stats_port
    doc.update(extra if extra is not None else _log_fields(proxy))
    return doc


def _field(doc, name):
    assert name in doc, (
        "no reload field %r (live reload stats: %s) in the stats command"
        % (name, ", ".join(NEW_FIELDS)))
    return doc[name]


def _signal_reload(proxy):
    assert proxy.alive(), "proxy died before the reload:\n" + \
        proxy.diagnostics()
    os.kill(proxy.pid, signal.SIGUSR1)


def _died(proxy):
    rc = proxy.proc.poll()
    why = " (killed by SIGUSR1: the signal is not handled)" \
        if rc == -signal.SIGUSR1 else ""
    return "proxy exited with %s after SIGUSR1%s\n%s" % (
        rc, why, proxy.diagnostics())


def log_size(proxy):
    try:
        return os.path.getsize(proxy.logpath)
    except OSError:
        return 0


def log_since(proxy, offset):
    try:
        with open(proxy.logpath, "rb") as f:
            f.seek(offset)
            return f.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return ""


def _signal_and_wait(proxy, text, timeout, moved):
    """Writes `text` as the pool file, SIGUSR1, and polls the stats until
    moved(doc, gen0, reloads0, failures0) or the proxy died.  Returns the
    last doc, the log offset at the signal and the counters before."""
    before = stats(proxy)
    counts = tuple(_field(before, f) for f in
                   ("config_generation", "reloads", "reload_failures"))
    write_atomically(proxy.confpath, text)
    off = log_size(proxy)
    _signal_reload(proxy)
    last = [before]

    def done():
        if not proxy.alive():
            return True
        try:
            last[0] = stats(proxy)
        except (OSError, ValueError, ConnectionClosed):
            # a listener moved by this very reload may reset a connection
            return False
        return moved(last[0], *counts)

    wait_until(done, timeout, 0.02)
    assert proxy.alive(), _died(proxy)
    return last[0], off, counts


def reload(proxy, pools, load=(), timeout=RELOAD_WAIT, what="reload"):
    """Writes `pools` as the proxy's pool file, sends SIGUSR1, waits until
    config_generation is one more than before and `reloads` went up.
    `load`: Load objects whose epoch is moved before and after (misses of
    keys written before are then explained).  Returns the stats doc."""
    for ld in load:
        ld.bump_epoch()
    old_pools, proxy.pools = proxy.pools, pools
    doc, off, (gen0, rel0, fail0) = _signal_and_wait(
        proxy, pool_yaml(pools), timeout,
        lambda d, gen0, rel0, fail0:
            (d.get("config_generation", gen0) != gen0 and
             d.get("reloads", rel0) != rel0) or
            d.get("reload_failures", fail0) != fail0)
    if doc.get("reload_failures", fail0) != fail0:
        proxy.pools = old_pools
        raise AssertionError(
            "%s: a valid pool file was rejected (reload_failures %s -> %s); "
            "log since the signal:\n%s\n--- the file ---\n%s"
            % (what, fail0, doc.get("reload_failures"), log_since(proxy, off),
               pool_yaml(pools)))
    assert doc.get("config_generation") == gen0 + 1, (
        "%s: config_generation did not go from %d to %d within %.1f s "
        "(now %r); log since the signal:\n%s"
        % (what, gen0, gen0 + 1, timeout, doc.get("config_generation"),
           log_since(proxy, off)))
    assert doc.get("reloads") == rel0 + 1, \
        "%s: reloads %s -> %s (want +1)" % (what, rel0, doc.get("reloads"))
    assert doc.get("reload_failures") == fail0, \
        "%s: reload_failures moved on a valid file" % what
    # the generation is published when the configuration is handed over;
    # give every worker its safe point (the next turn of its loop)
    time.sleep(SWITCH_SLACK)
    for ld in load:
        ld.bump_epoch()
    return doc


def reload_rejected(proxy, text, line, timeout=RELOAD_WAIT, what="reload",
                    expect_text=None):
    """Writes `text` (invalid) as the pool file, SIGUSR1; asserts that
    reload_failures goes up by one, config_generation and reloads stay,
    and the log names the file and `line` (None: the file alone; and
    `expect_text`, if given,
    e.g. the message `strata -t` printed).  proxy.pools is unchanged (the
    running configuration).  Returns the log written since the signal."""
    doc, off, (gen0, rel0, fail0) = _signal_and_wait(
        proxy, text, timeout,
        lambda d, gen0, rel0, fail0:
            d.get("reload_failures", fail0) != fail0 or
            d.get("config_generation", gen0) != gen0)
    assert doc.get("config_generation") == gen0, (
        "%s: an invalid pool file was applied (config_generation %d -> %r)"
        "\n--- the file ---\n%s" % (what, gen0, doc.get("config_generation"),
                                    text))
    assert doc.get("reload_failures") == fail0 + 1, (
        "%s: reload_failures did not go from %d to %d within %.1f s (now %r)"
        % (what, fail0, fail0 + 1, timeout, doc.get("reload_failures")))
    assert doc.get("reloads") == rel0, "%s: reloads moved on a rejected file" \
        % what
    need = [proxy.confpath if line is None else "%s:%d" % (proxy.confpath, line)]
    need += [expect_text] if expect_text else []
    wait_until(lambda: all(n in log_since(proxy, off) for n in need),
               2.0 * TIME_SCALE, 0.02)
    log = log_since(proxy, off)
    for n in need:
        assert n in log, ("%s: the log does not say %r (file and line of the "
                          "error); log since the signal:\n%s"
                          % (what, n, log))
    # the file on disk is bad now: put the running configuration back, so
    # that a later restart or diagnostics show the truth
    write_atomically(proxy.confpath, pool_yaml(proxy.pools))
    return log


def invalid_yaml(pools, pool, key="no_such_key_for_reload", value="1"):
    """(text, line): the pool file of `pools` with an unknown key inserted
    as the first entry of `pool`; line is that entry's line number."""
    lines = pool_yaml(pools).splitlines()
    i = lines.index("%s:" % pool)
    lines.insert(i + 1, "  %s: %s" % (key, value))
    return "\n".join(lines) + "\n", i + 2


def check_stats_fields(doc):
    """Every reload field is there, and the stats JSON itself stays
    nutcracker's: no field of its own at the top level."""
    for f in NEW_FIELDS:
        _field(doc, f)
    raw = read_stats(doc["_stats_port"]) if "_stats_port" in doc else None
    if raw is not None:
        top = [k for k, v in raw.items() if not isinstance(v, dict)]
        assert top == list(NUTCRACKER_TOP), top


# --------------------------------------------------------------- load ----

class Load:
    """`conns` threads, each with one connection to `port`, sending
    batches of `depth` pipelined requests (sets and gets of its own keys)
    until stop() or `max_seconds`.  Nothing is retried or re-opened."""

    VALUE_RE = re.compile(rb"^(\S+)\|(\d+)\|x*$")

    def __init__(self, port, name="load", conns=8, depth=8, keys=40,
                 max_seconds=80.0, allow_stale=False, timeout=5.0,
                 pause=0.001):
        self.port = port
        self.name = name
        self.nconns = conns
        self.depth = depth
        self.nkeys = keys
        self.max_seconds = max_seconds * TIME_SCALE
        self.allow_stale = allow_stale      # tiered: async L1 copies lag
        self.pause = pause                  # between batches: leave CPU
        self.timeout = timeout * TIME_SCALE
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._epoch = 0
        self.ops = 0
        self.batches = 0
        self.misses_explained = 0
        self.stale_explained = 0
        self.stale_async = 0
        self.errors = []          # (thread, kind, detail)
        self.error_count = 0
        self.dropped = []         # threads whose connection closed/failed
        self.threads = []
        self.started = threading.Event()
        self._ready = 0

    # epochs: moved before each reload's signal (odd: a reload is being
    # applied, some workers may route the old way, some the new) and after
    # it is applied everywhere (even)
    @property
    def epoch(self):
        return self._epoch

    def bump_epoch(self):
        with self.lock:
            self._epoch += 1

    def start(self):
        for i in range(self.nconns):
            t = threading.Thread(target=self._run, args=(i,), daemon=True,
                                 name="%s-%d" % (self.name, i))
            t.start()
            self.threads.append(t)
        assert wait_until(lambda: self._ready == self.nconns or
                          self.error_count, 5.0 * TIME_SCALE), \
            "%s: load connections did not start" % self.name
        assert not self.error_count, self.report()
        return self

    def _error(self, tid, kind, detail):
        with self.lock:
            self.error_count += 1
            if len(self.errors) < 30:
                self.errors.append((tid, kind, detail))

    def _value(self, key, seq, tid):
        pad = (seq * 7 + tid * 13) % 90 + 10
        return b"%s|%d|%s" % (key, seq, b"x" * pad)

    def _run(self, tid):
        deadline = time.monotonic() + self.max_seconds
        try:
            c = MCClient(self.port, timeout=self.timeout)
        except OSError as e:
            self._error(tid, "connect", repr(e))
            with self.lock:
                self.dropped.append((tid, "connect: %r" % e))
            return
        keys = [b"%s:t%d:k%d" % (self.name.encode(), tid, j)
                for j in range(self.nkeys)]
        seq = {}            # key -> last seq sent in a set
        good = {}           # key -> (seq, epoch) of the last STORED set
        with self.lock:
            self._ready += 1
        n = 0
        try:
            while not self.stopping.is_set() and time.monotonic() < deadline:
                n += 1
                epoch = self.epoch
                plan = []
                out = []
                for j in range(self.depth):
                    k = keys[(n * self.depth + j * 5) % self.nkeys]
                    if (n + j) % 3 == 0 or k not in seq:
                        s = seq.get(k, 0) + 1
                        seq[k] = s
                        v = self._value(k, s, tid)
                        out.append(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v))
                        plan.append(("set", k, s))
                    else:
                        out.append(b"get %s\r\n" % k)
                        plan.append(("get", k, seq[k]))
                c.send(b"".join(out))
                for op, k, s in plan:
                    if op == "set":
                        line = c.readline()
                        if line == b"STORED\r\n":
                            good[k] = (s, epoch)
                        else:
                            self._error(tid, "set", "%s -> %r" % (k, line))
                        continue
                    vals = self._read_get(c, k, tid)
                    if vals is not None:
                        self._check_get(tid, k, s, vals, good, epoch)
                with self.lock:
                    self.ops += len(plan)
                    self.batches += 1
                if self.pause:
                    self.stopping.wait(self.pause)
        except (ConnectionClosed, BrokenPipeError, ConnectionResetError) as e:
            self._error(tid, "closed", repr(e))
            with self.lock:
                self.dropped.append((tid, repr(e)))
        except ReplyTimeout as e:
            self._error(tid, "timeout", str(e)[:300])
        except (UnexpectedReply, OSError, ValueError) as e:
            self._error(tid, "protocol", repr(e)[:300])
        finally:
            c.close()

    def _read_get(self, c, k, tid):
        """[(key, flags, data, cas)] of one single-key get; None (and an
        error counted) for a one-line error reply."""
        line = c.readline()
        if line == b"END\r\n":
            return []
        m = VALUE_RE.match(line)
        if not m:
            self._error(tid, "get", "%s -> %r" % (k, line))
            return None
        block = c.read_exact(int(m.group(3)) + 2)
        end = c.readline()
        if block[-2:] != b"\r\n" or end != b"END\r\n":
            raise UnexpectedReply(line + block + end)
        return [(m.group(1), int(m.group(2)), block[:-2], None)]

    def _check_get(self, tid, k, sent_seq, vals, good, epoch):
        # a reload that began after the key's last write and before this
        # reply arrived explains a miss or an older value: compare with
        # the epoch now, not the one the batch was sent in
        epoch = self.epoch

        def explained(w):
            return w < epoch or w % 2 == 1

        if not vals:
            g = good.get(k)
            if g is None:
                return              # never stored yet: a miss is right
            if explained(g[1]):
                with self.lock:
                    self.misses_explained += 1
                return
            self._error(tid, "miss", "%s written (seq %d) in epoch %d, "
                        "missed in epoch %d: no reload since"
                        % (k, g[0], g[1], epoch))
            return
        if len(vals) != 1 or vals[0][0] != k:
            self._error(tid, "wrong key", "get %s -> %r" % (k, vals))
            return
        m = self.VALUE_RE.match(vals[0][2])
        if not m or m.group(1) != k or vals[0][1] != 0:
            self._error(tid, "wrong value", "get %s -> %r" % (k, vals[0]))
            return
        got = int(m.group(2))
        if got > sent_seq or vals[0][2] != self._value(k, got, tid):
            self._error(tid, "wrong value", "get %s -> seq %d, never written "
                        "(last sent %d)" % (k, got, sent_seq))
            return
        g = good.get(k)
        if g is not None and got < g[0]:
            if explained(g[1]):
                with self.lock:
                    self.stale_explained += 1
            elif self.allow_stale:
                with self.lock:
                    self.stale_async += 1
            else:
                self._error(tid, "stale", "get %s -> seq %d after seq %d was "
                            "STORED in epoch %d, no reload since"
                            % (k, got, g[0], epoch))

    def progress(self):
        with self.lock:
            return self.batches

    def wait_progress(self, batches=5, timeout=5.0):
        """Every thread is still moving: the batch count grows by
        `batches` per thread within timeout."""
        start = self.progress()
        ok = wait_until(lambda: self.progress() >= start +
                        batches * self.alive_threads() or self.error_count,
                        timeout * TIME_SCALE, 0.01)
        assert ok, "%s: the load made no progress in %.1f s (%d batches)\n%s" \
            % (self.name, timeout, self.progress() - start, self.report())

    def alive_threads(self):
        return sum(1 for t in self.threads if t.is_alive())

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=self.timeout + 2.0)
        stuck = [t.name for t in self.threads if t.is_alive()]
        assert not stuck, "load threads did not stop: %s" % stuck

    def report(self):
        return ("%s: %d ops in %d batches, %d errors, %d dropped connections, "
                "explained misses %d, explained stale reads %d, async-stale "
                "reads %d; first errors:\n  %s\ndropped: %s"
                % (self.name, self.ops, self.batches, self.error_count,
                   len(self.dropped), self.misses_explained,
                   self.stale_explained, self.stale_async,
                   "\n  ".join("thread %d %s: %s" % e for e in self.errors),
                   self.dropped))

    def assert_clean(self):
        assert self.error_count == 0 and not self.dropped, self.report()
        assert self.alive_threads() == self.nconns or self.stopping.is_set(), \
            self.report()


# ------------------------------------------------------------ routing ----

_route_seq = [0]


def routing_matches_nutcracker(proxy, pool, servers, body, workdir, nkeys=150,
                               what="", only=None):
    """Keys written through `proxy`'s `pool` land where nutcracker 0.5.0
    with pool `body` puts them.  `servers`: every memcached a key could be
    on (also those removed from the pool); `only`: restrict to a subset of
    them (e.g. a tiered pool's master tier, whose routing is compared with
    a plain pool of those servers).  Returns {key: server index}."""
    _route_seq[0] += 1
    n = _route_seq[0]
    keys = [("{g%d}:rt%d:%d" % (i % 7, n, i)) if i % 3 == 0 else
            "rt%d:%d:%s" % (n, i, "abcdefgh"[i % 8] * (i % 5 + 1))
            for i in range(nkeys)]
    look = servers if only is None else only
    mark_s = "strata-%d" % n
    with proxy.client(pool, timeout=5.0) as c:
        blob = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k.encode(), len(mark_s),
                                                    mark_s.encode())
                        for k in keys)
        c.send(blob)
        want = b"STORED\r\n" * len(keys)
        got = c.read_expected(want, timeout=10.0)
        assert got == want, "%s: sets through %s not all STORED: %r" % (
            what, pool, got[:300])
    got_s = holders(look, keys, mark_s)
    nc_body = {k: v for k, v in body.items() if k != "listen"}
    nc = start_proxy("nutcracker", workdir, {pool: nc_body},
                     name="nc-route-%d" % n)
    try:
        mark_n = "nutcracker-%d" % n
        with nc.client(pool, timeout=5.0) as c:
            c.send(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (
                k.encode(), len(mark_n), mark_n.encode()) for k in keys))
            want = b"STORED\r\n" * len(keys)
            assert c.read_expected(want, timeout=10.0) == want
    finally:
        nc.stop()
    got_n = holders(look, keys, mark_n)
    strata_at = {k: v for k, v in got_s.items()}
    bad = [(k, strata_at[k], got_n[k]) for k in keys
           if len(strata_at[k]) != 1 or strata_at[k] != got_n[k]]
    assert not bad, (
        "%s: %d of %d keys not where nutcracker puts them under the new "
        "configuration (key, strata's server indices, nutcracker's): %s\n"
        "servers: %s\npool: %s"
        % (what, len(bad), nkeys, bad[:10], [s.addr for s in look],
           pool_yaml({pool: body})))
    return {k: v[0] for k, v in strata_at.items()}


# ------------------------------------------------------------- misc ----

def refuses(port, timeout=2.0):
    """True once connections to port are refused (bounded wait)."""
    def refused():
        try:
            s = socket.create_connection((HOST, port), timeout=0.3)
        except OSError:
            return True
        s.close()
        return False
    return wait_until(refused, timeout * TIME_SCALE, 0.02)


def new_listen():
    return "%s:%d" % (HOST, distinct_ports(1)[0])


def mc_stat(server, name):
    """One counter of memcached's own `stats` (a fresh connection: it
    counts itself in total_connections)."""
    st = stat_lines(server.port)
    assert name in st, "memcached %s has no stat %s" % (server.addr, name)
    return int(st[name])


# ------------------------------------------------------------- mcload ----

MCLOAD_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "..", "..", "bench", "mcload.c")


class McLoad:
    """bench/mcload (built into the test's workdir with gcc) as a second,
    pipelined load: every reply checked by mcload itself (a value must be
    the exact bytes any set of that key writes; misses are fine), a
    connection that closes or a request that times out is an error.  It
    never stops early: it runs its --duration, bounded again here."""

    def __init__(self, workdir, port, seconds, conns=4, depth=8, prefix="mcl:"):
        self.workdir = workdir
        self.port = port
        self.seconds = seconds * TIME_SCALE
        self.conns = conns
        self.depth = depth
        self.prefix = prefix
        self.proc = None
        self.out = os.path.join(workdir, "mcload.out")
        self.err = os.path.join(workdir, "mcload.err")

    @staticmethod
    def build(workdir):
        """Path of a built mcload, or None (no gcc)."""
        import shutil
        import subprocess
        gcc = shutil.which("gcc") or shutil.which("cc")
        if not gcc or not os.path.isfile(MCLOAD_SRC):
            return None
        exe = os.path.join(workdir, "mcload")
        r = subprocess.run([gcc, "-O2", "-pthread", "-o", exe, MCLOAD_SRC],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        assert r.returncode == 0, "mcload did not build: %s" % r.stdout[-2000:]
        return exe

    def start(self):
        import subprocess
        exe = self.build(self.workdir)
        if exe is None:
            return None
        argv = [exe, "-p", str(self.port), "-t", "1", "-c", str(self.conns),
                "-d", str(self.depth), "-r", "80", "-k", "2000", "-v", "64",
                "-T", "%.1f" % self.seconds, "-w", "0", "-n",
                "-o", str(int(4000 * TIME_SCALE)), "-x", self.prefix]
        self.argv = argv
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=o, stderr=e)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def finish(self):
        """Waits (bounded) for the run's end; asserts it saw no error.
        Returns the RESULT fields."""
        import subprocess
        try:
            rc = self.proc.wait(timeout=self.seconds + 20.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5.0)
            rc = "killed: did not end within its duration + 20 s"
        with open(self.out, "rb") as f:
            out = f.read().decode("utf-8", "replace")
        with open(self.err, "rb") as f:
            err = f.read().decode("utf-8", "replace")
        res = {}
        for line in out.splitlines():
            if line.startswith("RESULT "):
                for kv in line.split()[1:]:
                    k, _, v = kv.partition("=")
                    res[k] = v
        ok = rc == 0 and res and all(
            int(res.get(k, "1")) == 0 for k in
            ("errors", "err_reply", "err_proto", "timeouts", "conn_err"))
        assert ok, ("mcload (pipelined load through the reloads) saw errors:"
                    " exit %s (3: errors)\n%s\n%s\nargv: %s"
                    % (rc, out, err, " ".join(self.argv)))
        return res

    def stop(self):
        """Teardown only: kill by PID if still running."""
        if self.running():
            self.proc.kill()
            try:
                self.proc.wait(timeout=5.0)
            except Exception:
                pass
