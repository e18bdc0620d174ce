"""Strata only: Redis pools that follow Sentinel (issue 16).

Real processes: one master with a replica (`--replicaof`) and three
Sentinels (quorum 2, down-after 1 s, failover-timeout 3 s) from Debian's
redis-server, on free ports, per test (a failover changes the set).

Failover figures are printed (pytest -s) and recorded in
docs/benchmarks.md: the time from the switch (or the SIGKILL) to the first
write through Strata that succeeds, and the client errors meanwhile.
"""

import os
import subprocess
import threading
import time

import pytest

from compat_util import start_proxy, strata_bin
from harness import wait_until
from redis_util import Closed, RespConn, Timeout, have_redis, parse, proxy_conn
from sentinel_util import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SentinelSet

pytestmark = [
    pytest.mark.skipif(not have_redis(), reason="redis-server not installed"),
]

# A loaded 2-core machine: generous on top of Sentinel's own times.
SLACK_S = 10.0


@pytest.fixture
def sset():
    s = SentinelSet(replicas=1)
    yield s
    s.close()


def start(sset, name, **kw):
    return start_proxy("strata", sset.workdir, {"alpha": sset.pool(**kw)},
                       name=name)


class Writer(threading.Thread):
    """SETs through the proxy as fast as one connection allows; every
    outcome is recorded with its time (a new connection after an error)."""

    def __init__(self, proxy):
        super().__init__(daemon=True)
        self.proxy = proxy
        self.stop_ev = threading.Event()
        self.acked = []      # (time sent, key)
        self.errors = []     # (time, what)

    def run(self):
        conn, i = None, 0
        while not self.stop_ev.is_set():
            i += 1
            key = "w%d" % i
            t = time.monotonic()
            try:
                if conn is None:
                    conn = proxy_conn(self.proxy, "alpha", timeout=3.0)
                r = conn.call("SET", key, "v%d" % i)
            except (OSError, Timeout, Closed) as e:
                r = repr(e).encode()
                if conn is not None:
                    conn.close()
                conn = None
            if r == b"+OK\r\n":
                self.acked.append((t, key))
            else:
                self.errors.append((t, r[:80]))
        if conn is not None:
            conn.close()

    def first_ok_after(self, t0):
        return next((t for t, _ in self.acked if t >= t0), None)

    def finish(self):
        self.stop_ev.set()
        self.join(10)


def landed_on(proxy, server, timeout, auth=None):
    """The time a write through the proxy is first found on `server`
    (`auth`: the pool's redis_auth, which clients send to the proxy)."""
    n = [0]

    def probe():
        n[0] += 1
        key = "probe%d" % n[0]
        try:
            with proxy_conn(proxy, "alpha", timeout=2.0) as c:
                if auth is not None and c.call("AUTH", auth) != b"+OK\r\n":
                    return False
                if c.call("SET", key, "x") != b"+OK\r\n":
                    return False
            return server.call("GET", key) == b"$1\r\nx\r\n"
        except (OSError, Timeout, Closed):
            return False
    assert wait_until(probe, timeout, 0.02), "writes never reached the new master"
    return time.monotonic()


def check_after_switch(proxy, writer, new, t_landed):
    """Every write acknowledged through the proxy after it switched is on
    the new master (read back from it directly)."""
    late = [k for t, k in writer.acked if t >= t_landed]
    assert late, "no write acknowledged after the switch"
    with new.conn() as c:
        for k in late:
            c.send(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k.encode()))
        got = [c.reply() for _ in late]
    missing = [k for k, g in zip(late, got) if g == b"$-1\r\n"]
    assert not missing, "%d of %d writes after the switch are not on the new " \
        "master: %s" % (len(missing), len(late), missing[:5])
    return len(late)


def lost_writes(writer, new):
    """Acknowledged writes that the new master does not have (taken by the
    old master after the promotion, before the proxy switched)."""
    keys = [k for _, k in writer.acked]
    with new.conn() as c:
        for k in keys:
            c.send(b"*2\r\n$6\r\nEXISTS\r\n$%d\r\n%s\r\n" % (len(k), k.encode()))
        got = [c.reply() for _ in keys]
    return sum(1 for g in got if g == b":0\r\n")


def error_window(errs):
    return "%.3f" % (errs[-1][0] - errs[0][0]) if errs else "0"


def report(what, **figures):
    line = "sentinel figures: %s: %s" % (
        what, ", ".join("%s=%s" % kv for kv in figures.items()))
    print(line)
    with open(os.path.join(os.path.dirname(__file__), "..", "..",
                           "sentinel-figures.txt"), "a") as f:
        f.write(line + "\n")


