"""Live reload: `kill -USR1 <pid>` re-reads the pool file (issue 10).

The contract under test:
- a file that does not validate is rejected whole: the running
  configuration stays, the error is logged with file and line, and
  `reload_failures` in the stats JSON goes up; `strata -t` and a reload
  use the same validation (the same message);
- a valid file is applied by every worker at a safe point: client
  connections stay open, requests in flight finish on the old topology,
  the next ones use the new one; backend connections to servers that stay
  are kept; removed servers' connections close after their in-flight
  requests; added pools listen; removed pools stop listening and their
  clients are closed after their in-flight replies; a changed `listen`
  moves the listener;
- stats (top level, after nutcracker's fields): config_generation (1 at
  start, +1 per applied reload), config_source, config_loaded_at,
  reloads, reload_failures.

Routing after each reload is compared with nutcracker 0.5.0 started with
the same pool (as test_compat_routing.py does).  Every load is bounded in
time, every wait is bounded, processes are stopped by PID.
"""

import copy
import os
import time

import pytest

from compat_util import distinct_ports, have_nutcracker
from harness import (HOST, TIME_SCALE, MCClient, Reply, ScriptedBackend,
                     default_strata_bin, pool_yaml, port_accepts, run_cli,
                     wait_until)
from policy_util import held
from reload_util import (Load, McLoad, check_stats_fields, invalid_yaml, mc_stat,
                         refuses, reload, reload_rejected,
                         routing_matches_nutcracker, stats,
                         write_atomically)

pytestmark = [pytest.mark.strata_only]

needs_nc = pytest.mark.skipif(not have_nutcracker(),
                              reason="nutcracker not installed (the routing "
                              "reference)")

PROXY_ARGS = ["--workers", "2", "-i", "100"]
SLOW = 1.0 * TIME_SCALE      # a scripted server's delay for "slow" keys


def srv(s, name, weight=1):
    return "%s:%d:%d %s" % (HOST, s.port, weight, name)


def mc_pool(servers, listen, **kw):
    """A single-tier pool over [(Memcached, name)] or [(.., name, weight)]."""
    body = {"listen": listen, "hash": "md5", "distribution": "ketama",
            "timeout": 2000, "auto_eject_hosts": False,
            "servers": [srv(*e) for e in servers]}
    body.update(kw)
    return body


def listens(n):
    return ["%s:%d" % (HOST, p) for p in distinct_ports(n)]


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def start(proxy_factory, pools, extra_args=()):
    return proxy_factory(pools, extra_args=PROXY_ARGS + list(extra_args))


def copy_pools(pools):
    return copy.deepcopy(pools)


class SlowKeys(ScriptedBackend):
    """A memcached stand-in: `get slow...` is answered with a VALUE after
    SLOW seconds, other gets miss, sets are STORED.  Counts the
    connections the proxy closed (.eofs)."""

    def __init__(self, tag):
        self.tag = tag.encode()
        self.eofs = 0
        super().__init__(self._script)

    def _script(self, line):
        w = line.split()
        if w[0] == b"get" and w[1].startswith(b"slow"):
            v = self.tag + b"-" + w[1]
            return Reply(b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (w[1], len(v), v),
                         delay=SLOW)
        if w[0] in (b"get", b"gets"):
            return b"END\r\n"
        if w[0] in self.STORAGE:
            return b"STORED\r\n"
        return b"ERROR\r\n"

    def _serve(self, c):
        try:
            super()._serve(c)
        finally:
            with self.lock:
                self.eofs += 1

    def saw(self, key):
        with self.lock:
            return any(key.encode() in ln for ln in self.lines)


@pytest.fixture
def scripted():
    made = []

    def make(tag):
        b = SlowKeys(tag)
        made.append(b)
        return b
    yield make
    for b in made:
        b.stop()


def use_pool(proxy, pool, tag):
    """A set and a get through a pool, on a fresh connection."""
    with proxy.client(pool, timeout=5.0) as c:
        assert c.set("use-%s" % tag, tag) == b"STORED\r\n", \
            "pool %s does not serve" % pool
        got = c.get("use-%s" % tag)
    return got


# ---------------------------------------------------------------- stats ----

