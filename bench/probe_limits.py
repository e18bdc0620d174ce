#!/usr/bin/env python3
"""Issue 14's hostile-input probes, for docs/benchmarks.md (not a test):

  auth   wrong Redis AUTH passwords against a pool with redis_auth: a
         client that sends three at a time and reconnects when closed;
         prints guesses answered per second and connections used.
  spin   the stats port with descriptors exhausted (RLIMIT_NOFILE 64, 80
         clients of a pool, one stats connection waiting): prints the
         proxy's CPU seconds over 3 s.

usage: bench/probe_limits.py auth|spin [STRATA_BINARY]
Everything runs on 127.0.0.1 on ports the kernel hands out; the processes
started are stopped by PID; each probe runs 3 s."""
import os
import socket
import subprocess
import sys
import tempfile
import time


def free():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("port %d never accepted" % port)


def auth(binary, tmp):
    rp, lp, sp = free(), free(), free()
    red = subprocess.Popen(["redis-server", "--port", str(rp), "--bind", "127.0.0.1",
                            "--save", "", "--requirepass", "sekret"],
                           stdout=subprocess.DEVNULL)
    conf = os.path.join(tmp, "auth.yml")
    with open(conf, "w") as f:
        f.write("r:\n  listen: 127.0.0.1:%d\n  redis: true\n  redis_auth: sekret\n"
                "  servers:\n    - 127.0.0.1:%d:1\n" % (lp, rp))
    st = subprocess.Popen([binary, "-c", conf, "-s", str(sp), "-a", "127.0.0.1",
                           "--workers", "1", "-o", os.path.join(tmp, "auth.log")])
    try:
        wait_port(lp)
        wrong = b"*2\r\n$4\r\nAUTH\r\n$4\r\nnope\r\n"
        n = conns = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:
            s = socket.create_connection(("127.0.0.1", lp))
            conns += 1
            s.sendall(wrong * 3)
            buf = b""
            while buf.count(b"\r\n") < 3:
                d = s.recv(4096)
                if not d:
                    break
                buf += d
            n += buf.count(b"-ERR invalid password")
            s.close()
        el = time.monotonic() - t0
        print("auth: %.0f wrong passwords answered per second, %.0f connections per "
              "second (%s)" % (n / el, conns / el, binary))
    finally:
        st.terminate()
        red.terminate()
        st.wait()
        red.wait()


def spin(binary, tmp):
    mp, lp, sp = free(), free(), free()
    mc = subprocess.Popen(["memcached", "-u", "nobody", "-p", str(mp), "-l", "127.0.0.1"])
    conf, cfg = os.path.join(tmp, "spin.yml"), os.path.join(tmp, "spin.cfg")
    with open(conf, "w") as f:
        f.write("a:\n  listen: 127.0.0.1:%d\n  servers:\n    - 127.0.0.1:%d:1\n" % (lp, mp))
    with open(cfg, "w") as f:
        f.write("max_clients = 1000;\n")
    st = subprocess.Popen(["prlimit", "--nofile=64:64", "--", binary, "-c", conf, "-C", cfg,
                           "-s", str(sp), "-a", "127.0.0.1", "--workers", "1",
                           "-o", os.path.join(tmp, "spin.log")],
                          stderr=subprocess.DEVNULL)
    socks = []
    try:
        wait_port(lp)
        socks = [socket.create_connection(("127.0.0.1", lp)) for _ in range(80)]
        time.sleep(0.5)      # the pool's accepts use the descriptors up
        socks.append(socket.create_connection(("127.0.0.1", sp)))
        time.sleep(0.3)
        c0 = cpu(st.pid)
        time.sleep(3)
        print("spin: %.2f s of CPU in 3 s, descriptors exhausted, a stats connection "
              "waiting (%s)" % (cpu(st.pid) - c0, binary))
    finally:
        for s in socks:
            s.close()
        st.terminate()
        mc.terminate()
        st.wait()
        mc.wait()


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("auth", "spin"):
        raise SystemExit(__doc__)
    here = os.path.dirname(os.path.abspath(__file__))
    binary = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "src", "strata")
    with tempfile.TemporaryDirectory() as tmp:
        {"auth": auth, "spin": spin}[sys.argv[1]](binary, tmp)


if __name__ == "__main__":
    main()
