#!/usr/bin/env bash
# Large Redis replies (issue 14): one LRANGE of a whole list of N elements
# (default 4,000,000 one-byte elements, a 28 MB reply) against
#   redis        one redis-server directly
#   nutcracker   twemproxy 0.5.0 with a Redis pool in front of it
#   strata       Strata (--workers 1) with the same pool file
# ROUNDS rounds, side by side. For every run it prints the wall time from
# the request to the reply's last byte and the target's CPU time
# (utime+stime from /proc/PID/stat), checks that the bytes are exactly the
# direct reply's, and prints the medians and the ratio strata/nutcracker.
# While the LRANGE runs through a proxy, a second client (a process of its
# own) asks a second pool of the same proxy (on its own redis-server; in
# Strata the same and only worker) GET in a loop, one at a time, from
# just before the LRANGE is sent until its reply is whole, and the
# latencies of those GETs are reported (count, p99, max). Strata's RSS (VmRSS) is read
# before the first round and after each reply.
#
# usage: bench/redis_large.sh [--help]
# Environment (defaults in brackets):
#   N [4000000]         elements in the list (1..50000000)
#   ELEM [1]            bytes per element (1..1000)
#   ROUNDS [3]          1..20
#   TARGETS ["redis nutcracker strata"]
#   MAX_SECONDS [120]   hard bound of one LRANGE (client timeout)
#   MAX_REPLY []        Strata's redis_max_reply_size (a settings file),
#                       for N past its default (1 GB); unset: none
#   STRATA [src/strata]  NUTCRACKER [nutcracker]  REDIS_SERVER [redis-server]
#   KEEP_TMP [0]
# Everything listens on 127.0.0.1 on ports the kernel hands out; every
# process this script starts is stopped by its PID on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

for a in "$@"; do
    case "$a" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "redis_large.sh: unknown argument '$a' (try --help)" >&2; exit 1 ;;
    esac
done

N=${N:-4000000}
ELEM=${ELEM:-1}
ROUNDS=${ROUNDS:-3}
TARGETS=${TARGETS:-"redis nutcracker strata"}
MAX_SECONDS=${MAX_SECONDS:-120}
MAX_REPLY=${MAX_REPLY:-}
STRATA=${STRATA:-$top/src/strata}
NUTCRACKER=${NUTCRACKER:-nutcracker}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
KEEP_TMP=${KEEP_TMP:-0}

num() {   # num NAME VALUE MIN MAX
    case "$2" in ''|*[!0-9]*) echo "redis_large.sh: $1 must be a number" >&2; exit 1 ;; esac
    [ "$2" -ge "$3" ] && [ "$2" -le "$4" ] || { echo "redis_large.sh: $1 must be $3..$4" >&2; exit 1; }
}
num N "$N" 1 50000000
num ELEM "$ELEM" 1 1000
num ROUNDS "$ROUNDS" 1 20
num MAX_SECONDS "$MAX_SECONDS" 1 3600
[ -z "$MAX_REPLY" ] || num MAX_REPLY "$MAX_REPLY" 1024 2147483647
command -v "$REDIS_SERVER" >/dev/null || { echo "redis_large.sh: $REDIS_SERVER not found (Debian: redis-server)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "redis_large.sh: python3 is needed" >&2; exit 1; }

tmp=$(mktemp -d /tmp/strata-redis-large.XXXXXX)
pids=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p i
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for i in $(seq 1 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "$KEEP_TMP" = 1 ]; then echo "redis_large.sh: kept $tmp" >&2; else rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- ports from the kernel (all bound at once, so they differ) --------------
read -r big_port small_port nc_a nc_b nc_stats st_a st_b st_stats < <(python3 - <<'EOF'
import socket
ss = [socket.socket() for _ in range(8)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))
for s in ss:
    s.close()
EOF
)

