"""Command-line behaviour: -t, -V, -h, --workers, -d/-p, signals, -s."""

import os
import re
import signal
import subprocess
import time

import pytest

from harness import (run_cli, read_stats, pool_yaml, free_port, HOST,
                     port_accepts, wait_until, pid_alive, stop_pid, xchg,
                     MCClient)
from conftest import simple_pool, proxy_binary


def write(workdir, name, text):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


GOOD = """\
alpha:
  listen: 127.0.0.1:{p1}
  hash: fnv1a_64
  hash_tag: "{{}}"
  distribution: ketama
  timeout: 400
  backlog: 1024
  preconnect: false
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 3
  servers:
    - 127.0.0.1:11211:1 cache-a
    - 127.0.0.1:11212:1 cache-b

beta:
  listen: 127.0.0.1:{p2}
  hash: murmur
  distribution: modula
  servers:
    - 127.0.0.1:11213:2
"""

# name -> (text, line of the offending key (1-based), key)
BAD = {
    "unknown_key": ("""\
alpha:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  no_such_directive: 1
  servers:
    - 127.0.0.1:11211:1
""", 4, "no_such_directive"),
    "bad_hash": ("""\
alpha:
  listen: 127.0.0.1:22121
  distribution: ketama
  hash: sha9000
  servers:
    - 127.0.0.1:11211:1
""", 4, "hash"),
    "duplicate_key": ("""\
alpha:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  timeout: 400
  hash: md5
  servers:
    - 127.0.0.1:11211:1
""", 5, "hash"),
    "bad_listen": ("""\
alpha:
  hash: fnv1a_64
  listen: 127.0.0.1:notaport
  servers:
    - 127.0.0.1:11211:1
""", 3, "listen"),
    "bad_distribution": ("""\
alpha:
  listen: 127.0.0.1:22121
  distribution: roundrobin
  servers:
    - 127.0.0.1:11211:1
""", 3, "distribution"),
    "bad_timeout": ("""\
alpha:
  listen: 127.0.0.1:22121
  timeout: soon
  servers:
    - 127.0.0.1:11211:1
""", 3, "timeout"),
}


def test_check_good_file(workdir):
    path = write(workdir, "good.yml",
                 GOOD.format(p1=free_port(), p2=free_port()))
    r = run_cli([proxy_binary(), "-t", "-c", path])
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_check_long_options(workdir):
    path = write(workdir, "good.yml",
                 GOOD.format(p1=free_port(), p2=free_port()))
    r = run_cli([proxy_binary(), "--test-conf", "--conf-file=" + path])
    assert r.returncode == 0, (r.stdout, r.stderr)


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_bad_file_fails_naming_the_file(case, workdir):
    text, line, key = BAD[case]
    path = write(workdir, "bad-%s.yml" % case, text)
    r = run_cli([proxy_binary(), "-t", "-c", path, "-o",
                 os.path.join(workdir, "t.log")])
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert os.path.basename(path) in out, out


@pytest.mark.strata_only  # nutcracker -t prints only "syntax is invalid"
@pytest.mark.parametrize("case", sorted(BAD))
def test_check_bad_file_names_line_and_key(case, workdir):
    text, line, key = BAD[case]
    path = write(workdir, "bad-%s.yml" % case, text)
    r = run_cli([proxy_binary(), "-t", "-c", path])
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert os.path.basename(path) in out, out
    assert re.search(r"(line\s*:?\s*%d\b|\.yml:%d\b)" % (line, line), out), \
        "line %d not reported: %r" % (line, out)
    assert key in out, "key %r not reported: %r" % (key, out)


def test_missing_conf_file_fails(workdir):
    path = os.path.join(workdir, "does-not-exist.yml")
    r = run_cli([proxy_binary(), "-t", "-c", path])
    assert r.returncode != 0
    assert "does-not-exist.yml" in r.stdout + r.stderr


def test_version_flag():
    for flag in ("-V", "--version"):
        r = run_cli([proxy_binary(), flag])
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert re.search(r"\d+\.\d+(\.\d+)?", out), out


def test_help_flag():
    for flag in ("-h", "--help"):
        r = run_cli([proxy_binary(), flag])
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert re.search(r"usage", out, re.I), out
        for opt in ("-c", "-t", "-d", "-p", "-o", "-s", "-a", "-v", "-V"):
            assert re.search(r"(^|\s)%s\b" % re.escape(opt), out), (opt, out)


@pytest.mark.strata_only
def test_help_mentions_strata_flags():
    r = run_cli([proxy_binary(), "-h"])
    out = r.stdout + r.stderr
    assert "--workers" in out and "-C" in out, out
    assert "-u, --user" in out, out


