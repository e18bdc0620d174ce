"""Starting as operators start it (issue 15, "defaults that hold on first
contact"): a second strata on the same pool file is refused, as nutcracker
refuses it, instead of sharing the port through SO_REUSEPORT; a reload
still moves a process's own listeners; `-d` reports a failed start with a
non-zero exit before the launcher returns."""

import os

import pytest

from compat_util import distinct_ports, strata_bin
from harness import (HOST, MCClient, Proxy, pool_yaml, port_accepts, read_stats,
                     run_cli, wait_until)
from reload_util import reload, reload_rejected

pytestmark = pytest.mark.strata_only


def pool(server, port):
    return {"listen": "%s:%d" % (HOST, port),
            "servers": ["%s:%d:1" % (HOST, server.port)]}


def second_start(workdir, conf, stats, extra=()):
    """Runs strata in the foreground on `conf`; its CompletedProcess."""
    return run_cli([strata_bin(), "-c", conf, "-s", str(stats), "-a", HOST,
                    "-o", os.path.join(workdir, "second.log")] + list(extra),
                   timeout=15.0)


def test_second_instance_on_the_same_pool_file_is_refused(workdir, memcached_factory):
    server, = memcached_factory(1)
    listen, stats1, stats2 = distinct_ports(3)
    first = Proxy("strata", strata_bin(), workdir, {"alpha": pool(server, listen)},
                  stats_port=stats1, name="first").start()
    try:
        r = second_start(workdir, first.confpath, stats2)
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert "pool alpha: cannot listen on %s:%d: Address already in use" \
            % (HOST, listen) in r.stderr, r.stderr
        assert not port_accepts(stats2)        # it is gone, not serving
        # every connection is the first proxy's
        clients = [MCClient(listen, timeout=5) for _ in range(20)]
        try:
            for c in clients:
                assert c.call("get a") == b"END\r\n"
            assert read_stats(stats1)["alpha"]["client_connections"] >= 20
        finally:
            for c in clients:
                c.close()
    finally:
        first.stop()


def test_daemonize_reports_a_failed_start(workdir, memcached_factory):
    """-d with the listen port taken: the launcher exits 1 and says so,
    and no pid file is left (it used to exit 0 with nothing serving)."""
    server, = memcached_factory(1)
    listen, stats1, stats2 = distinct_ports(3)
    first = Proxy("strata", strata_bin(), workdir, {"alpha": pool(server, listen)},
                  stats_port=stats1, name="first").start()
    pid_file = os.path.join(workdir, "second.pid")
    try:
        r = second_start(workdir, first.confpath, stats2, ["-d", "-p", pid_file])
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert "the daemon did not start; see %s" % os.path.join(workdir, "second.log") \
            in r.stderr, r.stderr
        assert not os.path.exists(pid_file)
        with open(os.path.join(workdir, "second.log")) as f:
            assert "Address already in use" in f.read()
    finally:
        first.stop()


def test_daemonize_without_a_log_file_shows_the_error(workdir, memcached_factory):
    """Without -o the log is stderr: until the daemon serves, its stderr
    is still the launcher's, so the reason reaches the terminal."""
    server, = memcached_factory(1)
    listen, stats1, stats2 = distinct_ports(3)
    first = Proxy("strata", strata_bin(), workdir, {"alpha": pool(server, listen)},
                  stats_port=stats1, name="first").start()
    try:
        r = run_cli([strata_bin(), "-c", first.confpath, "-s", str(stats2), "-a", HOST,
                     "-d"], timeout=15.0)
        assert r.returncode == 1
        assert "cannot listen on %s:%d: Address already in use" % (HOST, listen) \
            in r.stderr, r.stderr
        assert "the daemon did not start" in r.stderr
    finally:
        first.stop()


def test_reload_swaps_two_pools_ports(workdir, memcached_factory, proxy_factory):
    """A reload may move a pool onto an address this process listens on
    (here two pools trade ports): the probe that refuses other processes
    lets the process's own listeners move."""
    m0, m1 = memcached_factory(2)
    pa, pb = distinct_ports(2)
    pools = {"a": pool(m0, pa), "b": pool(m1, pb)}
    p = proxy_factory(pools)
    with p.client("a") as c:
        assert c.set("who", "a") == b"STORED\r\n"
    with p.client("b") as c:
        assert c.set("who", "b") == b"STORED\r\n"
    reload(p, {"a": pool(m0, pb), "b": pool(m1, pa)}, what="swap ports")

    def serves(port, want):
        try:
            with MCClient(port, timeout=2) as c:
                return c.get("who") == want.encode()
        except Exception:
            return False
    assert wait_until(lambda: serves(pb, "a") and serves(pa, "b"), 5.0)


def test_reload_onto_another_proxys_port_is_rejected(workdir, memcached_factory,
                                                     proxy_factory):
    m0, = memcached_factory(1)
    mine, theirs = distinct_ports(2)
    other = Proxy("strata", strata_bin(), workdir, {"x": pool(m0, theirs)},
                  name="other").start()
    try:
        p = proxy_factory({"a": pool(m0, mine)})
        text = pool_yaml({"a": pool(m0, theirs)})
        reload_rejected(p, text, None, what="onto another proxy's port",
                        expect_text="cannot listen on %s:%d: Address already in use"
                        % (HOST, theirs))
        with p.client("a") as c:
            assert c.call("get a") == b"END\r\n"      # still on its own port
    finally:
        other.stop()


def test_share_listen_ports_lets_a_second_instance_share(workdir, memcached_factory):
    """share_listen_ports = true (a fleet on one host, or a new binary
    started beside the old one before the old one stops): both serve."""
    server, = memcached_factory(1)
    listen, stats1, stats2 = distinct_ports(3)
    cfg = os.path.join(workdir, "share.cfg")
    with open(cfg, "w") as f:
        f.write("share_listen_ports = true;\n")
    first = Proxy("strata", strata_bin(), workdir, {"alpha": pool(server, listen)},
                  stats_port=stats1, name="first", extra_args=["-C", cfg]).start()
    second = Proxy("strata", strata_bin(), workdir, {"alpha": pool(server, listen)},
                   stats_port=stats2, name="second", extra_args=["-C", cfg])
    try:
        second.start()
        assert second.alive() and first.alive()
    finally:
        second.stop()
        first.stop()