accepts() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 0.2).close()" "$1" 2>/dev/null; }
wait_port() {   # wait_port PORT PID: up to 5 s, while PID lives
    local i
    for i in $(seq 1 100); do
        accepts "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# ---- servers: one holds the big list, the other answers the probe's GETs ----
start_redis() {   # start_redis PORT NAME
    mkdir -p "$tmp/$2"
    "$REDIS_SERVER" --port "$1" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --dir "$tmp/$2" --logfile "$tmp/$2.log" \
        --protected-mode no </dev/null >/dev/null 2>&1 &
    local p=$!; pids+=("$p")
    wait_port "$1" "$p" || { echo "redis_large.sh: redis-server did not start" >&2; cat "$tmp/$2.log" >&2; exit 1; }
    echo "$p"
}
big_pid=$(start_redis "$big_port" big | tail -1)
small_pid=$(start_redis "$small_port" small | tail -1)
pids+=("$big_pid" "$small_pid")

pool_file() {   # pool_file PORT_A PORT_B
    cat <<EOF
big:
  listen: 127.0.0.1:$1
  redis: true
  hash: fnv1a_64
  distribution: ketama
  timeout: $((MAX_SECONDS * 1000))
  auto_eject_hosts: false
  servers:
    - 127.0.0.1:$big_port:1 shard-a
small:
  listen: 127.0.0.1:$2
  redis: true
  hash: fnv1a_64
  distribution: ketama
  timeout: 2000
  auto_eject_hosts: false
  servers:
    - 127.0.0.1:$small_port:1 shard-b
EOF
}
pool_file "$nc_a" "$nc_b" >"$tmp/nutcracker.yml"
pool_file "$st_a" "$st_b" >"$tmp/strata.yml"
settings=()
if [ -n "$MAX_REPLY" ]; then
    echo "redis_max_reply_size = $MAX_REPLY;" >"$tmp/strata.cfg"
    settings=(-C "$tmp/strata.cfg")
fi

declare -A tpid tport tprobe
tpid[redis]=$big_pid; tport[redis]=$big_port; tprobe[redis]=0
for tg in $TARGETS; do
    case "$tg" in
    redis) ;;
    nutcracker)
        command -v "$NUTCRACKER" >/dev/null || { echo "redis_large.sh: $NUTCRACKER not found; nutcracker skipped" >&2; continue; }
        "$NUTCRACKER" -c "$tmp/nutcracker.yml" -s "$nc_stats" -a 127.0.0.1 \
            -o "$tmp/nutcracker.log" </dev/null >"$tmp/nutcracker.out" 2>&1 &
        p=$!; pids+=("$p")
        if wait_port "$nc_a" "$p"; then tpid[nutcracker]=$p; tport[nutcracker]=$nc_a; tprobe[nutcracker]=$nc_b
        else echo "redis_large.sh: nutcracker did not start; skipped" >&2; fi ;;
    strata)
        if [ ! -x "$STRATA" ]; then echo "redis_large.sh: $STRATA not found; strata skipped" >&2; continue; fi
        "$STRATA" -c "$tmp/strata.yml" "${settings[@]}" -s "$st_stats" -a 127.0.0.1 \
            --workers 1 -o "$tmp/strata.log" </dev/null >"$tmp/strata.out" 2>&1 &
        p=$!; pids+=("$p")
        if wait_port "$st_a" "$p"; then tpid[strata]=$p; tport[strata]=$st_a; tprobe[strata]=$st_b
        else
            echo "redis_large.sh: strata did not start; skipped. It said:" >&2
            { cat "$tmp/strata.out" "$tmp/strata.log" 2>/dev/null || true; } | tail -n 5 | sed "s/^/  /" >&2
        fi ;;
    *) echo "redis_large.sh: unknown target '$tg' (redis nutcracker strata)" >&2; exit 1 ;;
    esac
done

plan=""
for round in $(seq 1 "$ROUNDS"); do
    for tg in $TARGETS; do
        [ -n "${tpid[$tg]:-}" ] && plan="$plan $round:$tg:${tpid[$tg]}:${tport[$tg]}:${tprobe[$tg]}"
    done
done

echo "== Strata large Redis reply benchmark $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), $(uname -sr); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "versions: $("$REDIS_SERVER" --version | cut -d' ' -f1-3), $("$NUTCRACKER" -V 2>&1 | head -1 | sed 's/^This is //')"
echo "load: RPUSH of $N elements of $ELEM byte(s), then LRANGE 0 -1, $ROUNDS round(s); strata --workers 1"
echo

python3 - "$big_port" "$small_port" "$N" "$ELEM" "$MAX_SECONDS" "${tpid[strata]:-0}" "$plan" <<'EOF'
import multiprocessing as mp, os, socket, statistics, sys, time

big_port, small_port, n, elem, max_s, strata_pid = map(int, sys.argv[1:7])
plan = [p.split(":") for p in sys.argv[7].split()]
hz = os.sysconf("SC_CLK_TCK")

def conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=max_s)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)

def read_exact_reply(s, want):
    """Reads until `want` bytes (the reply's size, known from the direct
    run) or, when want is None, until a whole '*N' reply of one-line
    elements has arrived; returns the bytes."""
    buf = bytearray()
    while want is None or len(buf) < want:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise SystemExit("connection closed after %d bytes" % len(buf))
        buf += chunk
        if want is None and complete(buf):
            break
    return bytes(buf)

def complete(buf):
    nl = buf.find(b"\r\n")
    if nl < 0 or buf[:1] != b"*":
        return buf[:1] in (b"-",) and nl >= 0
    count = int(buf[1:nl])
    return len(buf) >= nl + 2 + count * (elem + 5 + len(str(elem)))

def cpu(pid):
    try:
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / hz
    except OSError:
        return 0.0

def rss_kb(pid):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

# ---- load the list ---------------------------------------------------------
alphabet = b"abcdefghijklmnopqrstuvwxyz"
with conn(big_port) as s:
    s.sendall(cmd("DEL", "biglist"))
    s.recv(100)
    batch, sent = 10000, 0
    while sent < n:
        k = min(batch, n - sent)
        vals = [bytes([alphabet[(sent + i) % 26]]) * elem for i in range(k)]
        s.sendall(cmd(b"RPUSH", b"biglist", *vals))
        r = b""
        while not r.endswith(b"\r\n"):
            r += s.recv(100)
        sent += k
    s.sendall(cmd("LLEN", "biglist"))
    print("loaded: LLEN %s" % s.recv(100).strip().decode())
