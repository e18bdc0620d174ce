"""-c zk://...: ZooKeeper as the configuration center, against a real
ZooKeeper server started for this module (zk_util.ZooKeeperServer).

Start from the node, the cache file, publish (refused and accepted), the
registration node, ZooKeeper away and back.  The tests that need live
reload skip, saying so, while reload_apply is the stub ("live reload is
not built yet" in the log), and run as soon as it is real.
"""

import json
import os
import signal
import socket
import stat
import time

import pytest

import harness
from harness import (HOST, TIME_SCALE, free_port, run_cli, wait_until,
                     xchg)
from conftest import SANITIZER_MARKS, proxy_binary, simple_pool
from zk_util import (ZNOAUTH, ZooKeeperServer, ZkError, digest_id,
                     strata_without_zookeeper, zookeeper_missing)

pytestmark = pytest.mark.strata_only

RELOAD_STUB = "live reload is not built yet"
SESSION_MS = 4000
HOSTNAME = socket.gethostname()


def _skip_reason():
    why = zookeeper_missing()
    if why is None and strata_without_zookeeper(proxy_binary("strata")):
        why = "strata was built without ZooKeeper support"
    return why


@pytest.fixture(scope="module")
def zk_capable():
    """Skips, saying why, where no ZooKeeper test can run."""
    why = _skip_reason()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def zk(zk_capable, tmp_path_factory):
    server = ZooKeeperServer(str(tmp_path_factory.mktemp("zookeeper")))
    server.start()
    # the parent of every test's node, open to all: a test that publishes
    # with an ACL must not be the one to create it (the tests after it,
    # in whatever order they run, could not create their nodes)
    with server.client() as c:
        c.create("/strata-it")
    yield server
    server.stop()


@pytest.fixture
def zkc(zk):
    """A client of a running server (restarted if a test stopped it)."""
    zk.ensure_running()
    with zk.client() as c:
        yield c
    zk.ensure_running()


@pytest.fixture
def node(request, zk):
    """A fresh node path per test."""
    return "/strata-it/%s" % request.node.name.replace("[", "-").strip("]")


class ZkProxy(harness.Proxy):
    """Strata started with -c zk://... and a -C settings file."""

    def __init__(self, workdir, pools, url, name, cache=None, settings="",
                 session_ms=SESSION_MS):
        harness.Proxy.__init__(self, "strata", proxy_binary("strata"), workdir,
                               pools, name=name)
        self.url = url
        self.cache = cache or os.path.join(workdir, "%s.cache.yml" % name)
        self.settings_path = os.path.join(workdir, "%s.cfg" % name)
        with open(self.settings_path, "w") as f:
            f.write('zk_cache_file = "%s";\nzk_session_timeout = %d;\n%s'
                    % (self.cache, session_ms, settings))

    def argv(self):
        argv = harness.Proxy.argv(self)
        argv[argv.index(self.confpath)] = self.url
        return argv + ["-C", self.settings_path, "--workers", "2"]

    def reg_node(self, node):
        return "%s/proxies/%s:%d" % (node, HOSTNAME, self.stats_port)


@pytest.fixture
def zk_proxy(request, workdir):
    """zk_proxy(pools, url, ...) -> a running ZkProxy (pools: for the
    ports to wait on; the node must hold the same)."""
    started = []
    request.node._harness_proxies = started

    def make(pools, url, name=None, start=True, **kw):
        p = ZkProxy(workdir, pools, url, name or "strata%d" % len(started),
                    **kw)
        started.append(p)
        if start:
            p.start(timeout=15.0 * TIME_SCALE)
        return p

    yield make
    reports = []
    for p in started:
        p.stop()
        if any(m in p.read_output() for m in SANITIZER_MARKS):
            reports.append(p.diagnostics())
    if reports:
        pytest.fail("sanitizer report from the proxy:\n" + "\n".join(reports))


def pools_for(servers, port=None):
    return {"alpha": simple_pool(servers, listen="%s:%d"
                                 % (HOST, port or free_port()))}


def publish(path, url, *extra):
    return run_cli([proxy_binary("strata"), "--publish", path, "-c", url]
                   + list(extra), timeout=30)


def write(workdir, name, text):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def lands_on(proxy, server, key):
    """Sets `key` through the proxy; True if `server` holds it."""
    with proxy.client() as c:
        xchg(c, b"set %s 0 0 1\r\nx\r\n" % key.encode(), b"STORED\r\n")
    with server.client() as c:
        return key in c.keys_present([key])


