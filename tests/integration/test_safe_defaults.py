"""Safe defaults (issue 8, failure 5): unix socket modes, -u/--user and the
settings key `user`, and what Strata logs about root and the stats port."""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile

import pytest

from harness import (run_cli, pool_yaml, free_port, HOST, wait_until,
                     pid_alive, stop_pid, xchg, port_accepts)
from conftest import simple_pool, proxy_binary

pytestmark = pytest.mark.strata_only

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="dropping privileges needs root")


def write(workdir, name, text):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def ids_after_drop(proxy):
    """proc_ids once the proxy says it switched user: its ports accept as
    soon as the workers have bound them, before the switch (reading the
    ids then raced it)."""
    assert wait_until(lambda: "running as user" in proxy.read_log(), 10.0), \
        proxy.read_log()
    return proc_ids(proxy.pid)


def proc_ids(pid):
    """(uids, gids, groups) from /proc/PID/status, each a list of ints."""
    res = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                res[key] = [int(x) for x in rest.split()]
    return res["Uid"], res["Gid"], res["Groups"]


# ------------------------------------------------------ unix socket mode ----

@pytest.mark.parametrize("mode, want", [(None, 0o700), ("0660", 0o660),
                                        ("0600", 0o600)])
def test_unix_socket_mode_under_daemonize(workdir, memcached_factory, mode,
                                          want):
    """-d sets the umask to 0: the socket must still get 0700 unless the
    pool file gives a mode, and exactly that mode when it does."""
    servers = memcached_factory(1)
    path = os.path.join(workdir, "d.sock")
    listen = path if mode is None else "%s %s" % (path, mode)
    conf = write(workdir, "d.yml",
                 pool_yaml({"alpha": simple_pool(servers, listen=listen)}))
    pidfile = os.path.join(workdir, "d.pid")
    rc = subprocess.run(
        [proxy_binary(), "-d", "-p", pidfile, "-c", conf, "-s",
         str(free_port()), "-a", HOST, "-o", os.path.join(workdir, "d.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, timeout=10).returncode
    assert rc == 0
    pid = None
    try:
        assert wait_until(lambda: os.path.exists(pidfile) and
                          open(pidfile).read().strip().isdigit(), 5.0)
        pid = int(open(pidfile).read().strip())
        # accepting means listen() ran, and it runs after chmod()
        assert wait_until(lambda: port_accepts(path), 5.0)
        assert oct(os.stat(path).st_mode & 0o777) == oct(want)
    finally:
        if pid is not None and pid_alive(pid):
            stop_pid(pid)


def test_unix_socket_default_mode_foreground(workdir, memcached_factory,
                                             proxy_factory):
    servers = memcached_factory(1)
    path = os.path.join(workdir, "f.sock")
    proxy = proxy_factory({"alpha": simple_pool(servers, listen=path)})
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o700)
    with proxy.client() as c:
        xchg(c, b"set u 0 0 1\r\nx\r\nget u\r\n",
             b"STORED\r\nVALUE u 0 1\r\nx\r\nEND\r\n")


# ------------------------------------------------------------ -u / user ----

@needs_root
@pytest.mark.parametrize("flag", ["-u", "--user"])
def test_user_drops_privileges(memcached_factory, proxy_factory, flag):
    nobody = pwd.getpwnam("nobody")
    servers = memcached_factory(2)
    proxy = proxy_factory({"alpha": simple_pool(servers)},
                          extra_args=[flag, "nobody"])
    uids, gids, groups = ids_after_drop(proxy)
    assert uids == [nobody.pw_uid] * 4
    assert gids == [nobody.pw_gid] * 4
    assert groups == [nobody.pw_gid]
    with proxy.client() as c:
        xchg(c, b"set nb 0 0 2\r\nok\r\nget nb\r\n",
             b"STORED\r\nVALUE nb 0 2\r\nok\r\nEND\r\n")
    log = proxy.read_log()
    assert "running as user 'nobody'" in log
    assert "running as root" not in log


@needs_root
def test_user_sighup_reopen_fails_keeps_old_log(memcached_factory,
                                                proxy_factory):
    """The log file was opened as root in a directory nobody cannot write:
    the reopen fails, is logged to the old file, and the proxy serves on."""
    servers = memcached_factory(1)
    proxy = proxy_factory({"alpha": simple_pool(servers)},
                          extra_args=["-u", "nobody"])
    os.kill(proxy.pid, signal.SIGHUP)
    assert wait_until(lambda: "cannot reopen the log file" in
                      proxy.read_log(), 5.0), proxy.read_log()
    assert proxy.alive()
    with proxy.client() as c:
        xchg(c, b"get nothing\r\n", b"END\r\n")
    os.kill(proxy.pid, signal.SIGTTIN)
    assert wait_until(lambda: "log level up" in proxy.read_log(), 5.0)


@pytest.fixture
def nobody_dir():
    """A directory under /tmp that the user nobody owns."""
    d = tempfile.mkdtemp(prefix="strata-nobody-")
    nobody = pwd.getpwnam("nobody")
    os.chmod(d, 0o755)
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@needs_root
def test_user_sighup_reopen_works_in_a_writable_directory(
        nobody_dir, memcached_factory, proxy_factory):
    """logrotate's way: the old file is moved away, SIGHUP opens a new one,
    which the dropped user can create in a directory it owns."""
    log = os.path.join(nobody_dir, "strata.log")
    servers = memcached_factory(1)
    proxy = proxy_factory({"alpha": simple_pool(servers)},
                          extra_args=["-u", "nobody", "-o", log])
    os.rename(log, log + ".1")
    os.kill(proxy.pid, signal.SIGHUP)
    assert wait_until(lambda: os.path.exists(log), 5.0)
    os.kill(proxy.pid, signal.SIGTTIN)
    assert wait_until(lambda: "log level up" in open(log).read(), 5.0)
    assert "cannot reopen" not in open(log + ".1").read()


def test_unknown_user_fails_to_start(workdir, memcached_factory):
    servers = memcached_factory(1)
    conf = write(workdir, "u.yml", pool_yaml({"alpha": simple_pool(
        servers, listen="%s:%d" % (HOST, free_port()))}))
    res = run_cli([proxy_binary(), "-c", conf, "-s", str(free_port()),
                   "-a", HOST, "-u", "no-such-user-strata"])
    assert res.returncode != 0
    assert "cannot switch to user 'no-such-user-strata': no such user" \
        in res.stderr, res.stderr


@needs_root
def test_settings_user_and_command_line_wins(workdir, memcached_factory,
                                             proxy_factory):
    nobody = pwd.getpwnam("nobody")
    servers = memcached_factory(1)
    good = write(workdir, "good.cfg", 'user = "nobody";\n')
    proxy = proxy_factory({"alpha": simple_pool(servers)},
                          extra_args=["-C", good])
    assert ids_after_drop(proxy)[0] == [nobody.pw_uid] * 4
    bad = write(workdir, "bad.cfg", 'user = "no-such-user-strata";\n')
    proxy = proxy_factory({"alpha": simple_pool(servers)},
                          extra_args=["-C", bad, "-u", "nobody"])
    assert ids_after_drop(proxy)[0] == [nobody.pw_uid] * 4


@needs_root
def test_root_without_user_is_warned(memcached_factory, proxy_factory):
    servers = memcached_factory(1)
    proxy = proxy_factory({"alpha": simple_pool(servers)})
    assert wait_until(lambda: "running as root" in proxy.read_log(), 5.0)
    assert proc_ids(proxy.pid)[0][0] == 0


def test_loopback_stats_port_is_not_noted(memcached_factory, proxy_factory):
    servers = memcached_factory(1)
    proxy = proxy_factory({"alpha": simple_pool(servers)})  # -a 127.0.0.1
    assert wait_until(lambda: "started on pid" in proxy.read_log(), 5.0)
    assert "reachable from other hosts" not in proxy.read_log()