def test_unknown_flag_fails():
    r = run_cli([proxy_binary(), "--no-such-flag"])
    assert r.returncode != 0


# ------------------------------------------------------------- workers ----

SESSION = [
    b"set a 1 0 3\r\naaa\r\n", b"get a\r\n", b"add a 0 0 1\r\nx\r\n",
    b"add b 2 0 2\r\nbb\r\n", b"gets a b c\r\n", b"append a 0 0 2\r\n++\r\n",
    b"prepend b 0 0 2\r\n--\r\n", b"get a b\r\n", b"replace c 0 0 1\r\nc\r\n",
    b"set n 0 0 2\r\n10\r\n", b"incr n 7\r\n", b"decr n 20\r\n",
    b"incr nope 1\r\n", b"incr a 1\r\n", b"touch a 100\r\n",
    b"touch nope 100\r\n", b"delete b\r\n", b"delete b\r\n",
    b"set q 0 0 1 noreply\r\nq\r\n", b"get q n a\r\n", b"cas a 0 0 1 1\r\nz\r\n",
    b"cas zz 0 0 1 1\r\nz\r\n", b"get " + b" ".join(b"k%d" % i
                                                      for i in range(60))
    + b"\r\n",
] + [b"set k%d 0 0 %d\r\n%s\r\n" % (i, len(str(i * i)), str(i * i).encode())
     for i in range(0, 60, 3)] + [
    b"get " + b" ".join(b"k%d" % i for i in range(60)) + b"\r\n",
    b"gets k0 k3 k6\r\n", b"version\r\n",
]


def run_session(proxy, conns=8):
    """The scripted session, spread round-robin over several connections
    (so several workers take part); returns the transcript."""
    clients = [proxy.client() for _ in range(conns)]
    out = []
    ci = 0
    try:
        for req in SESSION:
            c = clients[ci % conns]
            c.send(req)
            if b"noreply" in req:
                # no ack: the next request goes on the same connection, so
                # that it is ordered after this one
                out.append((req, None))
                continue
            ci += 1
            out.append((req, c.read_reply()))
    finally:
        for c in clients:
            c.close()
    return out


def _threads(pid):
    return len(os.listdir("/proc/%d/task" % pid))


@pytest.mark.strata_only  # --workers is a strata flag
def test_workers_1_and_4_answer_identically(memcached_factory, proxy_factory):
    transcripts = {}
    for n in (1, 4):
        servers = memcached_factory(2)  # fresh servers: same cas uniques
        proxy = proxy_factory({"alpha": simple_pool(servers)},
                              extra_args=["--workers", str(n)])
        if n > 1:  # a main thread plus n workers
            assert wait_until(lambda: _threads(proxy.pid) >= n + 1, 2.0), \
                "only %d threads with --workers %d" % (_threads(proxy.pid), n)
        transcripts[n] = run_session(proxy)
        proxy.stop()
        for s in servers:
            s.stop()
    t1, t4 = transcripts[1], transcripts[4]
    for (req, r1), (_, r4) in zip(t1, t4):
        assert r1 == r4, "request %r: workers=1 %r, workers=4 %r" % (
            req[:60], r1, r4)
    for req, r in t1:
        assert r is None or not r.startswith((b"SERVER_ERROR", b"CLIENT_ERROR",
                                              b"ERROR")) or \
            req.startswith(b"incr a"), (req, r)
    # spot-check content, not just equality
    d = dict(t1)
    assert d[b"get a\r\n"] == b"VALUE a 1 3\r\naaa\r\nEND\r\n"
    assert d[b"incr n 7\r\n"] == b"17\r\n"
    assert d[b"get q n a\r\n"].startswith(b"VALUE q 0 1\r\nq\r\n")


@pytest.mark.strata_only
def test_workers_many_connections_all_served(memcached_factory,
                                             proxy_factory):
    """With 4 workers, 40 connections opened at once are all served."""
    servers = memcached_factory(2)
    proxy = proxy_factory({"alpha": simple_pool(servers)},
                          extra_args=["--workers", "4"])
    clients = [proxy.client() for _ in range(40)]
    try:
        for i, c in enumerate(clients):
            c.send(b"set w%d 0 0 1\r\n%d\r\n" % (i, i % 10))
        for c in clients:
            assert c.readline() == b"STORED\r\n"
        for i, c in enumerate(clients):
            xchg(c, b"get w%d\r\n" % i,
                 b"VALUE w%d 0 1\r\n%d\r\nEND\r\n" % (i, i % 10))
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------- daemon & signals ----

def _listening_inodes(port):
    inodes = set()
    want = "%08X:%04X" % (0x0100007F, port)
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[1] == want and parts[3] == "0A":  # LISTEN
                inodes.add(parts[9])
    return inodes