def registered_proxy(zk, zkc, node, memcached_factory, zk_proxy):
    """One memcached server, a proxy following `node`, its registration
    in place: (server, proxy, registration path)."""
    a, = memcached_factory(1)
    pools = pools_for([a])
    zkc.put(node, harness.pool_yaml(pools))
    p = zk_proxy(pools, zk.url(node))
    reg = p.reg_node(node)
    assert wait_until(lambda: zkc.exists(reg) is not None, 5 * TIME_SCALE)
    return a, p, reg


def wait_log(proxy, text, timeout):
    return wait_until(lambda: text in proxy.read_log(), timeout, 0.05)


def following_proxy(zk, zkc, node, server, zk_proxy, port=None, **kw):
    """A proxy following `node`, which routes pool alpha (on `port`) to
    `server`; returned once its session is connected."""
    pools = pools_for([server], port)
    zkc.put(node, harness.pool_yaml(pools))
    p = zk_proxy(pools, zk.url(node), **kw)
    assert wait_log(p, "zookeeper: connected", 5 * TIME_SCALE)
    return p


# ------------------------------------------------------------ start-up ----

def test_start_from_node(zk, zkc, node, memcached_factory, zk_proxy):
    a, = memcached_factory(1)
    pools = pools_for([a])
    text = harness.pool_yaml(pools)
    zkc.put(node, text)
    p = zk_proxy(pools, zk.url(node))
    assert lands_on(p, a, "k1")
    assert wait_log(p, "configuration from %s, version 0" % zk.url(node), 2)
    with open(p.cache) as f:
        assert f.read() == "# strata: cache of %s\n%s" % (zk.url(node), text)


def test_test_flag_reads_the_node(zk, zkc, node, workdir):
    zkc.put(node, "alpha:\n  listen: 127.0.0.1:1\n  timeout: soon\n"
             "  servers: [127.0.0.1:11211:1]\n")
    r = run_cli([proxy_binary("strata"), "-t", "-c", zk.url(node)], timeout=30)
    assert r.returncode == 1
    assert "%s:3: key 'timeout' in pool 'alpha' is not a number" \
        % zk.url(node) in r.stderr
    zkc.set(node, "alpha:\n  listen: 127.0.0.1:1\n"
            "  servers: [127.0.0.1:11211:1]\n")
    r = run_cli([proxy_binary("strata"), "-t", "-c", zk.url(node)], timeout=30)
    assert r.returncode == 0, r.stderr
    assert "version 1" in r.stderr and "syntax is ok" in r.stderr


def test_no_cache_no_zookeeper_refuses_to_start(zk_capable, workdir):
    dead = "zk://%s:%d/strata/pools" % (HOST, free_port())
    cfg = write(workdir, "s.cfg", 'zk_cache_file = "%s/none.yml";\n'
                'zk_session_timeout = 1000;\n' % workdir)
    r = run_cli([proxy_binary("strata"), "-c", dead, "-C", cfg,
                 "-s", str(free_port()), "-a", HOST], timeout=30)
    assert r.returncode == 1
    assert "cannot start: no configuration from %s" % dead in r.stderr
    assert "cannot reach ZooKeeper" in r.stderr
    assert "no usable cache file" in r.stderr


def test_cache_directory_is_created(zk, zkc, node, memcached_factory, zk_proxy,
                                    workdir):
    """The cache file's directory (/var/lib/strata by default) is created
    when missing, so the first start can write it."""
    a, = memcached_factory(1)
    pools = pools_for([a])
    zkc.put(node, harness.pool_yaml(pools))
    cache = os.path.join(workdir, "state", "strata", "zk.yml")
    p = zk_proxy(pools, zk.url(node), name="mkdirs", cache=cache)
    assert wait_until(lambda: os.path.exists(cache), 5 * TIME_SCALE)
    assert os.stat(os.path.dirname(cache)).st_mode & 0o777 == 0o750
    assert "cannot write the cache file" not in p.read_log()