def test_stats_fields_and_one_reload(memcached_factory, proxy_factory):
    ms = memcached_factory(2)
    la, = listens(1)
    t0 = time.time()
    p = start(proxy_factory, {"alpha": mc_pool([(ms[0], "mc0")], la)})
    doc = stats(p)
    check_stats_fields(doc)
    assert doc["config_generation"] == 1
    assert doc["reloads"] == 0 and doc["reload_failures"] == 0
    assert doc["config_source"] == p.confpath, doc["config_source"]
    assert t0 - 2 <= doc["config_loaded_at"] <= time.time() + 2, \
        doc["config_loaded_at"]
    time.sleep(1.1)   # config_loaded_at is in whole seconds
    new = {"alpha": mc_pool([(ms[0], "mc0"), (ms[1], "mc1")], la)}
    doc2 = reload(p, new)
    check_stats_fields(doc2)
    assert doc2["config_generation"] == 2 and doc2["reloads"] == 1
    assert doc2["config_loaded_at"] > doc["config_loaded_at"], \
        (doc["config_loaded_at"], doc2["config_loaded_at"])
    assert doc2["config_source"] == p.confpath
    # the stats JSON shows the new pool's servers
    assert set(k for k, v in doc2["alpha"].items()
               if isinstance(v, dict)) >= {"mc0", "mc1"}, doc2["alpha"]
    text, line = invalid_yaml(new, "alpha")
    reload_rejected(p, text, line)
    doc3 = stats(p)
    assert doc3["config_generation"] == 2 and doc3["reload_failures"] == 1
    assert doc3["config_loaded_at"] == doc2["config_loaded_at"]


# ----------------------------------------------------------- under load ----

