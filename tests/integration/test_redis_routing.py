"""Redis pools route every key to the same shard as nutcracker 0.5.0, for
each of the 12 hash functions x ketama / modula x hash_tag off / on (and
random: each key lands on exactly one live shard, all shards used).

`proxy` is parametrized ["nutcracker", "strata"]:
- strata: its placement of each key over 4 redis-servers must equal
  nutcracker's with the same pool file;
- nutcracker: its Redis placement must equal its own memcached placement
  for the same named servers (nutcracker's routing does not depend on the
  protocol; Strata's memcached routing is checked against it in
  test_compat_routing.py) — so the reference itself is checked.

One set of 4 redis-servers and 4 memcached serves the module; the proxies
of one hash function run together and are replaced when the hash changes.
"""

import pytest

import compat_util
from compat_util import ServerSet
from harness import HOST
from redis_util import (PROXY_KINDS, RedisSet, encode, have_nutcracker,
                        have_redis, proxy_conn, redis_pool, start_redis_proxy,
                        where)

pytestmark = [
    pytest.mark.skipif(not have_redis(), reason="redis-server not installed"),
    pytest.mark.skipif(not have_nutcracker(), reason="nutcracker not installed"),
]

HASHES = ["one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64",
          "fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins"]
DISTRIBUTIONS = ["ketama", "modula"]
TAGS = ["notag", "tag"]

KEYS = (["user:%d" % i for i in range(120)] +
        ["{tag%d}:item:%d" % (i % 9, i) for i in range(60)] +
        ["k%d" % i for i in range(30)] +
        ["a", "b", "x:y:z", "Z" * 200, "{}:empty-tag", "{unclosed:key",
         "}{reversed", "a{b}c{d}e", "{{double}}", "tag-at-end{zz}"])


def pool_name(dist, tag):
    return "%s_%s" % (dist, tag)


def bodies(hashf, servers, redis):
    """{pool: body} for every distribution x tag, plus random."""
    out = {}
    for dist in DISTRIBUTIONS + ["random"]:
        for tag in TAGS:
            if dist == "random" and tag == "tag":
                continue
            body = redis_pool(servers, hash=hashf, distribution=dist)
            if tag == "tag":
                body["hash_tag"] = '"{}"'
            if not redis:
                del body["redis"]
            out[pool_name(dist, tag)] = body
    return out


@pytest.fixture(scope="module")
def backends():
    rs = RedisSet(4)
    try:
        ms = ServerSet(4)
    except Exception:
        rs.close()
        raise
    yield rs, ms
    ms.close()
    rs.close()


class Proxies:
    """The proxies of the current hash function: nutcracker with Redis
    pools ('nutcracker'), nutcracker with the same pools over memcached
    ('nutcracker-mc'), Strata with the Redis pools ('strata'); started on
    first use, all stopped when the hash function changes."""

    def __init__(self, rs, ms):
        self.rs, self.ms = rs, ms
        self.hashf = None
        self.procs = {}

    def get(self, hashf, kind):
        if hashf != self.hashf:
            self.close()
            self.hashf = hashf
        if kind not in self.procs:
            if kind == "nutcracker-mc":
                pools = bodies(hashf, self.ms.servers, redis=False)
                binkind = "nutcracker"
            else:
                pools = bodies(hashf, self.rs.servers, redis=True)
                binkind = kind
            self.procs[kind] = start_redis_proxy(
                binkind, self.rs.workdir, pools,
                name="%s-%s" % (kind, hashf))
        return self.procs[kind]

    def close(self):
        for p in self.procs.values():
            p.stop()
        self.procs = {}
        self.hashf = None


@pytest.fixture(scope="module")
def proxies(backends):
    pp = Proxies(*backends)
    yield pp
    pp.close()


def redis_placement(proxy, rs, pool):
    """SET every key through the proxy (one pipelined write); {key: shard
    index}; asserts each key is on exactly one shard."""
    rs.flush()
    with proxy_conn(proxy, pool, timeout=10) as c:
        c.send(b"".join(encode("SET", k, "x") for k in KEYS))
        got = c.replies(len(KEYS), timeout=10)
    assert got == [b"+OK\r\n"] * len(KEYS), (proxy.kind, got[:5])
    w = where(rs.servers, KEYS)
    rs.flush()
    bad = {k: v for k, v in w.items() if len(v) != 1}
    assert not bad, "%s: keys not on exactly one shard: %r" % (
        proxy.kind, dict(list(bad.items())[:10]))
    return {k: v[0] for k, v in w.items()}


@pytest.mark.parametrize("proxy", PROXY_KINDS)
@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize("hashf", HASHES)
def test_same_shard(hashf, dist, tag, proxy, backends,
                                  proxies):
    rs, ms = backends
    pool = pool_name(dist, tag)
    case = "%s/%s/%s" % (hashf, dist, tag)
    if proxy == "nutcracker":
        # the reference: nutcracker's memcached routing, same names
        ms.flush()
        want = compat_util.placement(proxies.get(hashf, "nutcracker-mc"),
                                     ms.servers, KEYS, "mc " + case,
                                     pool=pool)
        ms.flush()
    else:
        want = redis_placement(proxies.get(hashf, "nutcracker"), rs, pool)
    got = redis_placement(proxies.get(hashf, proxy), rs, pool)
    # nutcracker's crc32 is a 15-bit hash: under ketama every key lands on
    # one server; that is the behaviour to match
    if (hashf, dist) != ("crc32", "ketama"):
        assert len(set(want.values())) > 1, "degenerate case: one shard"
    if tag == "tag":
        for i in range(9):
            tagged = {got[k] for k in KEYS if k.startswith("{tag%d}" % i)}
            assert len(tagged) == 1, (case, i, tagged)
    diff = {k: (want[k], got[k]) for k in KEYS if want[k] != got[k]}
    assert not diff, "%s: %d of %d keys on another shard (key: (want, " \
        "%s)), e.g. %r" % (case, len(diff), len(KEYS), proxy,
                           dict(list(diff.items())[:10]))


@pytest.mark.parametrize("proxy", PROXY_KINDS)
def test_random_distribution_lands_on_one_shard(proxy, backends, proxies):
    rs, _ = backends
    p = proxies.get(HASHES[0], proxy)
    where_ = redis_placement(p, rs, pool_name("random", "notag"))
    assert set(where_.values()) == {0, 1, 2, 3}
    assert HOST  # keys only on loopback servers (all ours)
