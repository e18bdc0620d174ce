"""Redis pools: INFO and COMMAND answered by Strata itself (issue 15,
"In-band stats for Redis pools"). nutcracker 0.5.0 closes the connection
on both (test_redis_compat.py keeps that expectation for it); these are
Strata's own answers, checked with real clients: redis-py's info(),
redis-cli in its batch and interactive modes, against real redis-servers.
"""

import os
import pty
import select
import subprocess
import time

import pytest

from harness import read_stats, wait_until
from redis_util import (REDIS_CLI_BIN, RedisSet, cli, encode, have_redis,
                        parse, proxy_conn, redis_pool, redis_py,
                        split_pool, start_redis_proxy)

pytestmark = [
    pytest.mark.strata_only,
    pytest.mark.skipif(not have_redis(), reason="redis-server not installed"),
]

NOAUTH = b"-NOAUTH Authentication required\r\n"


@pytest.fixture(scope="module")
def shards():
    rs = RedisSet(4)
    yield rs
    rs.close()


@pytest.fixture(scope="module")
def proxy(shards):
    masters, slaves = shards.servers[:2], shards.servers[2:]
    p = start_redis_proxy("strata", shards.workdir, {
        "r": redis_pool(masters, hash="md5"),
        "count": redis_pool(masters, hash="md5"),
        "auth": redis_pool(masters, hash="md5", redis_auth="sekret"),
        "split": split_pool(masters, [slaves])},
        name="strata-info")
    yield p
    p.stop()


def test_info_parses_with_redis_py(proxy, shards):
    info = redis_py(proxy, "r").info()
    for key in ("strata_version", "process_id", "uptime_in_seconds",
                "workers", "config_generation", "config_source", "reloads",
                "reload_failures", "dns_failures", "connected_clients",
                "total_connections_received", "client_eof", "client_err",
                "forward_error", "fragments", "server_ejects",
                "out_of_memory", "auth_failures", "server0", "server1"):
        assert key in info, (key, info)
    assert info["process_id"] == proxy.pid
    assert info["pool"] == "r"
    assert info["connected_clients"] >= 1
    s0, s1 = info["server0"], info["server1"]
    assert (s0["tier"], s0["name"], s1["name"]) == ("master", "shard-a", "shard-b")
    assert s0["addr"] == "127.0.0.1:%d" % shards.servers[0].port
    for s in (s0, s1):
        for k in ("requests", "responses", "server_err", "server_timedout",
                  "server_eof", "ejected"):
            assert isinstance(s[k], int), (k, s)
        assert s["ejected"] == 0
    assert "tier0" not in info   # a plain pool has no Tiers section


def _server_sum(info, field):
    return sum(v[field] for k, v in info.items() if k.startswith("server") and
               isinstance(v, dict))


def test_info_counters_follow_known_traffic(proxy):
    """Through a pool no other test uses: 10 SETs, 5 GETs and an MGET of 4
    keys over both shards; one client closes (client_eof). INFO's counters
    move by exactly that, and match the stats port's JSON."""
    r = redis_py(proxy, "count")
    before = r.info()
    with proxy_conn(proxy, "count") as c:
        for i in range(10):
            assert c.call("SET", "k%d" % i, "v") == b"+OK\r\n"
        for i in range(5):
            assert c.call("GET", "k%d" % i) == b"$1\r\nv\r\n"
        assert parse(c.call("MGET", "k0", "k1", "k2", "k3")) == [b"v"] * 4
    assert wait_until(lambda: r.info("stats")["client_eof"] ==
                      before["client_eof"] + 1, 5.0)
    after = r.info()
    parts = after["fragments"] - before["fragments"]
    assert parts >= 1     # the MGET, split over the two shards
    assert _server_sum(after, "requests") - _server_sum(before, "requests") == \
        15 + parts
    assert _server_sum(after, "responses") - _server_sum(before, "responses") == \
        15 + parts
    assert after["client_err"] == before["client_err"]
    assert after["total_connections_received"] > before["total_connections_received"]
    js = read_stats(proxy.stats_port)["count"]
    for key in ("client_eof", "client_err", "fragments", "forward_error"):
        assert js[key] == after[key], key
    assert js["shard-a"]["requests"] == after["server0"]["requests"]
    assert js["shard-b"]["responses"] == after["server1"]["responses"]