# ------------------------------------------------------------ start-up ----

def test_routes_to_the_master_the_sentinels_name(sset):
    p = start(sset, "start")
    try:
        m = sset.master()
        with proxy_conn(p, "alpha") as c:
            assert c.call("SET", "k1", "v1") == b"+OK\r\n"
            assert c.call("GET", "k1") == b"$2\r\nv1\r\n"
        assert m.call("GET", "k1") == b"$2\r\nv1\r\n"
        assert "master 'mymaster' is at 127.0.0.1:%d" % m.port in p.read_log()
    finally:
        p.stop()


def test_reads_from_replicas_when_asked(sset):
    p = start(sset, "replicas", sentinel_read_replicas=True)
    try:
        m = sset.master()
        r = sset.replicas_of(m)[0]
        assert m.call("SET", "rk", "mv") == b"+OK\r\n"
        assert wait_until(lambda: r.call("GET", "rk") == b"$2\r\nmv\r\n", 5)
        r.reset_stats()
        with proxy_conn(p, "alpha") as c:
            for _ in range(5):
                assert c.call("GET", "rk") == b"$2\r\nmv\r\n"
        assert r.commandstats().get("get", 0) == 5
    finally:
        p.stop()


def test_read_split_follows_a_failover(sset):
    """sentinel_read_replicas: reads go to the replica; after a failover
    to the promoted one's former master, once the Sentinels list it as a
    healthy replica, and never to the promoted replica as a replica."""
    p = start(sset, "follow", sentinel_read_replicas=True)
    try:
        old = sset.master()
        sset.failover()
        new = sset.wait_new_master(old.port)
        landed_on(p, new, 10 + SLACK_S)
        assert new.call("SET", "fk", "fv") == b"+OK\r\n"

        def reads_on_old():
            old.reset_stats()
            new.reset_stats()
            with proxy_conn(p, "alpha") as c:
                for _ in range(5):
                    if c.call("GET", "fk") != b"$2\r\nfv\r\n":
                        return False
            return old.commandstats().get("get", 0) == 5 and \
                new.commandstats().get("get", 0) == 0
        assert wait_until(reads_on_old, 20 + SLACK_S, 0.2), p.read_log()[-2000:]
    finally:
        p.stop()


def test_start_refused_when_no_sentinel_answers(sset):
    body = sset.pool()
    body["sentinels"] = ["127.0.0.1:1"]
    t0 = time.monotonic()
    with pytest.raises(Exception) as e:
        start_proxy("strata", sset.workdir, {"alpha": body}, name="refused")
    assert time.monotonic() - t0 < 20
    assert "no Sentinel answered" in str(e.value)


