"""pytest fixtures for the Strata integration suite.

Target proxy:  PROXY=strata (default) or PROXY=nutcracker.
Binaries:      STRATA_BIN (default <repo>/src/strata),
               NUTCRACKER_BIN (default: `which nutcracker`),
               MEMCACHED_BIN (default: `which memcached`).
Tests marked `strata_only` exercise behaviour where nutcracker 0.5.0 is
known to differ (it closes the connection, or lacks the command); they are
skipped when PROXY=nutcracker (RUN_STRATA_ONLY=1 runs them anyway, to see
how nutcracker differs).
"""

import os
import signal
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.register_assert_rewrite("harness")

import harness  # noqa: E402
from harness import HarnessError, Memcached, Proxy, free_port, HOST  # noqa: E402

PROXY_KIND = os.environ.get("PROXY", "strata").strip().lower()
if PROXY_KIND not in ("strata", "nutcracker"):
    raise SystemExit("PROXY must be 'strata' or 'nutcracker', not %r"
                     % PROXY_KIND)


def proxy_binary(kind=PROXY_KIND):
    if kind == "strata":
        return harness.default_strata_bin()
    return harness.default_nutcracker_bin()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "strata_only: behaviour nutcracker 0.5.0 does not share; "
        "skipped when PROXY=nutcracker")
    config.addinivalue_line(
        "markers", "needs_nutcracker: compares against Debian's nutcracker")


def pytest_report_header(config):
    return "proxy under test: %s (%s)" % (PROXY_KIND, proxy_binary())


def pytest_collection_modifyitems(config, items):
    skip_nc = pytest.mark.skip(reason="strata-only behaviour "
                               "(nutcracker 0.5.0 differs)")
    b = proxy_binary()
    if items and not config.option.collectonly and \
            not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.exit("proxy binary %s not found or not executable (build it "
                    "with `make`, or set STRATA_BIN, or PROXY=nutcracker)"
                    % b, returncode=3)
    nc = harness.default_nutcracker_bin()
    no_nc = None
    if not (os.path.isfile(nc) and os.access(nc, os.X_OK)):
        no_nc = pytest.mark.skip(reason="nutcracker not installed")
    for item in items:
        if PROXY_KIND == "nutcracker" and "strata_only" in item.keywords \
                and not os.environ.get("RUN_STRATA_ONLY"):
            item.add_marker(skip_nc)
        if no_nc is not None and "needs_nutcracker" in item.keywords:
            item.add_marker(no_nc)


# Attach logs of every process a test started to its failure report.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when in ("setup", "call", "teardown") and rep.failed:
        for p in getattr(item, "_harness_proxies", []):
            rep.sections.append(("proxy %s (%s)" % (p.name, p.kind),
                                 p.diagnostics()))
        for m in getattr(item, "_harness_memcached", []):
            log = m.read_log()
            if log.strip():
                rep.sections.append(("memcached %s" % m.addr, log[-4000:]))


# A last-resort watchdog: every blocking call in the suite has its own
# timeout, but should one be missed, SIGALRM fails the test instead of
# letting the run hang.
TEST_TIMEOUT = int(os.environ.get("TEST_TIMEOUT", "90"))


class TestTookTooLong(Exception):
    pass


def _alarm(signum, frame):
    raise TestTookTooLong("test exceeded %ds (TEST_TIMEOUT)" % TEST_TIMEOUT)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def proxy_kind():
    return PROXY_KIND


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="strata-it-")
    yield d
    # leave logs behind only on request
    if not os.environ.get("KEEP_TMP"):
        import shutil
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def memcached_factory(request, workdir):
    """memcached_factory(n) -> list of n running Memcached servers."""
    started = []
    request.node._harness_memcached = started

    def make(n=1, extra_args=()):
        servers = []
        for _ in range(n):
            m = Memcached(workdir, extra_args=extra_args).start()
            started.append(m)
            servers.append(m)
        return servers

    yield make
    for m in started:
        m.stop()


@pytest.fixture
def proxy_factory(request, workdir):
    """proxy_factory(pools, extra_args=(), kind=None) -> running Proxy.

    `pools` is {name: {key: value}}; a pool without 'listen' gets a free
    port.  kind defaults to the proxy under test."""
    started = []
    request.node._harness_proxies = started

    def make(pools, extra_args=(), kind=None, name=None, start=True):
        kind = kind or PROXY_KIND
        given = {n: dict(b) for n, b in pools.items()}
        # A port the kernel called free can be taken by another process
        # before the proxy binds it: with ports of our own choosing, try
        # again on fresh ones.
        for attempt in range(3):
            pools = {n: dict(b) for n, b in given.items()}
            for body in pools.values():
                body.setdefault("listen", "%s:%d" % (HOST, free_port()))
            p = Proxy(kind, proxy_binary(kind), workdir, pools,
                      extra_args=extra_args,
                      name=name or "%s%d" % (kind, len(started)))
            started.append(p)
            if not start:
                return p
            try:
                p.start()
                return p
            except HarnessError as e:
                ours = all("listen" not in b for b in given.values())
                if not ours or "Address already in use" not in str(e) or attempt == 2:
                    raise
                started.remove(p)

    yield make
    reports = []
    for p in started:
        p.stop()
        out = p.read_output()
        # A sanitizer build reports memory errors, leaks and undefined
        # behaviour on stderr: any of them fails the test that ran it.
        if any(m in out for m in SANITIZER_MARKS):
            reports.append(p.diagnostics())
    if reports:
        pytest.fail("sanitizer report from the proxy:\n" + "\n".join(reports))


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:")


def simple_pool(servers, **kw):
    body = {
        "hash": "md5",  # fnv1a_64 spreads short keys badly
        "distribution": "ketama",
        "timeout": 2000,
        "auto_eject_hosts": False,
        "servers": harness.server_entries(servers, names=True),
    }
    body.update(kw)
    return body


@pytest.fixture
def pool2(memcached_factory, proxy_factory):
    """A proxy in front of two memcached servers: (proxy, [servers])."""
    servers = memcached_factory(2)
    proxy = proxy_factory({"alpha": simple_pool(servers)})
    return proxy, servers


@pytest.fixture
def client(pool2):
    proxy, _ = pool2
    c = proxy.client()
    yield c
    c.close()