@needs_nc
def test_twenty_reloads_under_load(memcached_factory, proxy_factory,
                                   scripted, workdir):
    """20 reloads (two of them invalid) while 12 connections run checked,
    pipelined get/set through two pools (and bench/mcload, if gcc is
    there, through the first ~10 s); after each reload the new routing is
    in force; no client error beyond misses a routing change explains; no
    load connection closed."""
    m = memcached_factory(5)
    la, lg, ld, le, lg2 = listens(5)
    delta_be = scripted("delta")
    pools = {
        "alpha": mc_pool([(m[0], "mc0"), (m[1], "mc1"), (m[2], "mc2")], la),
        "gamma": mc_pool([(m[3], "mc3"), (m[4], "mc4")], lg,
                         hash="fnv1a_64"),
    }
    p = start(proxy_factory, pools)
    load_a = Load(p.pool_port("alpha"), "la", conns=8, depth=8).start()
    load_g = Load(port_of(lg), "lg", conns=4, depth=4).start()
    loads = [load_a, load_g]
    # and bench/mcload, pipelined, through the first reloads (~10 s)
    mcl = McLoad(workdir, p.pool_port("alpha"), seconds=10.0).start()
    state = {"n": 0}
    held_delta = {}

    def step(label, mutate=None, check=None, invalid=None):
        state["n"] += 1
        what = "reload %d (%s)" % (state["n"], label)
        if invalid is not None:
            text, line = invalid(p.pools)
            reload_rejected(p, text, line, what=what)
        else:
            new = copy_pools(p.pools)
            mutate(new)
            reload(p, new, load=loads, what=what)
        for ld_ in loads:
            ld_.wait_progress()
            assert ld_.error_count == 0 and not ld_.dropped, \
                "after %s:\n%s" % (what, ld_.report())
        if check:
            check(what)

    def routed(pool):
        def check(what):
            routing_matches_nutcracker(p, pool, m, p.pools[pool], workdir,
                                       what=what)
        return check

    def alpha_servers(*names_weights):
        def mutate(new):
            new["alpha"]["servers"] = [
                srv(m[int(nw[0][2:])], nw[0], nw[1] if len(nw) > 1 else 1)
                for nw in names_weights]
        return mutate

    def setk(pool, **kw):
        def mutate(new):
            new[pool].update(kw)
        return mutate

    def bad_key(pools_now):
        return invalid_yaml(pools_now, "alpha")

    def bad_hash(pools_now):
        text = pool_yaml(pools_now)
        lines = text.splitlines()
        start_i = lines.index("alpha:")
        i = next(j for j in range(start_i + 1, len(lines))
                 if lines[j].startswith("  hash:"))
        lines[i] = "  hash: no_such_hash_function"
        return "\n".join(lines) + "\n", i + 1

    def add_delta(new):
        new["delta"] = {"listen": ld, "hash": "md5",
                        "distribution": "ketama", "timeout": 5000,
                        "auto_eject_hosts": False,
                        "servers": ["%s:%d:1 d0" % (HOST, delta_be.port)]}

    def delta_serves(what):
        assert wait_until(lambda: port_accepts(port_of(ld)),
                          2.0 * TIME_SCALE), \
            "%s: the added pool's listener %s does not accept" % (what, ld)
        assert use_pool(p, "delta", "d") is None    # delta's server misses
        # clients of delta for the removal later: one idle, one with a
        # request in flight at the time of the reload
        held_delta["idle"] = p.client("delta", timeout=5.0)
        held_delta["busy"] = p.client("delta", timeout=5.0)
        assert held_delta["idle"].set("x", "y") == b"STORED\r\n"

    def remove_delta(new):
        del new["delta"]
        # the idle client of delta stayed open across the reloads since
        assert held_delta["idle"].set("x2", "y") == b"STORED\r\n", \
            "a client of pool delta was closed by a reload that kept delta"
        c = held_delta["busy"]
        c.send(b"get slow-inflight\r\n")
        assert wait_until(lambda: delta_be.saw("slow-inflight"),
                          2.0 * TIME_SCALE), \
            "the in-flight get never reached delta's server"

    def delta_gone(what):
        c = held_delta["busy"]
        want = b"VALUE slow-inflight 0 %d\r\ndelta-slow-inflight\r\nEND\r\n" \
            % len(b"delta-slow-inflight")
        got = c.read_expected(want, timeout=SLOW + 5.0 * TIME_SCALE)
        assert got == want, ("%s: a client of the removed pool did not get "
                             "its in-flight reply: %r" % (what, got))
        assert c.expect_closed(3.0 * TIME_SCALE), \
            "%s: a client of the removed pool stays open after its reply" \
            % what
        assert held_delta["idle"].expect_closed(3.0 * TIME_SCALE), \
            "%s: an idle client of the removed pool is not closed" % what
        assert refuses(port_of(ld)), \
            "%s: the removed pool's port %s still accepts" % (what, ld)

    def move_gamma(new):
        new["gamma"]["listen"] = lg2

    def gamma_moved(what):
        assert wait_until(lambda: port_accepts(port_of(lg2)),
                          2.0 * TIME_SCALE), \
            "%s: gamma's new listen %s does not accept" % (what, lg2)
        assert use_pool(p, "gamma", "g") == b"g"
        assert refuses(port_of(lg)), \
            "%s: gamma's old listen %s still accepts" % (what, lg)
        # gamma's existing load connections (on the old port) go on
        load_g.wait_progress()

    def add_eps(new):
        new["epsilon"] = mc_pool([(m[1], "e1"), (m[2], "e2"), (m[4], "e4")],
                                 le, hash="murmur")

    def eps_serves(what):
        assert wait_until(lambda: port_accepts(port_of(le)),
                          2.0 * TIME_SCALE), \
            "%s: the added pool's listener %s does not accept" % (what, le)
        assert use_pool(p, "epsilon", "e") == b"e"
        routed("epsilon")(what)

    try:
        step("add server mc3 to alpha",
             alpha_servers(("mc0",), ("mc1",), ("mc2",), ("mc3",)),
             routed("alpha"))
        step("remove server mc1 from alpha",
             alpha_servers(("mc0",), ("mc2",), ("mc3",)), routed("alpha"))
        step("invalid: unknown key", invalid=bad_key, check=routed("alpha"))
        step("add pool delta", add_delta, delta_serves)
        step("alpha hash fnv1a_64", setk("alpha", hash="fnv1a_64"),
             routed("alpha"))
        step("alpha distribution modula", setk("alpha", distribution="modula"),
             routed("alpha"))
        step("gamma listen moves", move_gamma, gamma_moved)
        step("alpha hash_tag {}", setk("alpha", hash_tag='"{}"'),
             routed("alpha"))
        step("remove pool delta (a request in flight)", remove_delta,
             delta_gone)
        step("alpha weights 3:1:1",
             alpha_servers(("mc0", 3), ("mc2",), ("mc3",)), routed("alpha"))
        step("invalid: unknown hash", invalid=bad_hash, check=routed("alpha"))
        step("alpha back to md5 ketama",
             setk("alpha", hash="md5", distribution="ketama"),
             routed("alpha"))
        step("alpha gets mc1 back and mc4",
             alpha_servers(("mc0", 3), ("mc1",), ("mc2",), ("mc3",),
                           ("mc4",)), routed("alpha"))
        step("gamma hash murmur", setk("gamma", hash="murmur"),
             routed("gamma"))
        step("gamma adds mc0",
             lambda new: new["gamma"]["servers"].append(srv(m[0], "mc0")),
             routed("gamma"))
        step("add pool epsilon", add_eps, eps_serves)
        step("alpha removes mc0 and mc2",
             alpha_servers(("mc1",), ("mc3",), ("mc4",)), routed("alpha"))
        step("alpha timeout only", setk("alpha", timeout=3000),
             routed("alpha"))
        step("remove pool epsilon", lambda new: new.pop("epsilon"),
             lambda what: refuses(port_of(le)) or pytest.fail(
                 "%s: epsilon's port still accepts" % what))
        step("alpha crc32 modula, gamma one_at_a_time",
             lambda new: (new["alpha"].update(hash="crc32",
                                              distribution="modula"),
                          new["gamma"].update(hash="one_at_a_time")),
             lambda what: (routed("alpha")(what), routed("gamma")(what)))
        assert state["n"] == 20
        if mcl is not None:
            mcl.finish()
    finally:
        for ld_ in loads:
            ld_.stop()
        if mcl is not None:
            mcl.stop()
        for c in held_delta.values():
            c.close()
    doc = stats(p)
    assert doc["config_generation"] == 1 + 18 and doc["reloads"] == 18 and \
        doc["reload_failures"] == 2, \
        {k: doc.get(k) for k in ("config_generation", "reloads",
                                 "reload_failures")}
    for ld_ in loads:
        ld_.assert_clean()
        assert ld_.ops > 1000, ld_.report()