def test_start_from_cache_when_zookeeper_is_down(zk, zkc, node,
                                                 memcached_factory, zk_proxy):
    a, = memcached_factory(1)
    pools = pools_for([a])
    zkc.put(node, harness.pool_yaml(pools))
    first = zk_proxy(pools, zk.url(node), name="first")
    first.stop()
    zk.stop()
    try:
        # a session timeout of 10 s is what start-up used to wait for
        again = zk_proxy(pools, zk.url(node), name="again", cache=first.cache,
                         start=False, session_ms=10000)
        t0 = time.monotonic()
        again.start(timeout=15.0 * TIME_SCALE)
        took = time.monotonic() - t0
        assert took < 1.0 * TIME_SCALE + 0.5, "served after %.1f s" % took
        assert lands_on(again, a, "k2")
        assert wait_log(again, "started from the cache file '%s'"
                        % first.cache, 2)
        assert "cannot reach ZooKeeper" in again.read_log()
    finally:
        zk.start()
    # ZooKeeper back with a changed node: applied without a restart
    b, = memcached_factory(1)
    with zk.client() as c:              # zkc's session went with the server
        c.set(node, harness.pool_yaml(pools_for([b], again.port)))
    assert wait_until(lambda: lands_on(again, b, "k3"), 15 * TIME_SCALE, 0.2)


# ------------------------------------------------------------- publish ----

BAD = "alpha:\n  listen: 127.0.0.1:22121\n  hash: nope\n" \
      "  servers: [127.0.0.1:11211:1]\n"


def test_publish_refuses_a_bad_file(zk, zkc, node, workdir):
    good = "alpha:\n  listen: 127.0.0.1:22121\n  servers: [127.0.0.1:11211:1]\n"
    zkc.put(node, good)
    before = zkc.get(node)
    r = publish(write(workdir, "bad.yml", BAD), zk.url(node))
    assert r.returncode == 1
    assert "bad.yml:3: key 'hash' in pool 'alpha' is not a valid hash" in r.stderr
    assert "nothing published" in r.stderr
    after = zkc.get(node)
    assert after[0] == before[0] and after[1].version == before[1].version


def test_publish_writes_a_good_file(zk, zkc, node, workdir):
    text = "alpha:\n  listen: 127.0.0.1:22121\n  servers: [127.0.0.1:11211:1]\n"
    path = write(workdir, "good.yml", text)
    # a missing node is created, with its parents
    r = publish(path, zk.url(node))
    assert r.returncode == 0, r.stderr
    assert "version 0" in r.stdout
    assert zkc.get(node)[0] == text.encode()
    text2 = text.replace("22121", "22122")
    path2 = write(workdir, "good2.yml", text2)
    r = publish(path2, zk.url(node))
    assert r.returncode == 0, r.stderr
    data, stat = zkc.get(node)
    assert data == text2.encode() and stat.version == 1
    assert "version 1" in r.stdout


def test_publish_version_check(zk, zkc, node, workdir):
    text = "alpha:\n  listen: 127.0.0.1:22121\n  servers: [127.0.0.1:11211:1]\n"
    zkc.put(node, text)
    zkc.set(node, text)              # someone else published: version 1
    path = write(workdir, "mine.yml", text.replace("22121", "22123"))
    r = publish(path, zk.url(node), "--publish-version", "0")
    assert r.returncode == 1
    assert "is at version 1, not 0" in r.stderr
    assert zkc.get(node)[0] == text.encode()
    r = publish(path, zk.url(node), "--publish-version", "1")
    assert r.returncode == 0, r.stderr
    assert zkc.get(node)[1].version == 2


def test_publish_needs_a_zk_url(workdir):
    r = publish(write(workdir, "p.yml", BAD), os.path.join(workdir, "x.yml"))
    assert r.returncode == 1
    assert "--publish needs -c zk://" in r.stderr


# -------------------------------------------------------- registration ----

def test_registration_node(zk, zkc, node, memcached_factory, zk_proxy):
    a, = memcached_factory(1)
    pools = pools_for([a])
    pools["beta"] = simple_pool([a], listen="%s:%d" % (HOST, free_port()))
    zkc.put(node, harness.pool_yaml(pools))
    p = zk_proxy(pools, zk.url(node))
    reg = p.reg_node(node)
    assert wait_until(lambda: zkc.exists(reg) is not None, 5 * TIME_SCALE)
    data, stat = zkc.get(reg)
    assert stat.ephemeral_owner != 0
    doc = json.loads(data.decode())
    assert doc == {
        "host": HOSTNAME, "pid": p.pid, "version": doc["version"],
        "stats": "%s:%d" % (HOST, p.stats_port), "generation": 1,
        "source": zk.url(node),
        "pools": [{"name": "alpha", "listen": pools["alpha"]["listen"],
                   "protocol": "memcached"},
                  {"name": "beta", "listen": pools["beta"]["listen"],
                   "protocol": "memcached"}],
    }
    assert doc["version"] and doc["version"] in run_cli(
        [proxy_binary("strata"), "-V"]).stdout
    assert zkc.children(node + "/proxies") == [reg.rsplit("/", 1)[1]]
    p.stop()
    assert wait_until(lambda: zkc.exists(reg) is None, 3 * TIME_SCALE)


