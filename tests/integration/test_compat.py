"""Key routing is bit-compatible with nutcracker 0.5.0: the same YAML sends
every key to the same server under both proxies.

Runs the proxy under test and Debian's nutcracker side by side on the same
memcached servers.  (With PROXY=nutcracker it compares nutcracker with
itself, which checks the harness.)"""

import pytest

from harness import HOST

HASHES = ["one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64",
          "fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins"]

KEYS = ["user:%d" % i for i in range(150)] + \
    ["{tag%d}:item:%d" % (i % 7, i) for i in range(100)] + \
    ["k%d" % i for i in range(50)] + ["a", "b", "Z" * 250, "x:y:z"]


def _owners(proxy, servers, marker):
    """Store every key through proxy with value `marker`; {key: server}
    by asking the servers which one holds that value."""
    blob = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k.encode(), len(marker),
                                                marker) for k in KEYS)
    with proxy.client(timeout=10) as c:
        c.send(blob)
        got = c.read_expected(b"STORED\r\n" * len(KEYS), timeout=10)
        assert got == b"STORED\r\n" * len(KEYS)
    owner = {}
    for i, s in enumerate(servers):
        with s.client() as d:
            for j in range(0, len(KEYS), 100):
                for k, _, data, _ in d.get_raw(KEYS[j:j + 100]):
                    if data == marker:
                        assert k not in owner, k
                        owner[k] = i
    assert len(owner) == len(KEYS)
    return owner


def _compare(memcached_factory, proxy_factory, body_for, allow_single=False):
    servers = memcached_factory(4)
    body = body_for(servers)
    nc = proxy_factory({"alpha": dict(body)}, kind="nutcracker", name="nc")
    ours = proxy_factory({"alpha": dict(body)}, name="under-test")
    want = _owners(nc, servers, b"nutcracker")
    got = _owners(ours, servers, b"proxy-under-test")
    if not allow_single:
        assert len(set(want.values())) > 1, "degenerate: one server only"
    diff = {k: (want[k], got[k]) for k in KEYS if want[k] != got[k]}
    assert not diff, "%d of %d keys routed differently (key: (nutcracker, " \
        "ours)), e.g. %r" % (len(diff), len(KEYS), dict(list(diff.items())[:10]))


def _entries(servers, weights=None, names=False):
    out = []
    for i, s in enumerate(servers):
        w = weights[i] if weights else 1
        e = "%s:%d:%d" % (HOST, s.port, w)
        if names:
            e += " node-%d" % i
        out.append(e)
    return out


@pytest.mark.needs_nutcracker
@pytest.mark.parametrize("dist", ["ketama", "modula"])
@pytest.mark.parametrize("hashf", HASHES)
def test_routing_matches_nutcracker(hashf, dist, memcached_factory,
                                    proxy_factory):
    # nutcracker's crc32 is a 15-bit hash: under ketama (32-bit points)
    # every key lands on one server.  That is the behaviour to match.
    _compare(memcached_factory, proxy_factory, lambda servers: {
        "hash": hashf, "distribution": dist,
        "servers": _entries(servers, names=True)},
        allow_single=(hashf, dist) == ("crc32", "ketama"))


@pytest.mark.needs_nutcracker
@pytest.mark.parametrize("dist", ["ketama", "modula"])
def test_routing_unnamed_weighted_with_hash_tag(dist, memcached_factory,
                                                proxy_factory):
    """Unnamed servers (ketama hashes 'host:port'), unequal weights, and a
    hash tag."""
    _compare(memcached_factory, proxy_factory, lambda servers: {
        "hash": "fnv1a_64", "distribution": dist, "hash_tag": '"{}"',
        "servers": _entries(servers, weights=[1, 3, 2, 5])})
