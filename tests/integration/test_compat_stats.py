"""The stats port and -D as nutcracker 0.5.0 writes them.

The same traffic goes through nutcracker and through Strata (one worker,
so connection counts are comparable), with the same pool name and
servers; the two stats documents must have the same field names, the same
shape (order, separators, server names) and the same counts wherever the
count is deterministic.  Where nutcracker counts differently on purpose
(fragments, request_bytes of multi-key gets) the test states the exact
relation.  See docs/compatibility.md.
"""

import json
import re
import time

import pytest

from compat_util import (DeadPort, distinct_ports, have_nutcracker,
                         nutcracker_bin, pool_fields, pool_servers, stats_doc,
                         stats_raw, top_fields, wait_stats)
from conftest import proxy_binary
from harness import HOST, run_cli, xchg

pytestmark = [
    pytest.mark.needs_nutcracker,
    pytest.mark.skipif(not have_nutcracker(), reason="nutcracker not installed"),
]

NC_INTERVAL = ["-i", "100"]        # nutcracker: publish a snapshot every 100 ms
STRATA_ONE_WORKER = ["--workers", "1"]

SERVER_FIELDS = ["server_eof", "server_err", "server_timedout",
                 "server_connections", "server_ejected_at", "requests",
                 "request_bytes", "responses", "response_bytes", "in_queue",
                 "in_queue_bytes", "out_queue", "out_queue_bytes"]
POOL_FIELDS = ["client_eof", "client_err", "client_connections",
               "server_ejects", "forward_error", "fragments"]
TOP_FIELDS = ["service", "source", "version", "uptime", "timestamp",
              "total_connections", "curr_connections"]

SET_KEYS = ["s%d" % i for i in range(40)] + \
    ["{t%d}:%d" % (t, i) for t in range(3) for i in range(4)]
# multi-key gets: two that span servers, three inside one hash tag
MULTIGETS = [["s%d" % i for i in range(0, 12)],
             ["s%d" % i for i in range(20, 28)],
             ["{t0}:%d" % i for i in range(4)],
             ["{t1}:0", "{t1}:3"],
             ["{t2}:1", "{t2}:2", "{t2}:3"]]


def pool_body(servers):
    return {"hash": "md5", "distribution": "ketama", "hash_tag": '"{}"',
            "timeout": 2000,
            "servers": ["%s:%d:1 %s" % (HOST, s.port, n) for s, n in
                        zip(servers, ["cache-b", "cache-a"])] +
            ["%s:%d:1" % (HOST, servers[2].port)]}