def test_no_registration_when_disabled(zk, zkc, node, memcached_factory,
                                       zk_proxy):
    a, = memcached_factory(1)
    pools = pools_for([a])
    zkc.put(node, harness.pool_yaml(pools))
    p = zk_proxy(pools, zk.url(node), settings="zk_register = false;\n")
    assert wait_log(p, "zookeeper: connected", 5 * TIME_SCALE)
    assert zkc.exists(p.reg_node(node)) is None


# -------------------------------------------------- ZooKeeper goes away ----

def test_zookeeper_away_keeps_serving_then_reregisters(
        zk, zkc, node, memcached_factory, zk_proxy):
    a, p, reg = registered_proxy(zk, zkc, node, memcached_factory, zk_proxy)
    zk.stop()
    try:
        assert wait_log(p, "lost the connection", 10 * TIME_SCALE)
        for i in range(20):
            assert lands_on(p, a, "away%d" % i)
        assert p.alive()
    finally:
        zk.start()
    with zk.client() as c:
        # the old session resumes, or expires and a new one registers
        assert wait_until(lambda: c.exists(reg) is not None,
                          3 * SESSION_MS / 1000.0 * TIME_SCALE, 0.1)
        assert json.loads(c.get(reg)[0].decode())["pid"] == p.pid
    assert lands_on(p, a, "back")
    log = p.read_log()
    assert log.count("lost the connection") == 1, log


def test_bad_node_change_is_rejected(zk, zkc, node, memcached_factory,
                                     zk_proxy):
    a, = memcached_factory(1)
    pools = pools_for([a])
    zkc.put(node, harness.pool_yaml(pools))
    p = zk_proxy(pools, zk.url(node))
    assert wait_log(p, "zookeeper: connected", 5 * TIME_SCALE)
    zkc.set(node, BAD)
    assert wait_log(p, "%s:3: key 'hash'" % zk.url(node), 3 * TIME_SCALE)
    assert "rejected" in p.read_log()
    assert lands_on(p, a, "still")
    with open(p.cache) as f:
        assert "nope" not in f.read()


# --------------------------------------------- live changes (reload) ----

def wait_applied(proxy, version, timeout):
    """Waits for version `version` of the node to be applied; skips the
    test while reload_apply is the stub."""
    def done():
        log = proxy.read_log()
        return RELOAD_STUB in log or "version %d of" % version in log and \
            "not applied" not in log and "rejected" not in log
    wait_until(done, timeout, 0.02)
    if RELOAD_STUB in proxy.read_log():
        pytest.skip("live reload is not built yet (reload_apply is the stub): "
                    "this runs once it lands")


def test_node_change_reroutes_within_a_second(zk, zkc, node,
                                              memcached_factory, zk_proxy):
    a, b = memcached_factory(2)
    port = free_port()
    pools = pools_for([a], port)
    zkc.put(node, harness.pool_yaml(pools))
    p = zk_proxy(pools, zk.url(node))
    assert lands_on(p, a, "before")
    assert wait_log(p, "zookeeper: connected", 5 * TIME_SCALE)
    zkc.set(node, harness.pool_yaml(pools_for([b], port)))
    wait_applied(p, 1, 1.0 * TIME_SCALE)
    assert wait_until(lambda: lands_on(p, b, "after"), 1.0 * TIME_SCALE, 0.05)
    # the registration is rewritten after the switch, asynchronously
    assert wait_until(lambda: json.loads(zkc.get(p.reg_node(node))[0].decode())
                      ["generation"] == 2, 2.0 * TIME_SCALE, 0.02)
    with open(p.cache) as f:
        assert "%d" % b.port in f.read()