def test_sentinels_need_a_redis_pool(tmp_path):
    path = tmp_path / "mc.yml"
    path.write_text("alpha:\n  listen: 127.0.0.1:22121\n"
                    "  sentinels: [127.0.0.1:26379]\n  master_name: m\n")
    r = subprocess.run([strata_bin(), "-t", "-c", str(path)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "%s:3: key 'sentinels' in pool 'alpha' needs 'redis: true'" % path \
        in r.stderr, r.stderr


def test_start_refused_for_a_name_no_sentinel_knows(sset):
    with pytest.raises(Exception) as e:
        start_proxy("strata", sset.workdir,
                    {"alpha": sset.pool(master_name="nosuch")}, name="nosuch")
    assert "no usable answer for master 'nosuch'" in str(e.value)


def test_t_validates_without_contacting_sentinels(tmp_path):
    path = tmp_path / "s.yml"
    path.write_text("alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n"
                    "  sentinels: [192.0.2.1:26379, 192.0.2.2:26379]\n"
                    "  master_name: mymaster\n")
    t0 = time.monotonic()
    r = subprocess.run([strata_bin(), "-t", "-c", str(path)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert "syntax is ok" in r.stderr
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("body,line,text", [
    ("  sentinels: [127.0.0.1:26379]\n  master_name: m\n  servers: [127.0.0.1:6379:1]\n",
     6, "key 'servers' in pool 'alpha' cannot be used together with 'sentinels'"),
    ("  master_name: m\n  servers: [127.0.0.1:6379:1]\n",
     4, "key 'master_name' in pool 'alpha' needs 'sentinels'"),
    ("  sentinels: [127.0.0.1]\n  master_name: m\n",
     4, "key 'sentinels' in pool 'alpha' has no port"),
    ("  sentinels: [127.0.0.1:26379]\n",
     4, "missing key 'master_name' in pool 'alpha'"),
    ("  sentinels: [127.0.0.1:26379]\n  master_names: [a, b, a]\n",
     5, "names a master twice: 'a'"),
    ("  sentinels: [127.0.0.1:26379]\n  master_name: m\n  sentinel_interval: 0\n",
     6, "sentinel_interval"),
    ("  sentinels: [127.0.0.1:26379]\n  master_name: m\n  master_names: [a]\n",
     6, "keys 'master_name' and 'master_names' in pool 'alpha' cannot be used together"),
    ("  sentinels: [127.0.0.1:26379]\n  master_name: m\n  read_from: master\n",
     6, "key 'read_from' in pool 'alpha' cannot be used together with 'sentinels'"),
])
def test_bad_keys_rejected_with_file_and_line(tmp_path, body, line, text):
    path = tmp_path / "bad.yml"
    path.write_text("alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n" + body)
    r = subprocess.run([strata_bin(), "-t", "-c", str(path)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "%s:%d:" % (path, line) in r.stderr, r.stderr
    assert text in r.stderr, r.stderr


# ------------------------------------------------------------ failover ----

class Run:
    """What a failover under load gave: the Writer, the times (t0: the
    act; switch: every Sentinel names the new master; landed: a write
    through the proxy is first found on it), the new master, the writes
    after the switch checked on it, and the client errors after t0."""


def failover_under_load(sset, name, act):
    """A proxy and a Writer; act(old master) at t0; then waits for the
    new master and for the proxy to write there, checks the writes
    acknowledged after that on the new master."""
    p = start(sset, name)
    w = Writer(p)
    r = Run()
    try:
        old = sset.master()
        w.start()
        assert wait_until(lambda: len(w.acked) > 100, 10)
        time.sleep(0.5)   # a measure of the write rate, not a wait
        r.t0 = time.monotonic()
        r.rate = sum(1 for t, _ in w.acked if t >= r.t0 - 0.5) * 2
        act(old)
        r.new = sset.wait_new_master(old.port, timeout=30)
        r.t_switch = time.monotonic()
        r.t_landed = landed_on(p, r.new, 10 + SLACK_S)
        time.sleep(0.3)   # more load on the new master (a measure, not a wait)
        w.finish()
        r.after = check_after_switch(p, w, r.new, r.t_landed)
        r.w = w
        r.errs = [e for e in w.errors if e[0] >= r.t0]
        r.lost = lost_writes(w, r.new)
        return r
    finally:
        w.finish()
        p.stop()


def test_failover_command_under_load(sset):
    r = failover_under_load(sset, "failover", lambda old: sset.failover())
    report("SENTINEL failover", writes_per_s=r.rate,
           sentinels_switched_s="%.3f" % (r.t_switch - r.t0),
           proxy_on_new_master_after_s="%.3f" % max(0.0, r.t_landed - r.t_switch),
           client_errors=len(r.errs), error_window_s=error_window(r.errs),
           acked_writes_lost=r.lost, writes_after_switch_checked=r.after,
           error_kinds=sorted(set(e[1][:40] for e in r.errs))[:3])
    assert r.t_landed - r.t0 < FAILOVER_TIMEOUT_MS / 1000 + SLACK_S


def test_master_sigkill(sset):
    r = failover_under_load(sset, "sigkill", lambda old: old.kill())
    assert r.errs, "no write failed while the master was down"
    first = r.w.first_ok_after(r.errs[0][0])
    report("master SIGKILL", writes_per_s=r.rate,
           sentinels_switched_s="%.3f" % (r.t_switch - r.t0),
           first_write_after_kill_s="%.3f" % (first - r.t0),
           writes_failing_for_s="%.3f" % (first - r.errs[0][0]),
           client_errors=len(r.errs), acked_writes_lost=r.lost,
           writes_after_switch_checked=r.after)
    assert first - r.t0 < (DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS) / 1000 + SLACK_S


def test_rotates_when_a_sentinel_dies(sset):
    p = start(sset, "rotate", sentinel_interval=200)
    try:
        old = sset.master()
        sset.sentinels[0].stop()   # the one Strata asks first
        assert wait_until(lambda: "trying the next one" in p.read_log(), 10)
        sset.failover()
        new = sset.wait_new_master(old.port)
        landed_on(p, new, 10 + SLACK_S)
        # the first Sentinel back: it is the one Strata rotates to later
        sset.sentinels[0].start()
        with proxy_conn(p, "alpha") as c:
            assert c.call("SET", "after", "1") == b"+OK\r\n"
        assert new.call("GET", "after") == b"$1\r\n1\r\n"
    finally:
        p.stop()


def test_rotates_past_a_sentinel_that_hangs(sset):
    """A paused Sentinel (SIGSTOP: it accepts, it never answers) costs
    sentinel_timeout, then the next one is asked."""
    p = start(sset, "hang", sentinel_interval=200, sentinel_timeout=300)
    try:
        old = sset.master()
        sset.sentinels[0].pause()
        assert wait_until(lambda: "Resource temporarily unavailable" in p.read_log()
                          or "no usable answer" in p.read_log(), 10), p.read_log()
        sset.failover(via=sset.sentinels[1])
        new = sset.wait_new_master(old.port)
        landed_on(p, new, 10 + SLACK_S)
    finally:
        sset.sentinels[0].resume()
        p.stop()


def test_every_sentinel_down_then_back(sset):
    """With no Sentinel the pool keeps its master and serves; when they
    are back (same ports), a failover is followed again."""
    p = start(sset, "alldown", sentinel_interval=200)
    try:
        old = sset.master()
        for s in sset.sentinels:
            s.stop()
        assert wait_until(lambda: "no Sentinel answered" in p.read_log(), 10)
        with proxy_conn(p, "alpha") as c:
            assert c.call("SET", "still", "1") == b"+OK\r\n"
        assert old.call("GET", "still") == b"$1\r\n1\r\n"
        for s in sset.sentinels:
            s.start(same_port=True)
        sset.wait_known(1)
        sset.failover()
        new = sset.wait_new_master(old.port)
        landed_on(p, new, 10 + SLACK_S)
    finally:
        p.stop()


# --------------------------------------------- ZooKeeper registration ----

def test_switch_updates_the_zookeeper_registration(sset, tmp_path):
    """Issue 16, section 4: the registration names the generation; a
    switch through Sentinel is a new one and is published."""
    import json
    from harness import pool_yaml
    from zk_util import ZooKeeperServer, zookeeper_missing
    from test_zk import ZkProxy
    why = zookeeper_missing()
    if why:
        pytest.skip(why)
    os.makedirs(str(tmp_path / "zk"))
    zk = ZooKeeperServer(str(tmp_path / "zk"))
    zk.start()
    p = None
    try:
        from compat_util import distinct_ports
        port, = distinct_ports(1)
        pools = {"alpha": sset.pool(listen="127.0.0.1:%d" % port)}
        with zk.client() as c:
            c.create("/strata-sentinel")
            c.put("/strata-sentinel/pools", pool_yaml(pools))
        p = ZkProxy(str(tmp_path), pools, zk.url("/strata-sentinel/pools"), "zkreg")
        p.start(timeout=15.0)
        reg = p.reg_node("/strata-sentinel/pools")

        def generation():
            with zk.client() as c:
                if c.exists(reg) is None:
                    return None
                return json.loads(c.get(reg)[0].decode())["generation"]
        assert wait_until(lambda: generation() == 1, 10)
        old = sset.master()
        sset.failover()
        new = sset.wait_new_master(old.port)
        landed_on(p, new, 10 + SLACK_S)
        assert wait_until(lambda: generation() == 2, 10)
    finally:
        if p is not None:
            p.stop()
        zk.stop()


# ------------------------------------------------ shards, auth, reload ----

def test_sharded_pool_keeps_each_key_on_its_shard():
    """master_names: [a, b]: the servers are named by master name, so a
    key maps to the same shard as in a plain pool with servers named a
    and b, before and after shard a fails over."""
    s = SentinelSet(names=("a", "b"), replicas=1)
    p = None
    try:
        ma, mb = s.master("a"), s.master("b")
        plain = {"redis": True, "timeout": 1000,
                 "servers": ["%s:1 a" % ma.addr, "%s:1 b" % mb.addr]}
        p = start_proxy("strata", s.workdir, {"alpha": s.pool(),
                                               "plain": plain}, name="shards")
        keys = ["key%d" % i for i in range(60)]
        with proxy_conn(p, "alpha") as c:
            for k in keys:
                assert c.call("SET", k, "v-" + k) == b"+OK\r\n"
        with proxy_conn(p, "plain") as c:
            for k in keys:   # the plain pool finds each where alpha put it
                assert c.call("GET", k) == b"$%d\r\nv-%s\r\n" % (len(k) + 2, k.encode())
        on_a = [k for k in keys if ma.call("EXISTS", k) == b":1\r\n"]
        assert 0 < len(on_a) < len(keys)
        s.failover("a")
        new_a = s.wait_new_master(ma.port, name="a")
        landed = [False]

        def moved():
            with proxy_conn(p, "alpha") as c:
                assert c.call("SET", on_a[0], "moved") == b"+OK\r\n"
            landed[0] = new_a.call("GET", on_a[0]) == b"$5\r\nmoved\r\n"
            return landed[0]
        assert wait_until(moved, 10 + SLACK_S, 0.05)
        with proxy_conn(p, "alpha") as c:
            for k in keys:
                assert c.call("SET", k, "w-" + k) == b"+OK\r\n"
        for k in keys:
            home = new_a if k in on_a else mb
            assert home.call("GET", k) == b"$%d\r\nw-%s\r\n" % (len(k) + 2, k.encode())
    finally:
        if p is not None:
            p.stop()
        s.close()


def test_sentinel_auth():
    s = SentinelSet(replicas=1, password="s3cret")
    p = None
    try:
        body = s.pool()
        with pytest.raises(Exception) as e:
            start_proxy("strata", s.workdir, {"alpha": body}, name="noauth")
        assert "no Sentinel answered" in str(e.value)
        body["sentinel_auth"] = "s3cret"
        p = start_proxy("strata", s.workdir, {"alpha": body}, name="auth")
        with proxy_conn(p, "alpha") as c:
            assert c.call("SET", "a", "1") == b"+OK\r\n"
        assert s.master().call("GET", "a") == b"$1\r\n1\r\n"
    finally:
        if p is not None:
            p.stop()
        s.close()


def test_data_servers_with_redis_auth():
    """redis_auth is what the data servers need, for the clients' commands
    and for the ROLE checks of a failover; the Sentinels need none here."""
    s = SentinelSet(replicas=1, data_password="d4ta")
    p = None
    try:
        p = start_proxy("strata", s.workdir,
                        {"alpha": s.pool(redis_auth="d4ta")}, name="dataauth")
        assert "does not answer ROLE" not in p.read_log()
        old = s.master()
        s.failover()
        new = s.wait_new_master(old.port)
        landed_on(p, new, 10 + SLACK_S, auth="d4ta")
        assert "switching to it ahead of +switch-master" in p.read_log()
    finally:
        if p is not None:
            p.stop()
        s.close()


def test_sigusr1_reload_keeps_the_current_master(sset):
    """The pool file names no servers: a reload after a failover runs on
    the master the Sentinels name now, not on anything older."""
    import signal
    p = start(sset, "sigusr1")
    try:
        old = sset.master()
        sset.failover()
        new = sset.wait_new_master(old.port)
        landed_on(p, new, 10 + SLACK_S)
        os.kill(p.pid, signal.SIGUSR1)
        assert wait_until(lambda: p.read_log().count("handed to the workers") >= 2, 10)
        for i in range(20):
            with proxy_conn(p, "alpha") as c:
                assert c.call("SET", "r%d" % i, "x") == b"+OK\r\n"
            assert new.call("GET", "r%d" % i) == b"$1\r\nx\r\n"
    finally:
        p.stop()


def test_reload_adds_changes_and_removes_sentinel_pools(sset):
    """A reload that adds a Sentinel pool asks the Sentinels then; one
    that changes a pool's Sentinel keys gets a new follower; the followers
    no configuration uses any more are stopped at the next reload."""
    from compat_util import distinct_ports
    from reload_util import reload
    p = start(sset, "reloads")
    try:
        port, = distinct_ports(1)
        pools = {"alpha": dict(p.pools["alpha"], sentinel_interval=500),
                 "gamma": sset.pool(listen="127.0.0.1:%d" % port)}
        reload(p, pools)
        assert wait_until(lambda: p.read_log().count(
            "master 'mymaster' is at") == 3, 5)   # alpha again, and gamma
        with proxy_conn(p, "gamma") as c:
            assert c.call("SET", "g", "1") == b"+OK\r\n"
        assert sset.master().call("GET", "g") == b"$1\r\n1\r\n"
        reload(p, {"gamma": pools["gamma"]})
        assert wait_until(lambda: p.read_log().count(
            "no longer followed") == 1, 5)        # alpha's first follower
        reload(p, {"gamma": pools["gamma"]})
        assert wait_until(lambda: p.read_log().count(
            "no longer followed") == 2, 5)        # alpha's second
        with proxy_conn(p, "gamma") as c:
            assert c.call("SET", "g", "2") == b"+OK\r\n"
    finally:
        p.stop()