def test_info_one_section(proxy):
    out = cli(proxy, "INFO", "stats", pool="r")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "# Stats"
    assert not any(l.startswith("#") for l in lines[1:]), lines
    assert any(l.startswith("client_err:") for l in lines), lines
    with proxy_conn(proxy, "r") as c:
        assert c.call("INFO", "keyspace") == b"$0\r\n\r\n"   # unknown: empty
        raw = parse(c.call("INFO", "SERVER", "clients"))
        assert raw.startswith(b"# Server\r\n") and b"\r\n\r\n# Clients\r\n" in raw
        assert c.call("PING") == b"+PONG\r\n"


def test_info_tiers_of_a_split_pool(proxy):
    info = redis_py(proxy, "split").info()
    assert info["tier0"]["name"] == "master"
    assert info["tier1"]["name"] == "slaves[0]"
    assert info["tier1"]["servers"] == 2
    assert info["server2"]["tier"] == "slaves[0]"
    with proxy_conn(proxy, "split") as c:
        assert c.call("SET", "t", "1") == b"+OK\r\n"
        for _ in range(3):
            c.call("GET", "t")
    after = redis_py(proxy, "split").info("tiers")
    reads = after["tier1"]["reads"] + after["tier1"]["read_fallbacks"]
    assert reads >= 3, after


def test_info_and_command_need_auth(proxy):
    with proxy_conn(proxy, "auth") as c:
        assert c.call("INFO") == NOAUTH
        assert c.call("INFO", "stats") == NOAUTH
        assert c.call("COMMAND", "COUNT") == NOAUTH
        assert c.call("COMMAND", "DOCS") == NOAUTH
        assert c.call("AUTH", "sekret") == b"+OK\r\n"
        assert parse(c.call("INFO", "server")).startswith(b"# Server\r\n")
        assert c.call("COMMAND", "COUNT").startswith(b":")
    out = cli(proxy, "INFO", "clients", pool="auth", extra=["-a", "sekret", "--no-auth-warning"])
    assert out.returncode == 0 and "connected_clients:" in out.stdout, out


def test_command_count_docs_info(proxy):
    with proxy_conn(proxy, "r") as c:
        count = c.call("COMMAND", "COUNT")
        assert count.startswith(b":") and int(count[1:-2]) > 100
        assert c.call("COMMAND", "DOCS") == b"*0\r\n"
        assert c.call("COMMAND", "DOCS", "get") == b"*0\r\n"
        entry = parse(c.call("COMMAND", "INFO", "get", "keys"))
        assert entry[0][:2] == [b"get", 2] and entry[1] is None
        table = parse(c.call("COMMAND"))
        assert len(table) == int(count[1:-2])
        assert c.call("COMMAND", "GETKEYS", "get", "a").startswith(b"-ERR unknown subcommand")
        assert c.call("PING") == b"+PONG\r\n"   # still open
    assert read_stats(proxy.stats_port)["r"]["client_err"] == 0


def _client_err(proxy, pool):
    return read_stats(proxy.stats_port)[pool]["client_err"]


def test_redis_cli_batch_mode(proxy):
    """`redis-cli -p PORT` with commands on stdin (not a terminal)."""
    err0 = _client_err(proxy, "r")
    out = subprocess.run([REDIS_CLI_BIN, "-h", "127.0.0.1", "-p",
                          str(proxy.pool_port("r"))], input="PING\nCOMMAND COUNT\n",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=10)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "PONG" and int(lines[1]) > 100, out.stdout
    assert _client_err(proxy, "r") == err0


def _read_until(fd, want, timeout):
    """Bytes read from fd until `want` is among them (or the deadline)."""
    got = b""
    deadline = time.monotonic() + timeout
    while want not in got and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    return got


def test_redis_cli_interactive_start_is_no_client_error(proxy, shards):
    """redis-cli 7 on a terminal sends COMMAND DOCS first; nutcracker (and
    Strata before INFO/COMMAND) closed the connection and counted a client
    error. Now it is answered: PING works and client_err does not move."""
    err0 = _client_err(proxy, "r")
    master, slave = pty.openpty()
    p = subprocess.Popen([REDIS_CLI_BIN, "-h", "127.0.0.1", "-p",
                          str(proxy.pool_port("r"))],
                         stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                         env=dict(os.environ, TERM="dumb", HOME=shards.workdir))
    os.close(slave)
    try:
        prompt = _read_until(master, b"> ", 10.0)
        assert b"> " in prompt, prompt
        os.write(master, b"PING\r")
        got = _read_until(master, b"PONG", 10.0)
        assert b"PONG" in got, got
        os.write(master, b"exit\r")
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)
        os.close(master)
    assert _client_err(proxy, "r") == err0
    assert "unsupported command 'COMMAND'" not in proxy.read_log()