def test_two_proxies_follow_one_change(zk, zkc, node, memcached_factory,
                                       zk_proxy):
    """Two proxies on one node (and, as a fleet behind one address, one
    listen port: SO_REUSEPORT spreads the clients): both register, both
    apply one published change."""
    a, b = memcached_factory(2)
    port = free_port()
    pools = pools_for([a], port)
    zkc.put(node, harness.pool_yaml(pools))
    # two processes on one port must ask for it (share_listen_ports)
    share = "share_listen_ports = true;\n"
    p1 = zk_proxy(pools, zk.url(node), name="one", settings=share)
    p2 = zk_proxy(pools, zk.url(node), name="two", settings=share)
    regs = [p.reg_node(node) for p in (p1, p2)]
    assert wait_until(lambda: all(zkc.exists(r) for r in regs),
                      5 * TIME_SCALE)
    assert zkc.children(node + "/proxies") == sorted(
        r.rsplit("/", 1)[1] for r in regs)
    zkc.set(node, harness.pool_yaml(pools_for([b], port)))
    for p in (p1, p2):
        wait_applied(p, 1, 1.0 * TIME_SCALE)
    for i in range(20):   # new connections, spread over both proxies
        assert lands_on(p1, b, "fleet%d" % i)
    for r in regs:
        assert wait_until(lambda: json.loads(zkc.get(r)[0].decode())
                          ["generation"] == 2, 2.0 * TIME_SCALE, 0.02)


def test_session_expiry_new_session_reregisters(zk, zkc, node,
                                                memcached_factory, zk_proxy):
    """The session expires: Strata frozen (SIGSTOP) past the session
    timeout, so ZooKeeper, still running, expires its session for certain
    (its registration node goes). Resumed, Strata learns of the expiry,
    starts a new session, registers again, reads the node again, and
    serves throughout. (Freezing the server instead races the client's
    reconnect against the server's expiry tick.)"""
    a, p, reg = registered_proxy(zk, zkc, node, memcached_factory, zk_proxy)
    owner = zkc.get(reg)[1].ephemeral_owner
    os.kill(p.pid, signal.SIGSTOP)
    try:
        assert wait_until(lambda: zkc.exists(reg) is None,
                          4 * SESSION_MS / 1000.0 * TIME_SCALE, 0.1), \
            "ZooKeeper did not expire the frozen proxy's session"
    finally:
        os.kill(p.pid, signal.SIGCONT)
    assert lands_on(p, a, "resumed")
    assert wait_log(p, "expired", 3 * SESSION_MS / 1000.0 * TIME_SCALE)
    with zk.client() as c:
        assert wait_until(lambda: c.exists(reg) is not None and
                          c.exists(reg).ephemeral_owner != owner,
                          3 * SESSION_MS / 1000.0 * TIME_SCALE, 0.1)
    assert lands_on(p, a, "renewed")
    assert p.read_log().count("registered as") == 2


# ------------------------------------------- security: ACLs, credentials ----
# (issue 14: each of these fails on the main branch before it)

USER, PASSWORD = "ops", "s3cret-pw"
OPS_ID = digest_id(USER, PASSWORD)


def auth_file(workdir, name="zk.auth", mode=0o600):
    path = write(workdir, name, "%s:%s\n" % (USER, PASSWORD))
    os.chmod(path, mode)
    return path


def wait_rejected(proxy, text, timeout=5 * TIME_SCALE):
    """Waits for a rejected node change whose message has `text`."""
    def seen():
        return any("rejected" in line and text in line
                   for line in proxy.read_log().splitlines())
    return wait_until(seen, timeout, 0.05)


def test_publish_with_credentials_protects_the_node(zk, zkc, node, workdir):
    """--publish --zk-auth-file: the node and its new parents get the
    creator's ACL (digest ops, cdrwa); an unauthenticated client can no
    longer write them; no warning."""
    path = write(workdir, "p.yml", "alpha:\n  listen: 127.0.0.1:22121\n"
                 "  servers: [127.0.0.1:11211:1]\n")
    parent, node = node, node + "/center/pools"
    r = publish(path, zk.url(node), "--zk-auth-file", auth_file(workdir))
    assert r.returncode == 0, r.stderr
    assert "WARN" not in r.stderr
    with zk.client() as c:
        c.add_auth(USER, PASSWORD)
        for p in (node, node.rsplit("/", 1)[0], parent):
            assert c.get_acl(p) == [(31, "digest", OPS_ID)], p
    for call in (lambda: zkc.set(node, "alpha:\n  listen: /etc/passwd 0666\n"),
                 lambda: zkc.get(node), lambda: zkc.delete(node),
                 lambda: zkc.create(node + "/proxies", parents=False)):
        with pytest.raises(ZkError) as e:
            call()
        assert e.value.code == ZNOAUTH
    # the same identity publishes again
    r = publish(path, zk.url(node), "--zk-auth-file", auth_file(workdir))
    assert r.returncode == 0 and "version 1" in r.stdout, r.stderr


