"""Every key goes to the same server under Strata as under nutcracker 0.5.0,
for every hash function and distribution, with and without server names,
with unequal weights and with a hash tag.

One set of 4 memcached serves the whole module.  For each hash function,
one nutcracker and one Strata run side by side with the same pool file
(but for the listen ports): one pool per distribution and variant.  Each
case stores a few hundred keys through nutcracker and then through Strata,
each proxy with its own value, and asks every memcached directly which
key it holds with which value.  The servers are flushed between cases.
"""

import pytest

from compat_util import (ServerSet, have_nutcracker, placement, start_proxy)
from harness import HOST

pytestmark = [
    pytest.mark.needs_nutcracker,
    pytest.mark.skipif(not have_nutcracker(), reason="nutcracker not installed"),
]

HASHES = ["one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64",
          "fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins"]
DISTRIBUTIONS = ["ketama", "modula"]
WEIGHTS = [1, 2, 3, 1]

# variant: (server names?, unequal weights?, hash tag?)
VARIANTS = {
    "named": (True, False, False),
    "unnamed": (False, False, False),
    "named-weighted": (True, True, False),
    "unnamed-weighted-tag": (False, True, True),
    "named-tag": (True, False, True),
}

KEYS = (["user:%d" % i for i in range(150)] +
        ["{tag%d}:item:%d" % (i % 9, i) for i in range(90)] +
        ["k%d" % i for i in range(40)] +
        ["a", "b", "x:y:z", "Z" * 250, "{}:empty-tag", "{unclosed:key",
         "}{reversed", "a{b}c{d}e", "{{double}}", "tag-at-end{zz}"])


def entries(servers, names, weights):
    out = []
    for i, s in enumerate(servers):
        e = "%s:%d:%d" % (HOST, s.port, WEIGHTS[i] if weights else 1)
        if names:
            # deliberately not in sorted order: nutcracker sorts servers by
            # name and modula indexes that order
            e += " node-%s" % "dbca"[i]
        out.append(e)
    return out


def pool_body(servers, hashf, dist, variant):
    names, weights, tag = VARIANTS[variant]
    body = {"hash": hashf, "distribution": dist,
            "servers": entries(servers, names, weights)}
    if tag:
        body["hash_tag"] = '"{}"'
    return body


def pool_name(dist, variant):
    return "%s_%s" % (dist, variant.replace("-", "_"))


@pytest.fixture(scope="module")
def servers():
    ss = ServerSet(4)
    yield ss
    ss.close()


class ProxyPairs:
    """One nutcracker and one Strata per hash function, started on first
    use; the previous pair is stopped (cases run hash by hash)."""

    def __init__(self, ss):
        self.ss = ss
        self.hashf = None
        self.pair = None

    def get(self, hashf):
        if self.hashf != hashf:
            self.close()
            pools = {pool_name(d, v): pool_body(self.ss.servers, hashf, d, v)
                     for d in DISTRIBUTIONS for v in VARIANTS}
            pools["random_named"] = dict(pool_body(self.ss.servers, hashf,
                                                   "random", "named"))
            pools["random_unnamed_weighted"] = dict(pool_body(
                self.ss.servers, hashf, "random", "unnamed-weighted-tag"))
            nc = start_proxy("nutcracker", self.ss.workdir, pools,
                             name="nc-%s" % hashf)
            try:
                st = start_proxy("strata", self.ss.workdir, pools,
                                 name="st-%s" % hashf)
            except Exception:
                nc.stop()
                raise
            self.pair, self.hashf = (nc, st), hashf
        return self.pair

    def close(self):
        if self.pair:
            for p in self.pair:
                p.stop()
        self.pair = self.hashf = None


@pytest.fixture(scope="module")
def pairs(servers):
    pp = ProxyPairs(servers)
    yield pp
    pp.close()


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize("hashf", HASHES)
def test_same_server_as_nutcracker(hashf, dist, variant, servers, pairs):
    nc, st = pairs.get(hashf)
    pool = pool_name(dist, variant)
    case = "%s/%s/%s" % (hashf, dist, variant)
    servers.flush()
    want = placement(nc, servers.servers, KEYS, "nc " + case, pool=pool)
    got = placement(st, servers.servers, KEYS, "st " + case, pool=pool)
    servers.flush()
    # nutcracker's crc32 is a 15-bit hash: under ketama (32-bit points)
    # every key lands on one server; that is the behaviour to match.
    if (hashf, dist) != ("crc32", "ketama"):
        assert len(set(want.values())) > 1, "degenerate case: one server"
    diff = {k: (want[k], got[k]) for k in KEYS if want[k] != got[k]}
    assert not diff, "%s: %d of %d keys on another server than under " \
        "nutcracker (key: (nutcracker, strata)), e.g. %r" % (
            case, len(diff), len(KEYS), dict(list(diff.items())[:10]))


@pytest.mark.parametrize("pool", ["random_named", "random_unnamed_weighted"])
def test_random_distribution_lands_on_one_live_server(pool, servers, pairs):
    """random: each set goes to one server picked at random (weights are
    ignored, as nutcracker does); a get right after may ask another
    server, so it may miss, but never fails."""
    nc, st = pairs.get(HASHES[0])
    servers.flush()
    for proxy in (nc, st):
        where = placement(proxy, servers.servers, KEYS,
                          "%s random" % proxy.kind, pool=pool)
        used = set(where.values())
        assert used == {0, 1, 2, 3}, "%s: random used only servers %r" % (
            proxy.kind, sorted(used))
        if proxy is st:
            with st.client(pool=pool) as c:
                for k in KEYS[:50]:
                    v = c.get_multi([k])
                    assert v in ({}, {k: b"strata random"}), (k, v)
        servers.flush()
