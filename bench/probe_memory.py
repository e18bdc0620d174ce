"""Issue 14 probe (items 4, 5): RSS of a strata binary under non-reading
clients that pipeline large multigets, under max_memory, and after a burst
of 1 MB sets (docs/benchmarks.md, "Memory bounds (issue 14)").

  python3 bench/probe_memory.py STRATA_BIN SCENARIO...

SCENARIO: redis mc redis-mm mc-mm mc-trained mc-trained-mm burst-redis
burst-mc. Needs the integration harness (tests/integration), memcached
and redis-server."""
import os, sys, time, threading, socket, tempfile, shutil
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import harness
from harness import Memcached, Proxy, MCClient, free_port
from redis_util import RedisServer, RespConn, encode, redis_pool
from policy_util import rss_kb, write_settings
from conftest import simple_pool

BIN = sys.argv[1]
WHICH = sys.argv[2:]
BIG = b"b" * (1024 * 1024 - 100)
MB = 1024

def proxy(workdir, pools, settings=""):
    for b in pools.values():
        b.setdefault("listen", "127.0.0.1:%d" % free_port())
    args = []
    if settings:
        args = ["-C", write_settings(workdir, settings)]
    p = Proxy("strata", BIN, workdir, pools, extra_args=args, name="p%d" % free_port())
    p.start()
    return p

def hog(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.connect(("127.0.0.1", port))
    return s

def watch_settle(p, calls):
    peak = rss_kb(p.pid); last = None; same = 0
    t0 = time.time()
    while time.time() - t0 < 120:
        for _ in range(30):
            peak = max(peak, rss_kb(p.pid)); time.sleep(0.01)
        cur = (calls(), rss_kb(p.pid) // 4096)
        same = same + 1 if cur == last else 0
        last = cur
        if same >= 3: break
    return peak

def redis_hogs(workdir, nclients, settings=""):
    r = RedisServer(workdir).start()
    try:
        keys = ["big%d" % i for i in range(60)]
        with RespConn(r.port, timeout=30) as c:
            for k in keys: c.call("SET", k, BIG)
        p = proxy(workdir, {"r": redis_pool([r], timeout=20000)}, settings)
        rss0 = rss_kb(p.pid)
        hs = [hog(p.port) for _ in range(nclients)]
        for h in hs: h.sendall(encode("MGET", *keys) * 16)
        peak = watch_settle(p, lambda: r.commandstats().get("mget", 0))
        print("redis %d non-reading clients x16 MGET 60x1MB %s: peak +%d MB (%d MB per client)"
              % (nclients, settings.strip() or "defaults", (peak - rss0) // MB, (peak - rss0) // MB // nclients), flush=True)
        for h in hs: h.close()
        p.stop()
    finally:
        r.stop()

def mc_hogs(workdir, nclients, settings="", trained=False):
    m = Memcached(workdir, extra_args=["-I", "2m", "-m", "256"]).start()
    try:
        p = proxy(workdir, {"m": simple_pool([m])}, settings)
        with MCClient(p.port, timeout=30) as c:
            c.send(b"set big 0 0 %d\r\n" % len(BIG) + BIG + b"\r\n"); assert c.readline() == b"STORED\r\n"
        rss0 = rss_kb(p.pid)
        hs = [hog(p.port) for _ in range(nclients)]
        line = b"get " + b" ".join([b"big"] * 60) + b"\r\n"
        first = b"get small\r\n" * 20 if trained else b""
        for h in hs: h.sendall(first + line * 16)
        peak = watch_settle(p, lambda: harness.backend_command_counts([m])["cmd_get"])
        with MCClient(p.port, timeout=30) as c:
            c.send(b"stats\r\n"); st = {}
            while True:
                l = c.readline()
                if l == b"END\r\n": break
                f = l.split(); st[f[1].decode()] = f[2].decode()
        print("memcached %d non-reading clients%s x16 get big x60 %s: peak +%d MB (%d MB per client); out_of_memory %s reply_over_budget %s"
              % (nclients, " (20 small gets first)" if trained else "", settings.strip() or "defaults", (peak - rss0) // MB, (peak - rss0) // MB // nclients,
                 st.get("out_of_memory"), st.get("reply_over_budget", "-")), flush=True)
        for h in hs: h.close()
        p.stop()
    finally:
        m.stop()

def burst(workdir, proto, nclients=32, depth=128):
    if proto == "redis":
        s = RedisServer(workdir).start(); pool = redis_pool([s], timeout=20000)
        req = lambda i: encode("SET", "burst%d" % i, BIG); ok = b"+OK\r\n"
    else:
        s = Memcached(workdir, extra_args=["-I", "2m", "-m", "256"]).start(); pool = simple_pool([s])
        req = lambda i: b"set burst%d 0 0 %d\r\n" % (i, len(BIG)) + BIG + b"\r\n"; ok = b"STORED\r\n"
    try:
        p = proxy(workdir, {"x": pool})
        rss0 = rss_kb(p.pid)
        def one(i):
            with MCClient(p.port, timeout=120) as c:
                data = req(i)
                def send():
                    for _ in range(depth): c.sock.sendall(data)
                t = threading.Thread(target=send); t.start()
                got = c.read_expected(ok * depth, timeout=120)
                assert got == ok * depth, got[-300:]
                t.join()
        ts = [threading.Thread(target=one, args=(i,)) for i in range(nclients)]
        t0 = time.time()
        for t in ts: t.start()
        for t in ts: t.join()
        after = rss_kb(p.pid)
        harness.wait_until(lambda: rss_kb(p.pid) - rss0 < 64 * MB, 10, 0.1)
        print("%s burst %dx%d 1MB sets (%.1fs): RSS start %d MB, at the end %d MB, 10 s later %d MB"
              % (proto, nclients, depth, time.time() - t0, rss0 // MB, after // MB, rss_kb(p.pid) // MB), flush=True)
        p.stop()
    finally:
        s.stop()

wd = tempfile.mkdtemp(prefix="probe14-")
try:
    for w in WHICH:
        if w == "redis": redis_hogs(wd, 2)
        if w == "redis-mm": redis_hogs(wd, 4, "max_memory = 1073741824;\n")
        if w == "mc": mc_hogs(wd, 2)
        if w == "mc-mm": mc_hogs(wd, 4, "max_memory = 1073741824;\n")
        if w == "mc-trained": mc_hogs(wd, 2, trained=True)
        if w == "mc-trained-mm": mc_hogs(wd, 8, "max_memory = 268435456;\nclient_max_pending = 1073741824;\n", trained=True)
        if w == "burst-redis": burst(wd, "redis")
        if w == "burst-mc": burst(wd, "memcached")
finally:
    shutil.rmtree(wd, ignore_errors=True)