# ------------------------------------------------ in flight / old servers ----

def test_in_flight_finish_on_old_topology(memcached_factory, proxy_factory,
                                          scripted):
    """A request in flight on a server that a reload removes gets that
    server's reply; the next request on the same connection goes to the new
    server; the removed server's connections are then closed."""
    m0, = memcached_factory(1)
    old = scripted("old")
    la, = listens(1)
    body = {"listen": la, "hash": "md5", "distribution": "ketama",
            "timeout": 5000, "auto_eject_hosts": False,
            "servers": ["%s:%d:1 s0" % (HOST, old.port)]}
    p = start(proxy_factory, {"alpha": body})
    with MCClient(m0.port) as d:
        assert d.set("slow-k", "from-memcached") == b"STORED\r\n"
    c = p.client("alpha", timeout=5.0)
    c.send(b"get slow-k\r\n")
    assert wait_until(lambda: old.saw("slow-k"), 2.0 * TIME_SCALE)
    new = {"alpha": dict(body, servers=[srv(m0, "s0")])}
    reload(p, new)
    want = b"VALUE slow-k 0 10\r\nold-slow-k\r\nEND\r\n"
    got = c.read_expected(want, timeout=SLOW + 5.0 * TIME_SCALE)
    assert got == want, "the in-flight get did not finish on the old " \
        "server: %r" % got
    assert c.get("slow-k") == b"from-memcached", \
        "the next request did not use the new topology"
    assert wait_until(lambda: old.eofs >= old.accepted and old.accepted > 0,
                      3.0 * TIME_SCALE), \
        "the removed server's connections stay open (%d accepted, %d closed)"\
        % (old.accepted, old.eofs)
    c.close()


def test_backend_connections_kept(memcached_factory, proxy_factory):
    """A reload that only adds a server: the servers that stay see no new
    connection (memcached's total_connections, and Strata's
    server_connections)."""
    ms = memcached_factory(3)
    la, = listens(1)
    body = mc_pool([(ms[0], "mc0"), (ms[1], "mc1")], la)
    p = start(proxy_factory, {"alpha": body})
    keys = ["bk:%d" % i for i in range(64)]

    def traffic(n=8):
        # several connections, so that every worker talks to every server
        for _ in range(n):
            with p.client("alpha", timeout=5.0) as c:
                c.send(b"".join(b"set %s 0 0 1\r\nv\r\n" % k.encode()
                                for k in keys))
                want = b"STORED\r\n" * len(keys)
                assert c.read_expected(want, timeout=5.0) == want

    def totals():
        # each probe is a new connection: it counts itself once
        return [mc_stat(s, "total_connections") for s in ms[:2]]

    # warm up until every worker holds its backend connections
    before = None
    for _ in range(10):
        traffic()
        t = totals()
        if before is not None and all(b + 1 == a for b, a in zip(before, t)):
            before = t
            break
        before = t
    else:
        pytest.fail("backend connection counts never settled: %s" % before)
    sc_before = {n: stats(p)["alpha"][n]["server_connections"]
                 for n in ("mc0", "mc1")}
    reload(p, {"alpha": mc_pool([(ms[0], "mc0"), (ms[1], "mc1"),
                                 (ms[2], "mc2")], la)})
    traffic()
    after = totals()
    assert after == [b + 1 for b in before], (
        "servers that stayed in the pool saw new connections after a reload "
        "that only added a server: total_connections %s -> %s (+1 is the "
        "probe itself)" % (before, after))
    assert mc_stat(ms[2], "total_connections") > 1, \
        "the added server got no traffic"
    doc = stats(p)
    sc_after = {n: doc["alpha"][n]["server_connections"]
                for n in ("mc0", "mc1")}
    assert sc_after == sc_before, (sc_before, sc_after)