def _socket_inodes(pid):
    res = set()
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            link = os.readlink(os.path.join(d, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", link)
        if m:
            res.add(m.group(1))
    return res


def test_daemonize_with_pid_file(workdir, memcached_factory):
    servers = memcached_factory(2)
    port, stats = free_port(), free_port()
    conf = write(workdir, "d.yml", pool_yaml({"alpha": dict(
        simple_pool(servers), listen="%s:%d" % (HOST, port))}))
    pidfile = os.path.join(workdir, "proxy.pid")
    log = os.path.join(workdir, "d.log")
    out = open(os.path.join(workdir, "launcher.out"), "wb")
    daemon_pid = None
    try:
        launcher = subprocess.Popen(
            [proxy_binary(), "-d", "-p", pidfile, "-c", conf, "-o", log,
             "-s", str(stats), "-a", HOST],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        rc = launcher.wait(timeout=10)
        assert rc == 0, open(os.path.join(workdir, "launcher.out")).read()
        assert wait_until(lambda: os.path.exists(pidfile) and
                          open(pidfile).read().strip().isdigit(), 5.0), \
            "no pid file"
        daemon_pid = int(open(pidfile).read().strip())
        assert daemon_pid != launcher.pid
        assert pid_alive(daemon_pid)
        assert wait_until(lambda: port_accepts(port), 5.0)
        # the pid in the file is the process that owns the listening socket
        assert wait_until(lambda: _listening_inodes(port) &
                          _socket_inodes(daemon_pid), 2.0)
        # detached: a new session, not our child
        with open("/proc/%d/stat" % daemon_pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ppid, sid = int(fields[1]), int(fields[3])
        assert ppid != os.getpid()
        assert sid != os.getsid(0), "daemon did not start a new session"
        with MCClient(port) as c:
            xchg(c, b"set dk 0 0 2\r\nok\r\nget dk\r\n",
                 b"STORED\r\nVALUE dk 0 2\r\nok\r\nEND\r\n")
        os.kill(daemon_pid, signal.SIGTERM)
        assert wait_until(lambda: not pid_alive(daemon_pid), 5.0), \
            "daemon did not stop on SIGTERM"
        assert wait_until(lambda: not port_accepts(port), 2.0)
        daemon_pid = None
    finally:
        out.close()
        if daemon_pid is not None and pid_alive(daemon_pid):
            stop_pid(daemon_pid)


def test_sigterm_stops_foreground_proxy(pool2):
    proxy, _ = pool2
    with proxy.client() as c:
        xchg(c, b"get x\r\n", b"END\r\n")
        t0 = time.monotonic()
        assert proxy.stop(grace=5.0), "did not exit on SIGTERM"
        assert time.monotonic() - t0 < 5.0
        data, closed = c.read_available(2.0)
        assert closed
    assert not port_accepts(proxy.port)


def test_other_twemproxy_flags_accepted(memcached_factory, proxy_factory):
    servers = memcached_factory(1)
    proxy = proxy_factory({"alpha": simple_pool(servers)},
                          extra_args=["-v", "6", "-i", "1000", "-m", "1024"])
    with proxy.client() as c:
        val = b"m" * 5000  # bigger than one 1 KiB mbuf
        xchg(c, b"set big 0 0 5000\r\n" + val + b"\r\nget big\r\n",
             b"STORED\r\nVALUE big 0 5000\r\n" + val + b"\r\nEND\r\n")


# --------------------------------------------------------------- stats ----



def test_stats_port_json(memcached_factory, proxy_factory):
    servers = memcached_factory(2)
    proxy = proxy_factory({"alpha": simple_pool(servers)},
                          extra_args=["-i", "100"])
    with proxy.client() as c:
        for i in range(20):
            xchg(c, b"set s%d 0 0 1\r\nx\r\n" % i, b"STORED\r\n")
    doc = None

    def counted():
        nonlocal doc
        doc = read_stats(proxy.stats_port)
        pool = doc.get("alpha", {})
        reqs = sum(v.get("requests", 0) for v in pool.values()
                   if isinstance(v, dict))
        return reqs >= 20

    assert wait_until(counted, 5.0, 0.1), doc
    for k in ("service", "source", "version", "uptime", "timestamp",
              "total_connections", "curr_connections"):
        assert k in doc, k
    pool = doc["alpha"]
    for k in ("client_eof", "client_err", "client_connections",
              "server_ejects", "forward_error", "fragments"):
        assert k in pool, k
    for name in ("server0", "server1"):
        srv = pool[name]
        for k in ("server_eof", "server_err", "server_timedout",
                  "server_connections", "server_ejected_at", "requests",
                  "request_bytes", "responses", "response_bytes"):
            assert k in srv, (name, k)
