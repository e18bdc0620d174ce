"""Prometheus exposition on metrics_listen (issue 15, section 1).

Real memcached and a real redis-server behind Strata (two workers). The
scraped text is checked with `promtool check metrics`, parsed with
prometheus_client's parser and compared with the stats JSON after known
traffic; the latency histograms count exactly the requests sent. A real
Prometheus server (Debian `prometheus`) scrapes Strata and a histogram
quantile is read back through its HTTP API. Every check parses; nothing
is compared as a string of the exposition.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from compat_util import stats_doc
from conftest import simple_pool
from harness import HOST, MCClient, free_port, port_accepts, stat_lines, stop_pid, \
    wait_until, xchg
from policy_util import write_settings

pytestmark = pytest.mark.strata_only

parser = pytest.importorskip("prometheus_client.parser",
                             reason="python3-prometheus-client not installed")

MC_REQUESTS = 40      # 20 sets and 20 gets
REDIS_REQUESTS = 30   # 15 SETs and 15 GETs


def http_get(port, request, timeout=5.0):
    """Sends `request` (bytes) and reads until the server closes: the
    status code, the headers (lower-case names) and the body."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        else:
            raise AssertionError("the metrics listener did not close")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, code = lines[0].split(" ")[:2]
    assert version in ("HTTP/1.0", "HTTP/1.1")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body)
    return int(code), headers, body


def scrape(port):
    code, headers, body = http_get(port, b"GET /metrics HTTP/1.1\r\n"
                                   b"Host: x\r\n\r\n")
    assert code == 200
    assert headers["content-type"].split(";")[0] == "text/plain"
    return body.decode()