# --------------------------------------------------------------- tiered ----

def tier_entries(servers):
    return ["%s:%d:1" % (HOST, s.port) for s in servers]


def tiered(listen, master, l1=(), slave=(), **kw):
    body = {"listen": listen, "hash": "md5", "distribution": "ketama",
            "timeout": 1000, "backfill_ttl": 60, "auto_eject_hosts": False,
            "master": {"servers": tier_entries(master)}}
    if slave:
        body["slave"] = {"servers": tier_entries(slave)}
    if l1:
        body["l1"] = [{"servers": tier_entries(t)} for t in l1]
    body.update(kw)
    return body


@needs_nc
def test_tiered_reloads_under_load(memcached_factory, proxy_factory, workdir):
    """A Master-L1 pool under checked load: add an L1 tier, add a master
    server, an invalid file, change hash, add a slave, drop the first L1;
    master routing after each as nutcracker's over the master servers."""
    mas = memcached_factory(3)
    l1a, l1b, sl = memcached_factory(3)
    lb, = listens(1)
    body = tiered(lb, mas[:2], l1=[[l1a]])
    p = start(proxy_factory, {"beta": body})
    load = Load(p.pool_port("beta"), "lt", conns=6, depth=6,
                allow_stale=True).start()
    n = [0]

    def master_routing(what):
        cur = p.pools["beta"]
        nc = {"hash": cur["hash"], "distribution": cur["distribution"],
              "servers": cur["master"]["servers"]}
        routing_matches_nutcracker(p, "beta", mas, nc, workdir, what=what,
                                   nkeys=100)

    def reaches(server, what):
        n[0] += 1
        k = "tier-probe-%d" % n[0]
        with p.client("beta", timeout=5.0) as c:
            assert c.set(k, "p") == b"STORED\r\n"
        assert wait_until(lambda: held(server, k) is not None,
                          3.0 * TIME_SCALE), \
            "%s: a set through the pool never reached %s" % (what, server)

    def go(label, mutate, check):
        new = copy_pools(p.pools)
        mutate(new["beta"])
        what = "tiered reload (%s)" % label
        reload(p, new, load=[load], what=what)
        load.wait_progress()
        assert load.error_count == 0 and not load.dropped, \
            "after %s:\n%s" % (what, load.report())
        check(what)

    try:
        go("add an L1 tier",
           lambda b: b.__setitem__("l1", b["l1"] +
                                   [{"servers": tier_entries([l1b])}]),
           lambda what: (reaches(l1b, what), master_routing(what)))
        go("add a master server",
           lambda b: b.__setitem__("master",
                                   {"servers": tier_entries(mas)}),
           master_routing)
        text, line = invalid_yaml(p.pools, "beta")
        reload_rejected(p, text, line, what="tiered invalid file")
        master_routing("after the tiered invalid file")
        go("hash fnv1a_64", lambda b: b.__setitem__("hash", "fnv1a_64"),
           master_routing)
        go("add a slave", lambda b: b.__setitem__(
            "slave", {"servers": tier_entries([sl])}),
           lambda what: reaches(sl, what))
        go("drop the first L1",
           lambda b: b.__setitem__("l1", b["l1"][1:]),
           lambda what: (reaches(l1b, what), master_routing(what)))
    finally:
        load.stop()
    load.assert_clean()
    assert load.ops > 300, load.report()


# ---------------------------------------------------------------- redis ----

