"""auto_eject_hosts, server_failure_limit and server_retry_timeout as in
nutcracker 0.5.0, checked against nutcracker in the same situation.

Strata runs with one worker here: ejection state is kept per worker (each
worker counts failures on its own backend connections), so with one worker
the counts and timings are the ones nutcracker, a single thread, shows.
See docs/compatibility.md.
"""

import os
import signal
import time

import pytest

from compat_util import (have_nutcracker, placement, pool_servers,
                         stats_doc, wait_stats)
from harness import HOST, TIME_SCALE, key_owner

pytestmark = [
    pytest.mark.needs_nutcracker,
    pytest.mark.skipif(not have_nutcracker(), reason="nutcracker not installed"),
]

TIMEOUT_MS = 300
RETRY_MS = 1500
LIMIT = 2
SLACK = 0.5 * TIME_SCALE
KEYS = ["ek%d" % i for i in range(120)]
VICTIM = 1     # index of the memcached that fails


def eject_pool(servers, auto_eject=True):
    return {"hash": "md5", "distribution": "ketama", "timeout": TIMEOUT_MS,
            "auto_eject_hosts": auto_eject, "server_failure_limit": LIMIT,
            "server_retry_timeout": RETRY_MS,
            "servers": ["%s:%d:1 node%d" % (HOST, s.port, i)
                        for i, s in enumerate(servers)]}


def start_both(proxy_factory, body):
    nc = proxy_factory({"alpha": dict(body)}, kind="nutcracker",
                       extra_args=["-i", "100"], name="nutcracker")
    st = proxy_factory({"alpha": dict(body)}, kind="strata",
                       extra_args=["--workers", "1"], name="strata")
    return nc, st


def drive_until_ejected(proxy, key, max_tries=LIMIT + 3):
    """Gets `key` (owned by the failed server) until the proxy stops
    failing it.  Returns the list of (reply, seconds) that failed."""
    failed = []
    with proxy.client(timeout=TIMEOUT_MS / 1000.0 + 2) as c:
        for _ in range(max_tries):
            r, t = c.timed("get %s\r\n" % key)
            if r == b"END\r\n" or r.startswith(b"VALUE "):
                return failed               # served by a live server
            assert r.startswith(b"SERVER_ERROR "), (proxy.kind, r)
            failed.append((r, t))
    raise AssertionError("%s: still failing %s after %d tries: %r"
                         % (proxy.kind, key, max_tries, failed))


def victim_keys(owner):
    keys = [k for k in KEYS if owner[k] == VICTIM]
    assert len(keys) >= 10, "too few keys on the victim: %d" % len(keys)
    return keys


def test_killed_server_ejected_and_back_as_nutcracker(memcached_factory,
                                                      proxy_factory):
    servers = memcached_factory(4)
    nc, st = start_both(proxy_factory, eject_pool(servers))
    before = placement(nc, servers, KEYS, "nc-before")
    assert placement(st, servers, KEYS, "st-before") == before
    victims = victim_keys(before)

    servers[VICTIM].kill()                      # SIGKILL by PID

    ejected_at = {}
    errors = {}
    during = {}
    for p in (nc, st):
        errors[p.kind] = drive_until_ejected(p, victims[0])
        ejected_at[p.kind] = time.monotonic()
        # within server_retry_timeout: every key is served by a live server
        during[p.kind] = placement(p, servers, KEYS, "%s-during" % p.kind)
        assert time.monotonic() - ejected_at[p.kind] < RETRY_MS / 1000.0, \
            "placement took too long to be inside the ejection window"
    # the failed requests before ejection: same number, all prompt
    assert len(errors["strata"]) == len(errors["nutcracker"]), errors
    for r, t in errors["strata"]:
        assert t < TIMEOUT_MS / 1000.0 + SLACK, errors["strata"]
    moved = during["strata"]
    assert all(moved[k] != VICTIM for k in KEYS)
    assert all(moved[k] == before[k] for k in KEYS if before[k] != VICTIM)
    diff = {k: (during["nutcracker"][k], moved[k]) for k in KEYS
            if during["nutcracker"][k] != moved[k]}
    assert not diff, "while ejected, keys placed unlike nutcracker " \
        "(nutcracker, strata): %r" % dict(list(diff.items())[:10])

    # server_ejects and server_ejected_at, as nutcracker reports them
    docs = {p.kind: wait_stats(p, lambda d: d["alpha"]["server_ejects"] >= 1)
            for p in (nc, st)}
    for kind, doc in docs.items():
        assert doc["alpha"]["server_ejects"] == 1, (kind, doc)
        srv = pool_servers(doc, "alpha")
        assert srv["node%d" % VICTIM]["server_ejected_at"] > 0, (kind, srv)
        assert all(v["server_ejected_at"] == 0 for n, v in srv.items()
                   if n != "node%d" % VICTIM), (kind, srv)
        # usec since the epoch
        assert abs(srv["node%d" % VICTIM]["server_ejected_at"] / 1e6
                   - time.time()) < 30

    # back on the same port: after server_retry_timeout its keys return
    servers[VICTIM].restart()
    wait = max(ejected_at.values()) + RETRY_MS / 1000.0 + 0.2 - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    for p in (nc, st):
        after = placement(p, servers, KEYS, "%s-after" % p.kind)
        diff = {k: (before[k], after[k]) for k in KEYS if after[k] != before[k]}
        assert not diff, "%s: keys not back where they were " \
            "(before, after): %r" % (p.kind, dict(list(diff.items())[:10]))


