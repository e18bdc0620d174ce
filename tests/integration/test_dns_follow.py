"""Strata only: server host names followed (issue 16, "Host names
followed"; docs/operations.md).

A pool names its server `cache1:PORT:1`. Two memcached listen on the same
port at two loopback addresses, 127.0.0.2 and 127.0.0.3. Strata runs
under `unshare --mount` with a private /etc/hosts bind-mounted from a file
the test rewrites (in place: the bind mount holds the inode), so the
machine's /etc/hosts is never touched and only the proxy sees the name.
With dns_refresh_interval at 200 ms, Strata follows the name when it
moves, and keeps the last address while the name does not resolve.
"""

import os
import shutil
import subprocess

import pytest

from compat_util import distinct_ports, strata_bin
from conftest import SANITIZER_MARKS
from harness import (HarnessError, MCClient, Memcached, Proxy, _stop_popen,
                     free_port, port_accepts, wait_until)

pytestmark = [pytest.mark.strata_only]

ADDR_A = "127.0.0.2"
ADDR_B = "127.0.0.3"
INTERVAL_MS = 200
FOLLOW_S = 10.0     # generous on a loaded 2-core machine: 50 intervals


def unshare_works():
    """Whether this process may bind-mount a file in a private mount
    namespace (root, or a kernel that allows it)."""
    if shutil.which("unshare") is None:
        return False
    try:
        r = subprocess.run(["unshare", "--mount", "sh", "-c",
                            "mount --bind /dev/null /etc/hosts"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


class LoopbackMemcached(Memcached):
    """memcached on another loopback address of 127/8, at a given port."""

    def __init__(self, workdir, host, port):
        Memcached.__init__(self, workdir, port=port)
        self.host = host
        self.logpath = os.path.join(workdir, "memcached-%s.log" % host)

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def _cmd(self):
        cmd = Memcached._cmd(self)
        cmd[cmd.index("-l") + 1] = self.host
        return cmd

    def start(self, timeout=5.0):
        with open(self.logpath, "ab") as log:
            self.proc = subprocess.Popen(self._cmd(), stdout=log,
                                         stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        if not wait_until(lambda: self.proc.poll() is not None
                          or port_accepts(self.port, host=self.host), timeout) \
                or self.proc.poll() is not None:
            _stop_popen(self.proc)
            raise HarnessError("memcached did not start on %s:%d: %s"
                               % (self.host, self.port, self.read_log()))
        return self

    def client(self, timeout=5.0):
        return MCClient(self.port, host=self.host, timeout=timeout)

    def conns(self):
        """curr_connections, the asking connection included."""
        return stat(self, "curr_connections")


def write_hosts(path, lines):
    """Rewrites the private hosts file in place (same inode)."""
    with open(path, "r+" if os.path.exists(path) else "w") as f:
        f.seek(0)
        f.truncate()
        f.write("127.0.0.1 localhost\n" + "".join(l + "\n" for l in lines))


@pytest.fixture
def setup(workdir):
    if not unshare_works():
        pytest.skip("unshare --mount with a bind mount is not permitted here")
    port = free_port()
    servers = []
    proxy = None
    try:
        for host in (ADDR_A, ADDR_B):
            servers.append(LoopbackMemcached(workdir, host, port).start())
        idle = servers[0].conns()     # before the proxy connects
        hosts = os.path.join(workdir, "hosts")
        write_hosts(hosts, ["%s cache1" % ADDR_A])
        cfg = os.path.join(workdir, "strata.cfg")
        with open(cfg, "w") as f:
            f.write("dns_refresh_interval = %d;\n" % INTERVAL_MS)
        stats, listen = distinct_ports(2)
        pools = {"alpha": {"listen": "127.0.0.1:%d" % listen,
                           "servers": ["cache1:%d:1 one" % port]}}
        proxy = Proxy("strata", strata_bin(), workdir, pools, stats_port=stats,
                      extra_args=["--workers", "2", "-C", cfg], name="dns")
        plain_argv = proxy.argv
        proxy.argv = lambda: ["unshare", "--mount", "sh", "-c",
                              'mount --bind "$0" /etc/hosts && exec "$@"',
                              hosts] + plain_argv()
        proxy.start()
        yield proxy, servers[0], servers[1], hosts, idle
    finally:
        if proxy is not None:
            proxy.stop()
        for s in servers:
            s.stop()
    # a sanitizer build's report fails the test, as conftest's factory does
    if any(m in proxy.read_output() for m in SANITIZER_MARKS):
        pytest.fail("sanitizer report from the proxy:\n" + proxy.diagnostics())


def lands_on(proxy, server, key):
    """Sets key through the proxy; whether server holds it."""
    with proxy.client() as c:
        assert c.set(key, b"v") == b"STORED\r\n"
    with server.client() as c:
        return c.get(key) == b"v"


def stat(proxy, name):
    """One counter of the stats command of a proxy or a memcached."""
    with proxy.client() as c:
        c.send(b"stats\r\n")
        for _ in range(10000):
            line = c.readline()
            if line == b"END\r\n":
                return None
            if line.startswith(b"STAT %s " % name.encode()):
                return int(line.split()[2])
    return None


def test_name_followed_when_it_moves(setup):
    proxy, a, b, hosts, idle = setup
    assert lands_on(proxy, a, "before"), proxy.diagnostics()
    assert a.conns() > idle
    assert stat(proxy, "dns_failures") == 0
    write_hosts(hosts, ["%s cache1" % ADDR_B])
    moved = "pool alpha tier master server one: cache1 now resolves to %s (was %s)" \
        % (ADDR_B, ADDR_A)
    assert wait_until(lambda: moved in proxy.read_log(), FOLLOW_S), proxy.diagnostics()
    n = [0]

    def next_key_on_b():
        n[0] += 1
        return lands_on(proxy, b, "after%d" % n[0])

    assert wait_until(next_key_on_b, FOLLOW_S), proxy.diagnostics()
    # from then on every key lands on the new address, none on the old
    for i in range(20):
        assert lands_on(proxy, b, "later%d" % i), proxy.diagnostics()
        with a.client() as c:
            assert c.get("later%d" % i) is None
    # the old address's connections closed, as a reload closes a removed
    # server's once its requests are answered
    assert wait_until(lambda: a.conns() == idle, FOLLOW_S), proxy.diagnostics()
    # the same name kept its ring place: no other configuration change
    assert "configuration 2 from dns" in proxy.read_log(), proxy.diagnostics()


def test_unresolvable_name_keeps_the_last_address(setup):
    proxy, a, b, hosts, _ = setup
    write_hosts(hosts, [])     # cache1 no longer resolves (files, then DNS)
    warned = "dns: cannot resolve cache1"
    assert wait_until(lambda: warned in proxy.read_log(), FOLLOW_S), proxy.diagnostics()
    for i in range(10):
        assert lands_on(proxy, a, "kept%d" % i), proxy.diagnostics()
    assert stat(proxy, "dns_failures") >= 1, proxy.diagnostics()
    # back at its address: nothing moves; at another: it moves
    write_hosts(hosts, ["%s cache1" % ADDR_B])
    assert wait_until(lambda: lands_on(proxy, b, "back"), FOLLOW_S), proxy.diagnostics()
