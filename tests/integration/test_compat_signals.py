"""Signals, daemon mode and pid file as twemproxy's users rely on them.

SIGHUP reopens the log file (logrotate), SIGTTIN/SIGTTOU raise and lower
the log level, SIGTERM/SIGINT stop the proxy: listeners first, requests in
flight still answered, exit code 0 (nutcracker 0.5.0 dies of the signal
and drops them; see docs/compatibility.md).  -d -p writes the serving pid.
And the way twemproxy's own test harness starts its binary: a copy named
`nutcracker`, started with -d -c -o -p -s -a -v -m -i, stopped by the pid
in the pid file.
"""

import os
import shutil
import socket
import signal
import time

import pytest

from compat_util import (DeadPort, distinct_ports, have_nutcracker, nutcracker_bin,
                         read_pid_file, start_proxy, strata_bin, wait_exit)
from harness import (FakeBackend, HOST, Proxy, pid_alive, port_accepts,
                     pool_yaml, run_cli, stop_pid, wait_until, xchg, MCClient)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def kinds():
    out = ["strata"]
    out.append(pytest.param("nutcracker", marks=[
        pytest.mark.needs_nutcracker,
        pytest.mark.skipif(not have_nutcracker(),
                           reason="nutcracker not installed")]))
    return out


# ---------------------------------------------------------------- log ----

@pytest.mark.parametrize("kind", kinds())
def test_sighup_reopens_log_file(kind, workdir, memcached_factory):
    servers = memcached_factory(1)
    p = start_proxy(kind, workdir, {"alpha": {
        "servers": ["%s:%d:1" % (HOST, servers[0].port)]}})
    try:
        assert wait_until(lambda: read(p.logpath) != "", 3.0), "no log lines"
        rotated = p.logpath + ".1"
        os.rename(p.logpath, rotated)            # what logrotate does
        size = len(read(rotated))
        os.kill(p.pid, signal.SIGHUP)
        assert wait_until(lambda: os.path.exists(p.logpath), 3.0), \
            "SIGHUP did not create a new log file"
        # the old file got the HUP notice, written before the reopen
        assert wait_until(lambda: len(read(rotated)) > size, 3.0)
        # new lines go to the new file
        os.kill(p.pid, signal.SIGTTIN)
        assert wait_until(lambda: read(p.logpath) != "", 3.0), \
            "nothing written to the reopened log file"
        assert p.alive()
        with p.client() as c:
            xchg(c, "set k 0 0 1\r\nv\r\n", b"STORED\r\n")
    finally:
        p.stop()