def test_publish_with_an_explicit_acl(zk, zkc, node, workdir):
    """zk_acl in -C: a digest owner plus read for anyone."""
    cfg = write(workdir, "pub.cfg", 'zk_acl = "digest:%s:cdrwa,world:anyone:r";\n'
                % OPS_ID)
    path = write(workdir, "p.yml", "alpha:\n  listen: 127.0.0.1:22121\n"
                 "  servers: [127.0.0.1:11211:1]\n")
    r = publish(path, zk.url(node), "-C", cfg, "--zk-auth-file",
                auth_file(workdir))
    assert r.returncode == 0, r.stderr
    assert "WARN" not in r.stderr
    with zk.client() as c:
        c.add_auth(USER, PASSWORD)
        assert sorted(c.get_acl(node)) == sorted(
            [(31, "digest", OPS_ID), (1, "world", "anyone")])
    # world may read (ZooKeeper masks the digest for readers without admin)
    assert sorted(zkc.get_acl(node)) == sorted(
        [(31, "digest", USER + ":x"), (1, "world", "anyone")])
    assert zkc.get(node)[0].startswith(b"alpha:")
    with pytest.raises(ZkError) as e:
        zkc.set(node, "x")
    assert e.value.code == ZNOAUTH


def test_publish_world_writable_warns(zk, zkc, node, workdir):
    path = write(workdir, "p.yml", "alpha:\n  listen: 127.0.0.1:22121\n"
                 "  servers: [127.0.0.1:11211:1]\n")
    r = publish(path, zk.url(node))
    assert r.returncode == 0, r.stderr
    assert "strata: WARN: the node is writable by anyone who reaches " \
        "ZooKeeper (world:cdrwa)" in r.stderr
    bad = write(workdir, "b.cfg", 'zk_acl = "world:anyone:rx";\n')
    r = publish(path, zk.url(node), "-C", bad)
    assert r.returncode == 1
    assert "zk_acl 'world:anyone:rx'" in r.stderr and "not one of c, d, r, w, a" \
        in r.stderr


def test_credentials_file_must_be_private(zk, node, workdir):
    path = write(workdir, "p.yml", "alpha:\n  listen: 127.0.0.1:22121\n"
                 "  servers: [127.0.0.1:11211:1]\n")
    r = publish(path, zk.url(node), "--zk-auth-file",
                auth_file(workdir, "open.auth", 0o644))
    assert r.returncode == 1
    assert "must be a regular file that only its owner may read (mode 0644" \
        in r.stderr
    assert PASSWORD not in r.stderr + r.stdout


def test_authenticated_proxy_reads_a_protected_node(zk, zkc, node, workdir,
                                                     memcached_factory,
                                                     zk_proxy):
    """A node only ops may read: a proxy with ops's credentials starts
    from it and registers with the same ACL; one without them cannot
    read it (and, with no cache file, does not start)."""
    a, = memcached_factory(1)
    pools = pools_for([a])
    path = write(workdir, "p.yml", harness.pool_yaml(pools))
    creds = auth_file(workdir)
    r = publish(path, zk.url(node), "--zk-auth-file", creds)
    assert r.returncode == 0, r.stderr
    p = zk_proxy(pools, zk.url(node),
                 settings='zk_auth_file = "%s";\n' % creds)
    assert lands_on(p, a, "guarded")
    assert wait_log(p, "configuration from %s, version 0" % zk.url(node), 2)
    reg = p.reg_node(node)
    with zk.client() as c:
        c.add_auth(USER, PASSWORD)
        assert wait_until(lambda: c.exists(reg) is not None, 5 * TIME_SCALE)
        assert c.get_acl(reg) == [(31, "digest", OPS_ID)]
        assert c.get_acl(node + "/proxies") == [(31, "digest", OPS_ID)]
    assert "writable by anyone" not in p.read_log()
    r = run_cli([proxy_binary("strata"), "-t", "-c", zk.url(node)], timeout=30)
    assert r.returncode == 1
    assert "not authorized" in r.stderr