def test_redis_add_slaves_under_load(workdir, proxy_factory):
    """A Redis pool (master only) under checked SET/GET load gets a
    `slaves:` tier by reload: reads move to the replicas (INFO
    commandstats), writes stay on the masters, no client error."""
    import threading
    from redis_util import (RedisServer, RespConn, encode, have_redis,
                            redis_servers, where)
    if not have_redis():
        pytest.skip("redis-server not installed")
    masters = [RedisServer(workdir).start() for _ in range(2)]
    reps = []
    stop = threading.Event()
    threads = []
    try:
        reps = [RedisServer(workdir, replicaof=mm).start() for mm in masters]
        for r in reps:
            r.wait_replica_synced()
        lr, = listens(1)
        body = {"listen": lr, "redis": True, "hash": "fnv1a_64",
                "distribution": "ketama", "timeout": 1000,
                "auto_eject_hosts": False,
                "master": {"servers": redis_servers(masters)}}
        p = start(proxy_factory, {"rp": body})
        errors = []
        ops = [0]
        epoch = [0]      # 0: master only; reads must see the last write

        def run(tid):
            deadline = time.monotonic() + 60 * TIME_SCALE
            try:
                c = RespConn(port_of(lr), timeout=5.0 * TIME_SCALE)
            except OSError as e:
                errors.append("connect: %r" % e)
                return
            seq = {}
            try:
                n = 0
                while not stop.is_set() and time.monotonic() < deadline:
                    n += 1
                    k = "rl:%d:%d" % (tid, n % 20)
                    s = seq.get(k, 0) + 1
                    seq[k] = s
                    v = "%s|%d" % (k, s)
                    c.send(encode("SET", k, v) + encode("GET", k))
                    r1, r2 = c.replies(2)
                    if r1 != b"+OK\r\n":
                        errors.append("SET %s -> %r" % (k, r1))
                    ok = r2 == b"$%d\r\n%s\r\n" % (len(v), v.encode())
                    if not ok and epoch[0] > 0:
                        # read from a replica: an older write of the same
                        # key (or none yet) is replication lag, not an error
                        ok = r2 == b"$-1\r\n" or (
                            r2.startswith(b"$") and
                            r2.split(b"\r\n")[1].startswith(
                                (k + "|").encode()) and
                            int(r2.split(b"\r\n")[1].split(b"|")[-1]) <= s)
                    if not ok:
                        errors.append("GET %s -> %r (set %r)" % (k, r2, v))
                    ops[0] += 2
            except Exception as e:       # closed, timeout, garbage
                errors.append("thread %d: %r" % (tid, e))
            finally:
                c.close()

        threads += [threading.Thread(target=run, args=(i,), daemon=True)
                    for i in range(4)]
        for t in threads:
            t.start()
        assert wait_until(lambda: ops[0] > 200 or errors, 5.0 * TIME_SCALE)
        new = {"rp": dict(body, slaves=[{"servers": redis_servers(reps)}])}
        epoch[0] = 1
        reload(p, new, what="redis: add slaves")
        o = ops[0]
        assert wait_until(lambda: ops[0] > o + 200 or errors,
                          5.0 * TIME_SCALE), "redis load made no progress"
        stop.set()
        for t in threads:
            t.join(timeout=10.0)
        assert not errors, "redis client errors across the reload: %s" \
            % errors[:10]
        assert not any(t.is_alive() for t in threads)
        # where reads go now
        keys = ["rk:%d" % i for i in range(40)]
        with RespConn(port_of(lr)) as c:
            for k in keys:
                assert c.call("SET", k, "v" + k) == b"+OK\r\n"
        placed = where(masters, keys)
        for i, r in enumerate(reps):
            mine = [k for k in keys if placed[k] == [i]]
            assert wait_until(lambda: all(where([r], mine)[k] for k in mine),
                              5.0), "replica %s never got its keys" % r
        for s in masters + reps:
            s.reset_stats()
        with RespConn(port_of(lr)) as c:
            for k in keys:
                assert c.call("GET", k) == b"$%d\r\nv%s\r\n" % (
                    len(k) + 1, k.encode())
        m_gets = [s.commandstats().get("get", 0) for s in masters]
        r_gets = [s.commandstats().get("get", 0) for s in reps]
        assert sum(m_gets) == 0 and sum(r_gets) == len(keys), (
            "after adding slaves, reads should go to the replicas: masters "
            "served %s gets, replicas %s" % (m_gets, r_gets))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10.0)
        for s in masters + reps:
            s.stop()


# ------------------------------------------------------ -t and reload ----

def check_message(path):
    """(rc, the error line naming path:LINE) of `strata -t -c path`."""
    r = run_cli([default_strata_bin(), "-t", "-c", path])
    lines = [ln for ln in (r.stderr + r.stdout).splitlines()
             if ln.startswith(path + ":")]
    return r.returncode, (lines[0] if lines else None), r