@pytest.mark.parametrize("kind", kinds())
def test_every_signal_is_logged_and_segv_dies_with_a_backtrace(
        kind, workdir, memcached_factory):
    """twemproxy's own tests/test_redis test_signal: after SIGHUP twice,
    SIGTTIN, SIGTTOU and SIGSEGV the log names each signal. A SIGSEGV is
    logged with a backtrace (Strata) and the process still dies of it
    (no core: RLIMIT_CORE 0 for the test)."""
    servers = memcached_factory(1)
    ports = distinct_ports(2)
    p = Proxy(kind, strata_bin() if kind == "strata" else nutcracker_bin(), workdir,
              {"alpha": {"listen": "%s:%d" % (HOST, ports[1]),
                         "servers": ["%s:%d:1" % (HOST, servers[0].port)]}},
              stats_port=ports[0], name="sig-" + kind)
    plain_argv = p.argv
    p.argv = lambda: ["prlimit", "--core=0", "--"] + plain_argv()
    p.start()
    try:
        for sig in (signal.SIGHUP, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            name = signal.Signals(sig).name
            seen = read(p.logpath).count(name)
            os.kill(p.pid, sig)
            assert wait_until(lambda: read(p.logpath).count(name) > seen, 5.0), \
                "%s not logged:\n%s" % (name, read(p.logpath))
        os.kill(p.pid, signal.SIGSEGV)
        assert wait_exit(p.proc, 10.0) == -signal.SIGSEGV
        log = read(p.logpath)
        assert "SIGSEGV" in log, log
        if kind == "strata":
            assert "signal 11 (SIGSEGV) received: pid %d is dying of it; backtrace:" \
                % p.pid in log, log
            assert "end of backtrace" in log
    finally:
        p.stop()


def test_sigttin_sigttou_move_log_level(workdir, memcached_factory):
    """An info-level line (level 6: a backend connection that fails) is
    written only while the level is >= 6."""
    servers = memcached_factory(1)
    with DeadPort() as hole:                 # nothing listens there
        p = start_proxy("strata", workdir, {"alpha": {
            "hash": "md5", "distribution": "modula",
            "auto_eject_hosts": False, "timeout": 1000,
            "servers": ["%s:%d:1 a" % (HOST, servers[0].port),
                        "%s:%d:1 b" % (HOST, hole.port)]}},
            extra_args=["-v", "5", "--workers", "1"])
        try:
            check_level_boundary(p, "%s:%d" % (HOST, hole.port))
        finally:
            p.stop()


def check_level_boundary(p, marker):
    def info_lines():      # a failure is also a WARN once a second
        return sum(1 for line in read(p.logpath).splitlines()
                   if marker in line and " INFO " in line)

    def notices(word):
        return read(p.logpath).count(word)

    with p.client() as c:
        # a key that the dead server owns (modula over names a, b)
        dead_key = None
        for i in range(64):
            r, _ = c.timed("get probe%d\r\n" % i)
            if r.startswith(b"SERVER_ERROR"):
                dead_key = "probe%d" % i
                break
        assert dead_key, "no key routed to the dead server"

        def fail_once():
            r, _ = c.timed("get %s\r\n" % dead_key)
            assert r.startswith(b"SERVER_ERROR"), r

        time.sleep(0.1)
        assert info_lines() == 0, read(p.logpath)          # level 5
        ups = notices("log level up")
        os.kill(p.pid, signal.SIGTTIN)                      # -> 6
        assert wait_until(lambda: notices("log level up") > ups, 3.0)
        fail_once()
        assert wait_until(lambda: info_lines() >= 1, 3.0), read(p.logpath)
        seen = info_lines()
        downs = notices("log level down")
        os.kill(p.pid, signal.SIGTTOU)                      # -> 5
        assert wait_until(lambda: notices("log level down") > downs, 3.0)
        fail_once()
        fail_once()
        time.sleep(0.1)
        assert info_lines() == seen, read(p.logpath)


# --------------------------------------------------------------- stop ----

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_closes_listeners_answers_in_flight_exits_0(sig, workdir):
    slow = FakeBackend(mode="slow", delay=0.3)
    p = None
    try:
        p = start_proxy("strata", workdir, {"alpha": {
            "timeout": 2000, "servers": ["%s:%d:1" % (HOST, slow.port)]}})
        with p.client(timeout=3.0) as c:
            c.send(b"get in-flight\r\n")
            assert wait_until(lambda: b"get in-flight" in slow.received_text(),
                              2.0), "request never reached the backend"
            t0 = time.monotonic()
            os.kill(p.pid, sig)
            # listeners close first, while the request is still pending
            assert wait_until(lambda: not port_accepts(p.port), 0.2, 0.01), \
                "listener still accepting after the signal"
            assert time.monotonic() - t0 < 0.25
            assert c.read_reply(timeout=2.0) == b"END\r\n"
        rc = wait_exit(p.proc, 5.0)
        assert rc == 0, "exit code %r" % (rc,)
        assert "stopping" in read(p.logpath)
    finally:
        if p is not None:
            p.stop()
        slow.stop()


@pytest.mark.parametrize("stop", [False, True], ids=["control", "sigterm"])
def test_stop_signal_delivers_answered_replies_to_slow_reader(
        stop, workdir, memcached_factory):
    """Replies that are complete but not yet written to the client (it
    reads slowly) are still delivered when the proxy stops: stopping waits
    for requests in flight *and* for their replies to leave (within the
    drain bound).  The deterministic form of the race the test above can
    hit; "control" is the same exchange without the signal."""
    servers = memcached_factory(1)
    p = start_proxy("strata", workdir, {"alpha": {
        "timeout": 2000, "servers": ["%s:%d:1" % (HOST, servers[0].port)]}},
        extra_args=["--workers", "1"])
    value = bytes(range(256)) * 3000                  # 768000 bytes
    with servers[0].client() as d:
        d.send(b"set big 0 0 %d\r\n%s\r\n" % (len(value), value))
        assert d.readline() == b"STORED\r\n"
    # five replies: under the proxy's per-client pending bound (4 MiB), so
    # it reads and answers all of them, but more than the kernel buffers
    # for a client that does not read
    want = b"VALUE big 0 %d\r\n%s\r\nEND\r\n" % (len(value), value) * 5
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(3.0)
    rc = None
    try:
        s.connect((HOST, p.port))
        s.sendall(b"get big\r\n" * 5)
        time.sleep(0.3)              # the proxy has the whole reply by now
        if stop:
            os.kill(p.pid, signal.SIGTERM)
        time.sleep(0.2)
        got = b""
        deadline = time.monotonic() + 4.0
        while len(got) < len(want) and time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            got += chunk
        if stop:
            rc = wait_exit(p.proc, 6.0)
    finally:
        s.close()
        p.stop()
    assert len(got) == len(want) and got == want, \
        "reply cut at %d of %d bytes (stop=%s)" % (len(got), len(want), stop)
    if stop:
        assert rc == 0, "exit code %r" % (rc,)


# --------------------------------------------------- daemon, pid file ----

def listening_inodes(port):
    """Inodes of the sockets listening on 127.0.0.1:port (from /proc)."""
    want = ":%04X" % port
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in read(path).splitlines()[1:]:
            f = line.split()
            if len(f) > 9 and f[1].endswith(want) and f[3] == "0A":
                inodes.add(f[9])
    return inodes


def pid_owns_socket(pid, inodes):
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for fd in fds[:4096]:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def start_daemon(argv, pid_file, listen_port):
    """Runs a daemonizing command; returns the pid from the pid file once
    the proxy listens."""
    r = run_cli(argv, timeout=10.0)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    pid = read_pid_file(pid_file)
    assert pid, "no pid file %s" % pid_file
    assert wait_until(lambda: port_accepts(listen_port), 5.0), \
        "daemon does not listen on %d" % listen_port
    return pid


def test_daemonize_pid_file_holds_serving_pid(workdir, memcached_factory):
    servers = memcached_factory(1)
    port, stats = distinct_ports(2)
    conf = os.path.join(workdir, "d.yml")
    with open(conf, "w") as f:
        f.write(pool_yaml({"alpha": {
            "listen": "%s:%d" % (HOST, port),
            "servers": ["%s:%d:1" % (HOST, servers[0].port)]}}))
    pid_file = os.path.join(workdir, "d.pid")
    log = os.path.join(workdir, "d.log")
    pid = None
    try:
        pid = start_daemon([strata_bin(), "-d", "-p", pid_file, "-c", conf,
                            "-o", log, "-s", str(stats), "-a", HOST],
                           pid_file, port)
        assert pid != os.getpid() and pid_alive(pid)
        assert os.getppid() != pid
        # the pid in the file is the process that holds the listening socket
        assert wait_until(lambda: pid_owns_socket(pid, listening_inodes(port)),
                          2.0), "pid %d does not own the listener" % pid
        assert os.getsid(pid) != os.getsid(0), "not detached from our session"
        with MCClient(port) as c:
            xchg(c, "set d 0 0 1\r\nx\r\nget d\r\n",
                 b"STORED\r\nVALUE d 0 1\r\nx\r\nEND\r\n")
        assert stop_pid(pid), "daemon ignored SIGTERM"
        pid = None
        assert wait_until(lambda: not port_accepts(port), 2.0)
        assert wait_until(lambda: not os.path.exists(pid_file), 2.0), \
            "pid file left behind"
    finally:
        if pid is not None:
            stop_pid(pid)


def test_started_like_twemproxys_own_test_harness(workdir, memcached_factory):
    """twemproxy's tests start `nutcracker -d -c CONF -o LOG -p PIDFILE -s
    PORT -a ADDR -v 4 -m 512 -i 1` and stop it with the pid file."""
    servers = memcached_factory(1)
    bindir = os.path.join(workdir, "bin")
    os.mkdir(bindir)
    binary = os.path.join(bindir, "nutcracker")
    shutil.copy2(strata_bin(), binary)
    port, stats = distinct_ports(2)
    conf = os.path.join(workdir, "nutcracker.yml")
    with open(conf, "w") as f:
        f.write(pool_yaml({"alpha": {
            "listen": "%s:%d" % (HOST, port), "hash": "fnv1a_64",
            "distribution": "ketama", "timeout": 400, "preconnect": True,
            "auto_eject_hosts": True, "server_retry_timeout": 2000,
            "server_failure_limit": 1,
            "servers": ["%s:%d:1 mc" % (HOST, servers[0].port)]}}))
    pid_file = os.path.join(workdir, "nutcracker.pid")
    log = os.path.join(workdir, "nutcracker.log")
    pid = None
    try:
        pid = start_daemon([binary, "-d", "-c", conf, "-o", log, "-p",
                            pid_file, "-s", str(stats), "-a", HOST, "-v", "4",
                            "-m", "512", "-i", "1"], pid_file, port)
        with MCClient(port) as c:
            xchg(c, "set h 0 0 5\r\nhello\r\nget h\r\n",
                 b"STORED\r\nVALUE h 0 5\r\nhello\r\nEND\r\n")
        assert port_accepts(stats)
        with open(pid_file) as f:
            os.kill(int(f.read().strip()), signal.SIGTERM)
        assert wait_until(lambda: not pid_alive(pid), 5.0), "still running"
        pid = None
        assert not port_accepts(port)
    finally:
        if pid is not None:
            stop_pid(pid)