def families(text):
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def sample(fams, family, name, **labels):
    """The value of the one sample `name` of `family` with exactly these
    labels among its own (others ignored)."""
    found = [s.value for s in fams[family].samples
             if s.name == name and all(s.labels.get(k) == v
                                       for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


@pytest.fixture
def setup(memcached_factory, proxy_factory, workdir):
    """Strata with a memcached pool (two servers) and, when redis-server
    is installed, a Redis pool; metrics_listen from the -C file."""
    from redis_util import RedisServer, have_redis, redis_pool
    servers = memcached_factory(2)
    pools = {"mc": simple_pool(servers)}
    redis = None
    if have_redis():
        redis = RedisServer(workdir).start()
        pools["rd"] = redis_pool([redis])
    mport = free_port()
    cfg = write_settings(workdir, 'metrics_listen = "%s:%d";\n' % (HOST, mport))
    proxy = proxy_factory(pools, extra_args=["-C", cfg, "--workers", "2"])
    assert wait_until(lambda: port_accepts(mport), 5.0)
    yield proxy, mport, redis
    if redis is not None:
        redis.stop()


def mc_traffic(proxy):
    with MCClient(proxy.pool_port("mc")) as c:
        for i in range(MC_REQUESTS // 2):
            xchg(c, b"set k%d 0 0 2\r\nvv\r\n" % i, b"STORED\r\n")
            xchg(c, b"get k%d\r\n" % i, b"VALUE k%d 0 2\r\nvv\r\nEND\r\n" % i)


def redis_traffic(proxy):
    from redis_util import RespConn
    c = RespConn(proxy.pool_port("rd"))
    try:
        for i in range(REDIS_REQUESTS // 2):
            assert c.call("SET", "r%d" % i, "v") == b"+OK\r\n"
            assert c.call("GET", "r%d" % i) == b"$1\r\nv\r\n"
    finally:
        c.close()


def test_promtool_accepts_the_exposition(setup):
    proxy, mport, redis = setup
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian: prometheus)")
    mc_traffic(proxy)
    r = subprocess.run(["promtool", "check", "metrics"], input=scrape(mport).encode(),
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_counters_match_the_stats_json(setup):
    """After known traffic every server counter of the stats JSON equals
    its sample, and the histograms count every request: per pool the
    client's requests, per server the requests it answered."""
    proxy, mport, redis = setup
    mc_traffic(proxy)
    pools = ["mc"]
    if redis is not None:
        redis_traffic(proxy)
        pools.append("rd")
    # the clients have closed: wait until the workers have seen it, so
    # that client_eof and client_connections no longer move
    assert wait_until(lambda: all(stats_doc(proxy.stats_port)[p]["client_connections"] == 0
                                  for p in pools), 5.0)
    doc = stats_doc(proxy.stats_port)
    fams = families(scrape(mport))
    for field in ("requests", "request_bytes", "responses", "response_bytes",
                  "server_eof", "server_err", "server_timedout"):
        for pool in pools:
            for server, st in doc[pool].items():
                if not isinstance(st, dict):
                    continue
                v = sample(fams, "strata_" + field, "strata_%s_total" % field,
                           pool=pool, tier="master", server=server)
                assert v == st[field], (field, pool, server)
    for field in ("client_eof", "client_err", "server_ejects", "forward_error"):
        for pool in pools:
            v = sample(fams, "strata_" + field, "strata_%s_total" % field, pool=pool)
            assert v == doc[pool][field]
    sent = {"mc": MC_REQUESTS, "rd": REDIS_REQUESTS}
    for pool in pools:
        n = sample(fams, "strata_request_duration_seconds",
                   "strata_request_duration_seconds_count", pool=pool)
        assert n == sent[pool]
        inf = sample(fams, "strata_request_duration_seconds",
                     "strata_request_duration_seconds_bucket", pool=pool, le="+Inf")
        assert inf == n
        answered = sum(st["responses"] for st in doc[pool].values()
                       if isinstance(st, dict))
        per_server = sum(s.value for s in
                         fams["strata_server_request_duration_seconds"].samples
                         if s.name.endswith("_count") and s.labels["pool"] == pool)
        assert per_server == answered == sent[pool]
    assert fams["strata_request_duration_seconds"].type == "histogram"
    assert sample(fams, "strata_build_info", "strata_build_info",
                  version=doc["version"]) == 1
    assert sample(fams, "strata_config_generation", "strata_config_generation") == 1
    assert sample(fams, "strata_workers", "strata_workers") == 2


def test_commands_and_read_keys(setup):
    """strata_commands_total counts forwarded requests per command and
    strata_read_keys_total the keys reads asked for, found or not."""
    proxy, mport, redis = setup
    with MCClient(proxy.pool_port("mc")) as c:
        for k in ("a", "b", "c"):
            xchg(c, b"set %s 0 0 1\r\nx\r\n" % k.encode(), b"STORED\r\n")
        xchg(c, b"get a nope\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n")
        xchg(c, b"get b\r\n", b"VALUE b 0 1\r\nx\r\nEND\r\n")
        xchg(c, b"delete c\r\n", b"DELETED\r\n")
    want = {("mc", "set"): 3, ("mc", "get"): 2, ("mc", "delete"): 1}
    reads = {("mc", "hit"): 2, ("mc", "miss"): 1}
    if redis is not None:
        from redis_util import RespConn
        with RespConn(proxy.pool_port("rd")) as c:
            assert c.call("SET", "x", "v") == b"+OK\r\n"
            assert c.call("GET", "x") == b"$1\r\nv\r\n"
            assert c.call("GET", "y") == b"$-1\r\n"
            assert c.call("MGET", "x", "y", "z") == b"*3\r\n$1\r\nv\r\n$-1\r\n$-1\r\n"
            assert c.call("SET", "e", "") == b"+OK\r\n"        # an empty value is a hit
            assert c.call("MGET", "e", "y") == b"*2\r\n$0\r\n\r\n$-1\r\n"
        want.update({("rd", "set"): 2, ("rd", "get"): 2, ("rd", "mget"): 2})
        reads.update({("rd", "hit"): 3, ("rd", "miss"): 4})

    def matches():
        fams = families(scrape(mport))
        got = {(pool, cmd): sample(fams, "strata_commands", "strata_commands_total",
                                   pool=pool, command=cmd) for pool, cmd in want}
        got_reads = {(pool, r): sample(fams, "strata_read_keys", "strata_read_keys_total",
                                       pool=pool, result=r) for pool, r in reads}
        return got == want and got_reads == reads
    assert wait_until(matches, 5.0), scrape(mport)


def test_backend_stats_collected_in_the_background(memcached_factory, proxy_factory,
                                                   workdir):
    """The servers' own stats, summed per pool and tier, collected every
    backend_stats_interval on a connection of their own: memcached's
    curr_items follows what was stored, Redis's keyspace_hits a hit, and a
    server that stops answering shows up 0."""
    from redis_util import RedisServer, have_redis, redis_pool
    servers = memcached_factory(2)
    pools = {"mc": simple_pool(servers)}
    redis = RedisServer(workdir).start() if have_redis() else None
    if redis is not None:
        pools["rd"] = redis_pool([redis])
    mport = free_port()
    cfg = write_settings(workdir, 'metrics_listen = "%s:%d";\nbackend_stats_interval = 200;\n'
                         % (HOST, mport))
    proxy = proxy_factory(pools, extra_args=["-C", cfg])
    try:
        assert wait_until(lambda: port_accepts(mport), 5.0)
        with MCClient(proxy.pool_port("mc")) as c:
            for i in range(10):
                xchg(c, b"set bk%d 0 0 1\r\nx\r\n" % i, b"STORED\r\n")
        if redis is not None:
            from redis_util import RespConn
            with RespConn(proxy.pool_port("rd")) as c:
                assert c.call("SET", "bk", "v") == b"+OK\r\n"
                assert c.call("GET", "bk") == b"$1\r\nv\r\n"

        def value(family, **labels):
            fams = families(scrape(mport))
            return sample(fams, family, family, **labels) if family in fams else None
        assert wait_until(lambda: value("strata_backend_curr_items", pool="mc",
                                        tier="master") == 10, 10.0)
        # the same on the pool's own port: "stats backends"
        lines = stat_lines(proxy.pool_port("mc"), command="stats backends")
        assert lines["master:curr_items"] == "10", lines
        assert lines["master:servers"] == "2" and lines["master:servers_up"] == "2"
        with MCClient(proxy.pool_port("mc")) as c:
            assert c.call("stats nope") == b"ERROR\r\n"
        if redis is not None:
            assert wait_until(lambda: (value("strata_backend_keyspace_hits", pool="rd",
                                             tier="master") or 0) >= 1, 10.0)
            # and in the Redis pool's own INFO, section "backends"
            from redis_util import RespConn, parse
            with RespConn(proxy.pool_port("rd")) as c:
                text = parse(c.call("INFO", "backends")).decode()
            assert text.startswith("# Backends\r\n"), text
            fields = dict(l.split(":", 1) for l in text.splitlines()[1:] if ":" in l)
            assert fields["master_servers_up"] == "1" and int(fields["master_used_memory"]) > 0
        servers[0].kill()
        label = proxy.pools["mc"]["servers"][0].split()[-1]
        assert wait_until(lambda: value("strata_backend_up", pool="mc", tier="master",
                                        server=label) == 0, 10.0)
    finally:
        if redis is not None:
            redis.stop()


def test_buckets_are_cumulative(setup):
    proxy, mport, _ = setup
    mc_traffic(proxy)
    fams = families(scrape(mport))
    buckets = [(float(s.labels["le"]), s.value)
               for s in fams["strata_request_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["pool"] == "mc"]
    bounds = [b for b, _ in buckets]
    assert bounds == sorted(bounds) and bounds[0] == 5e-05 and math.isinf(bounds[-1])
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == MC_REQUESTS


def test_bad_requests_are_refused_and_closed(memcached_factory, proxy_factory):
    """--metrics-listen on the command line; anything but GET /metrics is
    answered with an error status, and every connection is closed."""
    servers = memcached_factory(1)
    mport = free_port()
    proxy_factory({"mc": simple_pool(servers)},
                  extra_args=["--metrics-listen", "%s:%d" % (HOST, mport)])
    assert wait_until(lambda: port_accepts(mport), 5.0)
    cases = [(b"GET / HTTP/1.1\r\n\r\n", 404),
             (b"GET /metricsx HTTP/1.0\r\n\r\n", 404),
             (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
             (b"hello there\r\n\r\n", 400),
             (b"GET /metrics HTTP/9.9\r\n\r\n", 400),
             (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
             (b"GET /metrics HTTP/1.0\r\n\r\n", 200)]
    for request, want in cases:
        code, headers, _ = http_get(mport, request)
        assert code == want, request[:40]
        assert headers["connection"].lower() == "close"


def test_idle_client_is_closed(memcached_factory, proxy_factory):
    """A client that connects and sends half a request does not hold the
    connection past the read deadline (5 s)."""
    servers = memcached_factory(1)
    mport = free_port()
    proxy_factory({"mc": simple_pool(servers)},
                  extra_args=["--metrics-listen", "%s:%d" % (HOST, mport)])
    assert wait_until(lambda: port_accepts(mport), 5.0)
    with socket.create_connection((HOST, mport), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        start = time.monotonic()
        assert s.recv(100) == b""          # closed without a reply
        assert time.monotonic() - start < 9


PROM_CONFIG = """global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: strata
    static_configs:
      - targets: ['%s:%d']
"""


def prom_query(port, query):
    url = "http://%s:%d/api/v1/query?%s" % (HOST, port,
                                            urllib.parse.urlencode({"query": query}))
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read().decode())


def test_prometheus_reads_a_quantile(setup, workdir):
    """A real Prometheus scrapes Strata every second; the median of the
    memcached pool's request times comes back through its query API."""
    prom = shutil.which("prometheus")
    if prom is None:
        pytest.skip("prometheus not installed (Debian: prometheus)")
    proxy, mport, _ = setup
    mc_traffic(proxy)
    pport = free_port()
    cfg = os.path.join(workdir, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(PROM_CONFIG % (HOST, mport))
    log = open(os.path.join(workdir, "prometheus.log"), "wb")
    proc = subprocess.Popen([prom, "--config.file=" + cfg,
                             "--storage.tsdb.path=" + os.path.join(workdir, "tsdb"),
                             "--web.listen-address=%s:%d" % (HOST, pport)],
                            stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    query = ('histogram_quantile(0.5, '
             'strata_request_duration_seconds_bucket{pool="mc"})')
    got = []

    def quantile_known():
        try:
            doc = prom_query(pport, query)
        except OSError:
            return False
        result = doc.get("data", {}).get("result", [])
        if doc.get("status") != "success" or not result:
            return False
        got.append(float(result[0]["value"][1]))
        return True

    try:
        assert wait_until(quantile_known, 60.0, interval=0.5), \
            open(os.path.join(workdir, "prometheus.log")).read()[-3000:]
        assert 0 < got[-1] <= 1.0   # seconds: within the finite buckets
        up = prom_query(pport, 'up{job="strata"}')["data"]["result"]
        assert float(up[0]["value"][1]) == 1
    finally:
        stop_pid(proc.pid)
        proc.wait(timeout=10)
        log.close()


def test_reload_keeps_histograms(memcached_factory, proxy_factory, workdir):
    """SIGUSR1 with a server added: the generation and reloads move, and
    the pool's and the staying server's histograms keep their counts
    (carried into the new configuration's views); the new server starts
    at zero."""
    from reload_util import reload
    servers = memcached_factory(2)
    mport = free_port()
    proxy = proxy_factory({"mc": simple_pool(servers[:1])},
                          extra_args=["--workers", "2", "--metrics-listen",
                                      "%s:%d" % (HOST, mport)])
    assert wait_until(lambda: port_accepts(mport), 5.0)
    mc_traffic(proxy)
    before = sample(families(scrape(mport)), "strata_request_duration_seconds",
                    "strata_request_duration_seconds_count", pool="mc")
    assert before == MC_REQUESTS
    pools = {"mc": dict(proxy.pools["mc"])}
    pools["mc"]["servers"] = simple_pool(servers)["servers"]
    reload(proxy, pools)   # its "stats" requests are the pool's too
    state = {}

    def carried():
        fams = families(scrape(mport))
        state["fams"] = fams
        return (sample(fams, "strata_config_generation", "strata_config_generation") == 2
                and sample(fams, "strata_request_duration_seconds",
                           "strata_request_duration_seconds_count", pool="mc")
                > before)

    ok = wait_until(carried, 10.0, interval=0.1)
    fams = state["fams"]
    assert ok, [(s.name, s.labels, s.value) for f in
                ("strata_config_generation", "strata_request_duration_seconds")
                for s in fams[f].samples if not s.name.endswith("_bucket")]
    assert sample(fams, "strata_reloads", "strata_reloads_total") == 1
    counts = {s.labels["server"]: s.value
              for s in fams["strata_server_request_duration_seconds"].samples
              if s.name.endswith("_count")}
    assert sorted(counts.values()) == [0, MC_REQUESTS]
