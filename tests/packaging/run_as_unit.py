"""Runs an installed strata.service the way systemd would, on a machine
where systemd does not run (a container, a CI job): the unit's
ExecStart, as its User= and Group=, with its RuntimeDirectory made, and
NOTIFY_SOCKET pointing at a datagram socket this script reads. Then:
READY=1 once the pool accepts, a reload (ExecReload's SIGUSR1) that adds
a pool, a log rotation with the installed logrotate file (when logrotate
is installed), and a stop (SIGTERM: STOPPING=1, exit 0). The pools and
the stats port are this script's (free loopback ports), given after the
unit's arguments (the command line wins over -C). Used by
tests/package.sh; exits 0 on success, 1 with the reason.
    python3 tests/packaging/run_as_unit.py /lib/systemd/system/strata.service
"""

import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

LOG = "/var/log/strata/strata.log"
PID = "/run/strata/strata.pid"


def unit_settings(path):
    """The [Service] keys of a unit file (the last value of each key)."""
    keys, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif section == "Service" and "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                keys[k.strip()] = v.strip()
    return keys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_until(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Notify:
    """The service manager's end of NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o777)    # the service user sends to it

    def wait_for(self, key, timeout=15.0):
        deadline, got = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            msg = dict(l.split("=", 1) for l in data.splitlines() if "=" in l)
            got.append(msg)
            if msg.get(key) == "1":
                return got
        raise SystemExit("run_as_unit: FAIL: no %s=1 within %.0fs (got %r)"
                         % (key, timeout, got))


def pools(ports, dead):
    return "".join("p%d:\n  listen: 127.0.0.1:%d\n  servers:\n    - 127.0.0.1:%d:1\n"
                   % (i, p, dead) for i, p in enumerate(ports))


def write(path, text, mode=0o644):
    with open(path + ".new", "w") as f:
        f.write(text)
    os.chmod(path + ".new", mode)
    os.rename(path + ".new", path)


def check(cond, why):
    if not cond:
        raise SystemExit("run_as_unit: FAIL: " + why)


def rotate(tmp, pid):
    """logrotate -f with the installed file: the log is renamed, SIGHUP
    (postrotate, through the pid file here) makes strata reopen it."""
    if shutil.which("logrotate") is None:
        print("run_as_unit: logrotate not installed: rotation not tested")
        return
    subprocess.run(["logrotate", "-s", os.path.join(tmp, "lr.state"), "-f",
                    "/etc/logrotate.d/strata"], check=True)
    check(os.path.exists(LOG + ".1"), "logrotate did not rotate " + LOG)
    check(wait_until(lambda: "reopening the log file" in read(LOG + ".1"), 10),
          "no SIGHUP from logrotate's postrotate")
    os.kill(pid, signal.SIGTTIN)    # logs a line: it must reach the new file
    check(wait_until(lambda: "log level up" in read(LOG), 10),
          "strata did not reopen " + LOG + " after the rotation")
    check(pwd.getpwuid(os.stat(LOG).st_uid).pw_name == "strata",
          "the new log is not owned by strata")
    print("run_as_unit: logrotate rotated the log and strata reopened it")


def run(unit):
    svc = unit_settings(unit)
    user = svc.get("User", "root")
    check(svc.get("Type") == "notify", "the unit is not Type=notify")
    check(svc.get("ExecReload") == "/bin/kill -USR1 $MAINPID", "ExecReload is not SIGUSR1")
    argv = shlex.split(svc["ExecStart"])
    tmp = tempfile.mkdtemp(prefix="strata-unit-")
    os.chmod(tmp, 0o755)
    pw = pwd.getpwnam(user)
    os.makedirs("/run/strata", exist_ok=True)       # RuntimeDirectory=strata
    os.chown("/run/strata", pw.pw_uid, pw.pw_gid)
    note = Notify(os.path.join(tmp, "notify"))
    p1, p2, dead = free_port(), free_port(), free_port()
    conf = os.path.join(tmp, "pools.yml")
    write(conf, pools([p1], dead))
    argv += ["-c", conf, "-s", str(free_port()), "-p", PID]
    env = dict(os.environ, NOTIFY_SOCKET=note.path)
    cmd = ["setpriv", "--reuid", user, "--regid", svc.get("Group", user),
           "--init-groups", "--"] + argv
    print("run_as_unit: " + " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    try:
        note.wait_for("READY")
        check(accepts(p1), "READY=1 but the pool does not accept")
        pid = int(read(PID))
        check(pwd.getpwuid(os.stat("/proc/%d" % pid).st_uid).pw_name == user,
              "not running as " + user)
        check("started" in read(LOG), "nothing in " + LOG)
        write(conf, pools([p1, p2], dead))
        os.kill(pid, signal.SIGUSR1)                 # ExecReload
        msgs = note.wait_for("READY")
        check(msgs[0].get("RELOADING") == "1", "no RELOADING=1: %r" % msgs)
        check("configuration 2 " in msgs[-1].get("STATUS", ""), "reload: %r" % msgs)
        check(accepts(p2), "the reloaded pool does not accept")
        rotate(tmp, pid)
        os.kill(pid, signal.SIGTERM)                 # systemctl stop
        note.wait_for("STOPPING")
        check(proc.wait(timeout=30) == 0, "exit status %s" % proc.returncode)
        check(not os.path.exists(PID), "the pid file was left behind")
        print("run_as_unit: READY, RELOADING/READY, STOPPING and exit 0 as " + user)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree("/run/strata", ignore_errors=True)


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "/lib/systemd/system/strata.service")
