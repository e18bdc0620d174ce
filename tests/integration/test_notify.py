"""sd_notify for real, without systemd: Strata runs with NOTIFY_SOCKET set
to a unix datagram socket this test owns, as systemd's Type=notify would
give it, and the test reads what it says: READY=1 once the listeners
accept, RELOADING=1 then READY=1 around a SIGUSR1 (applied or rejected),
STOPPING=1 on SIGTERM. Skipped when the binary was built without
libsystemd (configure --without-systemd): then it sends nothing.
"""

import os
import signal
import socket
import subprocess
import time

import pytest

from harness import (HOST, default_strata_bin, free_port, pool_yaml,
                     port_accepts, stop_pid, wait_until)

pytestmark = pytest.mark.strata_only


def built_with_systemd(binary):
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "libsystemd" in out


class Notifications:
    """The service manager's end of NOTIFY_SOCKET: a datagram socket."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.seen = []

    def next(self, timeout=10.0):
        """The next message as a dict of its assignments, or None."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        msg = dict(line.split("=", 1) for line in
                   data.decode().splitlines() if "=" in line)
        self.seen.append(msg)
        return msg

    def wait_for(self, key, timeout=10.0):
        """Messages up to and including the first that sets key=1."""
        deadline = time.monotonic() + timeout
        got = []
        while time.monotonic() < deadline:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if msg is None:
                break
            got.append(msg)
            if msg.get(key) == "1":
                return got
        raise AssertionError("no %s=1 within %.0fs; seen: %r"
                             % (key, timeout, self.seen))

    def close(self):
        self.sock.close()


def write_pools(path, pools):
    with open(path + ".new", "w") as f:
        f.write(pools if isinstance(pools, str) else pool_yaml(pools))
    os.rename(path + ".new", path)


@pytest.fixture
def notified(workdir):
    binary = default_strata_bin()
    if not built_with_systemd(binary):
        pytest.skip("%s built without libsystemd (configure --without-systemd, "
                    "or no libsystemd-dev): sd_notify does nothing" % binary)
    note = Notifications(os.path.join(workdir, "notify.sock"))
    procs = []

    def start(pools):
        conf = os.path.join(workdir, "pools.yml")
        write_pools(conf, pools)
        env = dict(os.environ, NOTIFY_SOCKET=note.path)
        log = open(os.path.join(workdir, "strata.out"), "ab")
        proc = subprocess.Popen(
            [binary, "-c", conf, "-s", str(free_port()), "-a", HOST,
             "--workers", "2", "-v", "6"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        log.close()
        procs.append(proc)
        return proc, conf

    yield note, start
    for proc in procs:
        if proc.poll() is None:
            stop_pid(proc.pid)
    note.close()


def pool(port, dead_port):
    return {"listen": "%s:%d" % (HOST, port),
            "servers": ["%s:%d:1" % (HOST, dead_port)]}


def test_ready_reloading_stopping(notified):
    note, start = notified
    p1, p2, dead = free_port(), free_port(), free_port()
    proc, conf = start({"alpha": pool(p1, dead)})

    # READY=1: the pool's listener accepts by then
    msgs = note.wait_for("READY")
    assert port_accepts(p1), "READY=1 before the listener accepts"
    assert not any("RELOADING" in m or "STOPPING" in m for m in msgs)
    assert "configuration 1 " in msgs[-1]["STATUS"], msgs[-1]

    # SIGUSR1 applying a new pool: RELOADING=1, then READY=1 once the new
    # configuration is in force in every worker (its listener accepts)
    write_pools(conf, {"alpha": pool(p1, dead), "beta": pool(p2, dead)})
    os.kill(proc.pid, signal.SIGUSR1)
    msgs = note.wait_for("READY")
    assert msgs[0].get("RELOADING") == "1", msgs
    assert port_accepts(p2), "READY=1 before the new pool's listener accepts"
    assert "configuration 2 " in msgs[-1]["STATUS"], msgs[-1]
    assert "rejected" not in msgs[-1]["STATUS"]

    # SIGUSR1 with a file that does not load: RELOADING=1, READY=1 at once,
    # and the status says the running configuration stays
    write_pools(conf, "alpha:\n  listen: [\n")
    os.kill(proc.pid, signal.SIGUSR1)
    msgs = note.wait_for("READY")
    assert msgs[0].get("RELOADING") == "1", msgs
    assert msgs[-1]["STATUS"].startswith("reload rejected"), msgs[-1]
    assert "configuration 2 " in msgs[-1]["STATUS"], msgs[-1]

    # SIGTERM: STOPPING=1, then a clean exit
    os.kill(proc.pid, signal.SIGTERM)
    msgs = note.wait_for("STOPPING")
    assert wait_until(lambda: proc.poll() is not None, 10.0)
    assert proc.returncode == 0


def test_sigint_says_stopping(notified):
    note, start = notified
    port, dead = free_port(), free_port()
    proc, _ = start({"alpha": pool(port, dead)})
    note.wait_for("READY")
    os.kill(proc.pid, signal.SIGINT)
    note.wait_for("STOPPING")
    assert wait_until(lambda: proc.poll() is not None, 10.0)
    assert proc.returncode == 0