def traffic(proxy):
    """A fixed mix of commands, on two client connections."""
    with proxy.client() as c:
        for k in SET_KEYS:
            xchg(c, "set %s 0 0 %d\r\nv-%s\r\n" % (k, len(k) + 2, k),
                 b"STORED\r\n")
        for k in SET_KEYS[:30]:
            v = "v-" + k
            xchg(c, "get %s\r\n" % k,
                 "VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (k, len(v), v))
        for i in range(10):
            xchg(c, "get missing%d\r\n" % i, b"END\r\n")
        for keys in MULTIGETS:
            got = c.get_multi(keys)
            assert sorted(got) == sorted(keys), got
        xchg(c, "set n 0 0 2\r\n10\r\n", b"STORED\r\n")
        xchg(c, "incr n 5\r\n", b"15\r\n")
        xchg(c, "decr n 3\r\n", b"12\r\n")
        xchg(c, "add s1 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
        xchg(c, "replace missing 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
        xchg(c, "append s2 0 0 1\r\nx\r\n", b"STORED\r\n")
        xchg(c, "prepend s3 0 0 1\r\nx\r\n", b"STORED\r\n")
        xchg(c, "touch s4 100\r\n", b"TOUCHED\r\n")
        for k in SET_KEYS[30:35]:
            xchg(c, "delete %s\r\n" % k, b"DELETED\r\n")
        xchg(c, "delete missing\r\n", b"NOT_FOUND\r\n")
    with proxy.client() as c2:
        xchg(c2, "get s0\r\n", "VALUE s0 0 4\r\nv-s0\r\nEND\r\n")


def settled(doc):
    """Every client gone and nothing queued: the counts are final."""
    pool = doc["alpha"]
    return pool["client_connections"] == 0 and pool["client_eof"] >= 3 and \
        all(s["out_queue"] == 0 for s in pool_servers(doc, "alpha").values())


def run_both(memcached_factory, proxy_factory, nc_args=(), st_args=()):
    servers = memcached_factory(3)
    body = pool_body(servers)
    docs = {}
    for kind, args in (("nutcracker", list(NC_INTERVAL) + list(nc_args)),
                       ("strata", list(STRATA_ONE_WORKER) + list(st_args))):
        for s in servers:
            with s.client() as d:
                assert d.call("flush_all") == b"OK\r\n"
        p = proxy_factory({"alpha": dict(body)}, kind=kind, extra_args=args,
                          name=kind)
        traffic(p)
        docs[kind] = wait_stats(p, settled, timeout=3.0)
        assert docs[kind] is not None and settled(docs[kind]), docs[kind]
        # nutcracker may publish a snapshot taken a moment before the last
        # close: read once more after another interval
        time.sleep(0.25)
        docs[kind] = stats_doc(p.stats_port)
        docs[kind + "_raw"] = stats_raw(p.stats_port)
        p.stop()
    return servers, docs


def multiget_servers(servers):
    """For each multi-key get, the set of servers its keys live on (read
    directly from memcached after the run)."""
    owner = {}
    for i, s in enumerate(servers):
        with s.client() as c:
            for k in c.keys_present(SET_KEYS):
                owner[k] = i
    return [set(owner[k] for k in keys) for keys in MULTIGETS]


def test_field_names_match(memcached_factory, proxy_factory):
    _, docs = run_both(memcached_factory, proxy_factory)
    nc, st = docs["nutcracker"], docs["strata"]
    assert list(top_fields(nc)) == TOP_FIELDS
    assert list(top_fields(st)) == TOP_FIELDS
    assert list(nc) == list(st)                      # top level and pools
    assert list(pool_fields(nc, "alpha")) == POOL_FIELDS
    assert list(pool_fields(st, "alpha")) == POOL_FIELDS
    # servers: named ones by their name, the unnamed one by host:port
    assert list(pool_servers(nc, "alpha")) == list(pool_servers(st, "alpha"))
    for name, srv in pool_servers(st, "alpha").items():
        assert list(srv) == SERVER_FIELDS, name
        assert list(pool_servers(nc, "alpha")[name]) == SERVER_FIELDS


def mask(raw):
    """The document with every value replaced: what is left is names,
    order and separators."""
    raw = re.sub(rb'"version":"[^"]*"', b'"version":V', raw)
    return re.sub(rb'":-?\d+', b'":N', raw)


def test_document_shape_is_byte_identical(memcached_factory, proxy_factory):
    _, docs = run_both(memcached_factory, proxy_factory)
    assert mask(docs["nutcracker_raw"]) == mask(docs["strata_raw"])
    assert docs["strata_raw"].endswith(b"}\n")


def test_counts_agree(memcached_factory, proxy_factory):
    servers, docs = run_both(memcached_factory, proxy_factory)
    nc, st = docs["nutcracker"], docs["strata"]
    assert st["service"] == nc["service"] == "nutcracker"
    assert st["source"] == nc["source"]
    # one listener + clients + server connections, as nutcracker counts
    assert st["total_connections"] == nc["total_connections"]
    assert st["curr_connections"] == nc["curr_connections"]

    ncp, stp = pool_fields(nc, "alpha"), pool_fields(st, "alpha")
    for f in ("client_eof", "client_err", "client_connections",
              "server_ejects", "forward_error"):
        assert stp[f] == ncp[f], (f, ncp, stp)

    spans = multiget_servers(servers)
    assert any(len(s) > 1 for s in spans), spans
    # nutcracker 0.5.0 never increments "fragments"; Strata counts the
    # per-server sub-requests of every multi-key get that spans servers
    assert ncp["fragments"] == 0
    assert stp["fragments"] == sum(len(s) for s in spans if len(s) > 1)

    ncs, sts = pool_servers(nc, "alpha"), pool_servers(st, "alpha")
    names = sorted(ncs)
    index = {n: i for i, n in enumerate(
        ["cache-b", "cache-a", "%s:%d" % (HOST, servers[2].port)])}
    for name in names:
        a, b = ncs[name], sts[name]
        for f in SERVER_FIELDS:
            if f == "request_bytes":
                continue
            assert b[f] == a[f], (name, f, a, b)
        # nutcracker rewrites every multi-key get per server as
        # "get k1 k2 \r\n" (one trailing space); Strata sends "get k1 k2\r\n"
        touched = sum(1 for s in spans if index[name] in s)
        assert a["request_bytes"] - b["request_bytes"] == touched, \
            (name, a["request_bytes"], b["request_bytes"], touched)
    assert sum(s["requests"] for s in sts.values()) > 0


def test_noreply_counts(memcached_factory, proxy_factory):
    """nutcracker forwards noreply and counts no response; Strata sends
    the command without noreply, swallows the reply and counts it."""
    servers = memcached_factory(1)
    body = {"hash": "fnv1a_64", "distribution": "ketama",
            "servers": ["%s:%d:1" % (HOST, servers[0].port)]}
    got = {}
    for kind, args in (("nutcracker", NC_INTERVAL),
                       ("strata", STRATA_ONE_WORKER)):
        p = proxy_factory({"alpha": dict(body)}, kind=kind, extra_args=args,
                          name=kind)
        with p.client() as c:
            c.send(b"set q 0 0 1 noreply\r\nx\r\n")
            xchg(c, "get q\r\n", b"VALUE q 0 1\r\nx\r\nEND\r\n")
        doc = wait_stats(p, lambda d: sum(
            s["requests"] for s in pool_servers(d, "alpha").values()) >= 2)
        got[kind] = list(pool_servers(doc, "alpha").values())[0]
        p.stop()
    nc, st = got["nutcracker"], got["strata"]
    assert nc["requests"] == st["requests"] == 2
    assert nc["responses"] == 1 and st["responses"] == 2
    assert nc["request_bytes"] - st["request_bytes"] == len(" noreply")


def test_server_names_and_order_without_traffic(workdir, proxy_factory):
    """Names nutcracker gives servers it never connects to: its name, else
    "host:port" as written, "host" alone for port 11211, "path:" for a unix
    socket; pools and servers sorted by name, shorter first."""
    hole = DeadPort()
    dead = hole.port
    body = {"servers": ["%s:%d:1 zz" % (HOST, dead),
                        "%s/nosock:1" % workdir,
                        "localhost:%d:3" % dead,
                        "%s:11211:1" % HOST]}
    raws = {}
    try:
        for kind in ("nutcracker", "strata"):
            ports = distinct_ports(3)
            pools = {n: dict(body, listen="%s:%d" % (HOST, port))
                     for n, port in zip(("zeta", "b", "alpha"), ports)}
            p = proxy_factory(pools, kind=kind, name=kind)
            raws[kind] = stats_raw(p.stats_port)
            p.stop()
    finally:
        hole.close()
    assert mask(raws["nutcracker"]) == mask(raws["strata"])
    doc = json.loads(raws["strata"].decode())
    assert list(k for k in doc if isinstance(doc[k], dict)) == \
        ["b", "zeta", "alpha"]
    assert list(pool_servers(doc, "b")) == [
        "zz", HOST, "localhost:%d" % dead, "%s/nosock:" % workdir]


def describe_sections(text):
    """{section title: [field lines]} of -D output."""
    out, cur = {}, None
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            cur = line
            out[cur] = []
        elif cur and line.startswith("  "):
            out[cur].append(line)
    return out


def test_describe_stats_lists_nutcracker_fields():
    nc = run_cli([nutcracker_bin(), "-D"])
    st = run_cli([proxy_binary("strata"), "-D"])
    assert nc.returncode == 0 and st.returncode == 0
    ncs = describe_sections(nc.stdout + nc.stderr)
    sts = describe_sections(st.stdout + st.stderr)
    for section in ("pool stats:", "server stats:"):
        assert ncs[section], ncs
        assert sts[section] == ncs[section], section
    # the banner has the same shape: name-version, then the event backend
    first = (st.stdout + st.stderr).splitlines()[:2]
    assert re.match(r"^This is strata-\d+\.\d+\.\d+$", first[0]), first
    assert first[1] == (nc.stdout + nc.stderr).splitlines()[1]