def test_operators_and_proxies_with_identities_of_their_own(
        zk, zkc, node, workdir, memcached_factory, zk_proxy):
    """The recipe of docs/security.md: ops publishes and lets the proxies'
    identity read the node and create PATH/proxies; the proxies may not
    change the node's data; ops may read their registrations."""
    a, = memcached_factory(1)
    pools = pools_for([a])
    ops = auth_file(workdir, "ops.auth")
    strata = write(workdir, "strata.auth", "strata:pw2\n")
    os.chmod(strata, 0o600)
    pub = write(workdir, "pub.cfg", 'zk_acl = "auth::cdrwa,digest:%s:rc";\n'
                % digest_id("strata", "pw2"))
    r = publish(write(workdir, "p.yml", harness.pool_yaml(pools)),
                zk.url(node), "-C", pub, "--zk-auth-file", ops)
    assert r.returncode == 0, r.stderr
    assert "WARN" not in r.stderr
    p = zk_proxy(pools, zk.url(node), settings=(
        'zk_auth_file = "%s";\nzk_acl = "auth::cdrwa,digest:%s:cdrwa";\n'
        % (strata, OPS_ID)))
    assert lands_on(p, a, "two-ids")
    reg = p.reg_node(node)
    with zk.client() as c:
        c.add_auth(USER, PASSWORD)
        assert wait_until(lambda: c.exists(reg) is not None, 5 * TIME_SCALE)
        assert json.loads(c.get(reg)[0].decode())["pid"] == p.pid
    with zk.client() as c:
        c.add_auth("strata", "pw2")
        assert c.get(node)[0].startswith(b"alpha:")
        with pytest.raises(ZkError) as e:
            c.set(node, "alpha: {}\n")
        assert e.value.code == ZNOAUTH
    assert "writable by anyone" not in p.read_log()


def test_start_refuses_a_unix_listen_from_the_node(zk, zkc, node, workdir):
    """At start the same rule: no unix_socket_dir, no cache file: the
    proxy does not start, and the file named is untouched."""
    victim = victim_file(workdir)
    zkc.put(node, "alpha:\n  listen: %s 0666\n  servers: [127.0.0.1:11211:1]\n"
            % victim)
    cfg = write(workdir, "s.cfg", 'zk_cache_file = "%s/none.yml";\n' % workdir)
    r = run_cli([proxy_binary("strata"), "-c", zk.url(node), "-C", cfg,
                 "-s", str(free_port()), "-a", HOST], timeout=30)
    assert r.returncode == 1
    assert "%s:1: pool alpha: a unix socket listen (%s) from ZooKeeper is " \
        "refused: no unix_socket_dir is set" % (zk.url(node), victim) \
        in r.stderr, r.stderr
    assert_intact(victim)


def test_proxy_warns_about_a_world_writable_node(zk, zkc, node,
                                                 memcached_factory, zk_proxy):
    a, = memcached_factory(1)
    p = following_proxy(zk, zkc, node, a, zk_proxy)
    assert wait_log(p, "the node is writable by anyone who reaches ZooKeeper "
                    "(world:cdrwa)", 5 * TIME_SCALE)
    assert "the registration of this proxy (zk_acl) is writable by anyone" \
        in p.read_log()
    assert "WARN" in [line for line in p.read_log().splitlines()
                      if "the node is writable" in line][0].upper()


# ----------------------------------------- security: unix sockets, size ----

def victim_file(workdir, name="victim"):
    path = write(workdir, name, "precious\n")
    os.chmod(path, 0o640)
    return path


def assert_intact(path):
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    with open(path) as f:
        assert f.read() == "precious\n"


def test_unix_listen_from_an_open_node_is_refused(zk, zkc, node, workdir,
                                                  memcached_factory, zk_proxy):
    """The probe of issue 14: an unauthenticated client names a file as a
    unix listen with mode 0666. No unix_socket_dir: refused, the file is
    untouched, the old configuration keeps serving."""
    a, b = memcached_factory(2)
    port = free_port()
    p = following_proxy(zk, zkc, node, a, zk_proxy, port)
    victim = victim_file(workdir)
    evil = pools_for([b], port)
    evil["evil"] = simple_pool([b], listen="%s 0666" % victim)
    zkc.set(node, harness.pool_yaml(evil))
    assert wait_rejected(p, "no unix_socket_dir is set"), p.read_log()
    assert_intact(victim)
    assert lands_on(p, a, "kept")
    assert p.alive()