def test_hung_server_times_out_then_ejected_as_nutcracker(memcached_factory,
                                                          proxy_factory):
    """A server that accepts but never answers (SIGSTOP): each request
    fails after `timeout`, and after server_failure_limit timeouts the
    server is ejected, in both proxies."""
    servers = memcached_factory(4)
    nc, st = start_both(proxy_factory, eject_pool(servers))
    before = placement(nc, servers, KEYS, "nc-before")
    assert placement(st, servers, KEYS, "st-before") == before
    victim = servers[VICTIM]
    victims = victim_keys(before)
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        errors = {p.kind: drive_until_ejected(p, victims[0])
                  for p in (nc, st)}
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    assert len(errors["strata"]) == len(errors["nutcracker"]) == LIMIT, errors
    for r, t in errors["strata"]:
        assert TIMEOUT_MS / 1000.0 - 0.05 <= t < TIMEOUT_MS / 1000.0 + SLACK, \
            errors["strata"]
    for p in (nc, st):
        doc = wait_stats(p, lambda d: d["alpha"]["server_ejects"] >= 1)
        assert doc["alpha"]["server_ejects"] == 1, (p.kind, doc)
        srv = pool_servers(doc, "alpha")["node%d" % VICTIM]
        assert srv["server_timedout"] == LIMIT, (p.kind, srv)


def test_no_auto_eject_fails_fast_others_unaffected(memcached_factory,
                                                    proxy_factory):
    servers = memcached_factory(4)
    nc, st = start_both(proxy_factory, eject_pool(servers, auto_eject=False))
    before = placement(st, servers, KEYS, "v")
    victims = victim_keys(before)
    others = [k for k in KEYS if before[k] != VICTIM][:40]
    servers[VICTIM].kill()
    replies = {}
    for p in (nc, st):
        with p.client(timeout=TIMEOUT_MS / 1000.0 + 2) as c:
            got = [c.timed("get %s\r\n" % k) for k in victims[:2 * LIMIT + 2]]
            for r, t in got:
                assert r.startswith(b"SERVER_ERROR ") and r.endswith(b"\r\n"), \
                    (p.kind, r)
                assert t < TIMEOUT_MS / 1000.0 + SLACK, (p.kind, t)
            replies[p.kind] = got
            # keys of the live servers: untouched
            for k in others:
                r, t = c.timed("get %s\r\n" % k)
                assert r == b"VALUE %s 0 1\r\nv\r\nEND\r\n" % k.encode(), \
                    (p.kind, k, r)
            # a storage command for the dead server's key fails too
            r, t = c.timed("set %s 0 0 1\r\nx\r\n" % victims[0])
            assert r.startswith(b"SERVER_ERROR "), (p.kind, r)
    for p in (nc, st):
        doc = stats_doc(p.stats_port)
        assert doc["alpha"]["server_ejects"] == 0, (p.kind, doc)
    # the dead server's keys never moved: nothing stored elsewhere
    owner = key_owner([s for i, s in enumerate(servers) if i != VICTIM],
                      victims)
    assert owner == {}, owner