def test_check_and_reload_same_validation(memcached_factory, proxy_factory):
    """Each file `strata -t` rejects, a reload rejects with the same
    message (file:line: reason) in the log; the file -t accepts is
    applied."""
    ms = memcached_factory(2)
    la, = listens(1)
    good = {"alpha": mc_pool([(ms[0], "mc0")], la)}
    p = start(proxy_factory, good)
    path = p.confpath
    base = pool_yaml(good)
    unknown, unknown_line = invalid_yaml(good, "alpha")
    cases = {
        "unknown key": unknown,
        "unknown hash": base.replace("hash: md5", "hash: no_such_hash"),
        "servers and master": base + "  master:\n    servers:\n"
        "      - %s:%d:1\n" % (HOST, ms[1].port),
        "bad server line": base.replace(":%d:1 mc0" % ms[0].port,
                                        ":notaport:1 mc0"),
        "yaml syntax": base + "  servers: [unclosed\n",
    }
    for label, text in cases.items():
        write_atomically(path, text)
        rc, msg, r = check_message(path)
        assert rc != 0 and msg, ("%s: strata -t should reject the file with "
                                 "a '%s:LINE: ...' message; rc=%s\n%s%s"
                                 % (label, path, rc, r.stdout, r.stderr))
        line = int(msg[len(path) + 1:].split(":", 1)[0])
        if label == "unknown key":
            assert line == unknown_line, msg
        reload_rejected(p, text, line, what="reload of '%s'" % label,
                        expect_text=msg)
        assert use_pool(p, "alpha", "a") == b"a"
    ok = {"alpha": mc_pool([(ms[0], "mc0"), (ms[1], "mc1")], la)}
    write_atomically(path, pool_yaml(ok))
    r = run_cli([default_strata_bin(), "-t", "-c", path])
    assert r.returncode == 0, r.stderr
    reload(p, ok, what="the file -t accepts")
    doc = stats(p)
    assert doc["reload_failures"] == len(cases)
    assert doc["config_generation"] == 2


# ------------------------------------------------------- shrink guard ----

def test_half_written_file_is_refused_unless_allowed(memcached_factory,
                                                     proxy_factory, workdir):
    """A pool file cut short while being written is often still valid
    YAML with fewer servers: a reload that would remove half a tier's
    servers is refused (the running configuration stays, the log says
    why), until reload_max_server_loss in -C allows it."""
    from policy_util import write_settings
    m0, m1 = memcached_factory(2)
    cfg = write_settings(workdir, "log_level = 5;\n", name="guard.cfg")
    la, = listens(1)
    pools = {"alpha": mc_pool([(m0, "mc0"), (m1, "mc1")], la)}
    p = start(proxy_factory, pools, extra_args=["-C", cfg])
    whole = pool_yaml(pools)
    # the file as a writer left it: cut at the second server's line
    cut = whole[:whole.rindex("\n", 0, whole.index("mc1")) + 1]
    assert cut.count("127.0.0.1:") == 2       # listen and the first server
    reload_rejected(p, cut, None, what="truncated file",
                    expect_text="pool alpha: tier master would go from 2 servers "
                                "to 1 (50% fewer; reload_max_server_loss is 49)")
    use_pool(p, "alpha", "still-two")
    write_settings(workdir, "reload_max_server_loss = 50;\n", name="guard.cfg")
    one = {"alpha": mc_pool([(m0, "mc0")], la)}
    reload(p, one, what="the same shrink, allowed")


# ------------------------------------------------------- live settings ----