def test_unix_listen_in_the_allowed_dir_never_replaces_a_file(
        zk, zkc, node, workdir, memcached_factory, zk_proxy):
    """unix_socket_dir set: a path outside it is refused; a regular file
    inside it is refused, not replaced; a free path inside it is used."""
    a, = memcached_factory(1)
    port = free_port()
    socks = os.path.join(workdir, "socks")
    os.mkdir(socks)
    p = following_proxy(zk, zkc, node, a, zk_proxy, port,
                        settings='unix_socket_dir = "%s";\n' % socks)
    outside = victim_file(workdir)
    inside = victim_file(socks, "victim")

    def try_listen(path):
        conf = pools_for([a], port)
        conf["u"] = simple_pool([a], listen="%s 0666" % path)
        zkc.set(node, harness.pool_yaml(conf))
    try_listen(outside)
    assert wait_rejected(p, "is not in unix_socket_dir %s" % socks)
    try_listen(os.path.join(socks, "..", "victim"))
    assert wait_until(lambda: p.read_log().count("rejected") == 2,
                      5 * TIME_SCALE, 0.05)
    try_listen(inside)
    assert wait_rejected(p, "%s is a regular file, not a socket: refusing to "
                         "replace it" % inside), p.read_log()
    assert_intact(outside)
    assert_intact(inside)
    good = os.path.join(socks, "u.sock")
    try_listen(good)
    assert wait_until(lambda: harness.port_accepts(good), 5 * TIME_SCALE, 0.05)
    assert stat.S_IMODE(os.lstat(good).st_mode) == 0o666
    assert lands_on(p, a, "still")


def test_oversize_node_is_refused(zk, zkc, node, memcached_factory, zk_proxy):
    """Issue 14 item 9: a node over 1,000,000 bytes (ZooKeeper still
    takes 1,040,000) is refused with its size; the running configuration
    stays."""
    a, b = memcached_factory(2)
    port = free_port()
    p = following_proxy(zk, zkc, node, a, zk_proxy, port)
    text = harness.pool_yaml(pools_for([b], port))
    pad = 1040000 - len(text)
    big = text + "#" + "x" * (pad - 2) + "\n"
    assert len(big) == 1040000
    zkc.set(node, big)
    assert wait_rejected(p, "has 1040000 bytes; a pool file in ZooKeeper "
                         "holds at most 1000000"), p.read_log()
    assert lands_on(p, a, "small")


def test_start_and_reload_never_replace_a_file(workdir, memcached_factory,
                                               proxy_factory):
    """A local pool file (trusted, as nutcracker's) may name any path,
    but Strata only ever removes a stale socket there: a start on a
    regular file fails and leaves it; a SIGUSR1 reload onto one is
    rejected and leaves it."""
    a, = memcached_factory(1)
    victim = victim_file(workdir)
    pools = {"alpha": simple_pool([a], listen="%s 0666" % victim)}
    p = harness.Proxy("strata", proxy_binary("strata"), workdir, pools,
                      name="onfile")
    with pytest.raises(harness.HarnessError):
        p.start(timeout=5 * TIME_SCALE)
    assert "%s is a regular file, not a socket" % victim in p.read_log()
    assert_intact(victim)
    sock = os.path.join(workdir, "ok.sock")
    pools = {"alpha": simple_pool([a], listen=sock)}
    q = proxy_factory(pools)
    with q.client() as c:
        xchg(c, b"set k 0 0 1\r\nx\r\n", b"STORED\r\n")
    with open(q.confpath, "w") as f:
        f.write(harness.pool_yaml({"alpha": simple_pool(
            [a], listen="%s 0666" % victim)}))
    os.kill(q.pid, signal.SIGUSR1)
    assert wait_until(lambda: "rejected" in q.read_log(), 5 * TIME_SCALE,
                      0.05), q.read_log()
    assert "%s is a regular file, not a socket" % victim in q.read_log()
    assert_intact(victim)
    with q.client() as c:
        xchg(c, b"get k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n")