with conn(small_port) as s:
    s.sendall(cmd("SET", "probe", "v"))
    s.recv(100)

# ---- the probe: GETs on the second pool while the LRANGE runs ---------------
# A process of its own, so that reading the big reply (this process) does
# not delay it; it sends a GET, waits for the answer, and again, until
# told to stop, then hands back its latencies.
def probe_loop(port, ready, stop, out):
    lat, errors = [], 0
    with conn(port) as s:
        req = cmd("GET", "probe")
        while not stop.is_set():
            t0 = time.monotonic()
            s.sendall(req)
            r = b""
            while not r.endswith(b"v\r\n") and not (r[:1] == b"-" and r.endswith(b"\r\n")):
                r += s.recv(100)
            lat.append(time.monotonic() - t0)
            errors += r[:1] == b"-"
            ready.set()
            time.sleep(0.001)
    out.put((lat, errors))

class Probe:
    def __init__(self, port):
        self.ready, self.stop_ev = mp.Event(), mp.Event()
        self.out = mp.Queue()
        self.proc = mp.Process(target=probe_loop,
                               args=(port, self.ready, self.stop_ev, self.out))
        self.lat, self.errors = [], 0
    def start(self):
        self.proc.start()
        if not self.ready.wait(10):
            raise SystemExit("the probe's GET is not answered")
    def stop(self):
        self.stop_ev.set()
        self.lat, self.errors = self.out.get(timeout=max_s)
        self.proc.join(10)

# ---- rounds ------------------------------------------------------------------
direct = None
rows, probes = {}, {}
rss_before = rss_kb(strata_pid) if strata_pid else 0
rss_after = []
for rnd, tg, pid, port, probe_port in plan:
    pid, port, probe_port = int(pid), int(port), int(probe_port)
    probe = Probe(probe_port) if probe_port else None
    with conn(port) as s:
        if probe:
            probe.start()
        c0, t0 = cpu(pid), time.monotonic()
        s.sendall(cmd("LRANGE", "biglist", 0, -1))
        got = read_exact_reply(s, len(direct) if direct is not None else None)
        t1, c1 = time.monotonic(), cpu(pid)
    if probe:
        probe.stop()
        probes.setdefault(tg, []).extend(probe.lat)
    if direct is None:
        direct = got
    ok = got == direct
    rows.setdefault(tg, []).append((t1 - t0, c1 - c0, ok))
    extra = ""
    if probe:
        extra = ", probe GETs %d, max %.1f ms" % (len(probe.lat), max(probe.lat) * 1000)
        if probe.errors:
            extra += " (%d answered with an error)" % probe.errors
    if tg == "strata":
        rss_after.append(rss_kb(pid))
        extra += ", strata RSS %d MB" % (rss_after[-1] // 1024)
    print("-- round %s, %-10s %.3f s, CPU %.2f s, %d bytes%s%s" % (
        rnd, tg + ":", t1 - t0, c1 - c0, len(got), "" if ok else " DIFFERENT", extra))

print()
print("Results (median of the rounds; CPU = the target's utime+stime over the LRANGE)")
hdr = "%-11s %6s %9s %9s %9s %6s %10s %9s %9s" % (
    "target", "rounds", "median s", "min s", "CPU s", "same", "probe GETs",
    "p99 ms", "max ms")
print(hdr)
print("-" * len(hdr))
for tg in ("redis", "nutcracker", "strata"):
    rs = rows.get(tg)
    if not rs:
        continue
    lat = sorted(probes.get(tg, []))
    p99 = "%.1f" % (lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000) if lat else "-"
    mx = "%.1f" % (lat[-1] * 1000) if lat else "-"
    print("%-11s %6d %9.3f %9.3f %9.2f %6s %10s %9s %9s" % (
        tg, len(rs), statistics.median(r[0] for r in rs), min(r[0] for r in rs),
        statistics.median(r[1] for r in rs), "yes" if all(r[2] for r in rs) else "NO",
        len(lat) if lat else "-", p99, mx))
a, b = rows.get("strata"), rows.get("nutcracker")
if a and b:
    print()
    print("Ratio strata/nutcracker (median wall time): %.2f; CPU: %.2f" % (
        statistics.median(r[0] for r in a) / statistics.median(r[0] for r in b),
        statistics.median(r[1] for r in a) / max(1e-9, statistics.median(r[1] for r in b))))
if strata_pid:
    print("Strata RSS: %d MB before the first round; after each reply: %s MB" % (
        rss_before // 1024, ", ".join(str(x // 1024) for x in rss_after)))
if any(not r[2] for rs in rows.values() for r in rs):
    sys.exit(2)
EOF