def test_live_settings_follow_the_settings_file(memcached_factory,
                                                proxy_factory, workdir):
    """SIGUSR1 re-reads -C too: max_clients lowered from 100 to 3 turns a
    fourth connection away at once while the three held stay served; a
    -C file that does not load changes nothing (and the pool file is
    still reloaded)."""
    from policy_util import write_settings
    (ms,) = memcached_factory(1)
    cfg = write_settings(workdir, "max_clients = 100;\n", name="live.cfg")
    la, = listens(1)
    pools = {"alpha": mc_pool([(ms, "mc0")], la)}
    p = start(proxy_factory, pools, extra_args=["-C", cfg])
    port = port_of(la)

    def one_more_refused():
        extra = MCClient(port, timeout=2)
        try:
            extra.sock.sendall(b"get a\r\n")
            return extra.expect_closed(timeout=1)
        except OSError:
            return True
        finally:
            extra.close()

    conns = [MCClient(port, timeout=5) for _ in range(2)]
    try:
        for c in conns:
            assert c.call("get a") == b"END\r\n"
        assert not one_more_refused()       # 100 allowed
        # the reload helper reads the stats command on a third connection
        write_settings(workdir, "max_clients = 3;\n", name="live.cfg")
        reload(p, pools, what="max_clients 100 -> 3")
        conns.append(MCClient(port, timeout=5))
        assert wait_until(lambda: conns[2].call("get a") == b"END\r\n",
                          5 * TIME_SCALE, 0.1)
        assert wait_until(one_more_refused, 5 * TIME_SCALE, 0.1)
        for c in conns:                     # the three admitted stay served
            assert c.call("get a") == b"END\r\n"
        # a settings file that does not load: nothing changes
        conns.pop().close()
        write_settings(workdir, "max_clients = \"many\";\n", name="live.cfg")
        reload(p, pools, what="bad -C file")
        conns.append(MCClient(port, timeout=5))
        assert conns[2].call("get a") == b"END\r\n"
        assert one_more_refused()
        assert "live.cfg" in p.read_log()
    finally:
        for c in conns:
            c.close()


def test_listen_taken_by_another_program_rejects_the_file(
        memcached_factory, proxy_factory):
    """A new pool on a port another program holds: the reload is rejected
    on the main thread (the file and the pool's line, the bind error),
    before any worker switches; the running pools keep serving."""
    import socket
    from harness import pool_yaml
    (ms,) = memcached_factory(1)
    la, lb = listens(2)
    pools = {"alpha": mc_pool([(ms, "mc0")], la)}
    p = start(proxy_factory, pools)
    holder = socket.socket()
    holder.bind((HOST, 0))
    holder.listen(1)
    try:
        taken = "%s:%d" % (HOST, holder.getsockname()[1])
        more = copy_pools(pools)
        more["beta"] = mc_pool([(ms, "mc0")], taken)
        text = pool_yaml(more)
        line = text.splitlines().index("beta:") + 1
        log = reload_rejected(p, text, line, expect_text="cannot listen on %s" % taken)
        assert "Address already in use" in log
        with MCClient(port_of(la), timeout=5) as c:
            assert c.call("get a") == b"END\r\n"
    finally:
        holder.close()


def test_back_to_back_reloads(memcached_factory, proxy_factory):
    """100 pool files and a SIGUSR1 each, without waiting in between (a
    file may replace one not yet applied: the newest wins), some invalid,
    pools coming and going, under checked load on a pool that stays: the
    proxy stays up, that pool's clients see no error and no close, and
    the last file is in force at the end."""
    import signal
    from harness import pool_yaml
    from reload_util import write_atomically
    ms = memcached_factory(3)
    la, lb, lc = listens(3)
    base = {"alpha": mc_pool([(m, "mc%d" % i) for i, m in enumerate(ms)], la)}
    p = start(proxy_factory, base)
    load = Load(port_of(la), "rapid", conns=4, depth=4).start()
    try:
        last = None
        for i in range(100):
            pools = copy_pools(base)
            # alpha keeps all three servers (its routing never changes);
            # beta comes and goes, every 7th file is invalid
            if i % 2:
                pools["beta"] = mc_pool([(ms[i % 3], "b")], lb)
            text = pool_yaml(pools)
            if i % 7 == 3:
                text += "  no_such_key: 1\n"
            else:
                last = pools
            write_atomically(p.confpath, text)
            os.kill(p.pid, signal.SIGUSR1)
            time.sleep(0.002 * (i % 4))
        # one more, with a pool only it has: once that pool listens, the
        # newest file is in force (a file of the burst may still be queued
        # when it is written, so the generation may move by two)
        final = copy_pools(last)
        final["gamma"] = mc_pool([(ms[0], "g")], lc)
        write_atomically(p.confpath, pool_yaml(final))
        os.kill(p.pid, signal.SIGUSR1)
        assert wait_until(lambda: port_accepts(port_of(lc)), 10 * TIME_SCALE), \
            "the newest file was not applied:\n%s" % p.read_log()[-3000:]
        p.pools = final
        assert p.alive()
    finally:
        load.stop()
    load.assert_clean()
    with MCClient(port_of(la), timeout=5) as c:
        assert c.call("get nothing-here") == b"END\r\n"
