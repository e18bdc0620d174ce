#!/usr/bin/env bash
# Redis benchmark: redis-benchmark (Debian redis-tools) against
#   redis        one redis-server directly
#   nutcracker   twemproxy 0.5.0 with a Redis pool in front of it
#   strata       Strata with the same pool file (skipped with a note when
#                it does not start, e.g. before Redis pools land)
# for each scenario (SCENARIOS, default "p1 p16": redis-benchmark -P 1 and
# -P 16) and each command (SET then GET, run separately so each has its own
# CPU figure). For every run it reads the CPU time (utime+stime, from
# /proc/PID/stat) of the target and of the redis-server behind it before
# and after, and prints requests/s, p50/p99 latency and CPU microseconds
# per request, the median of ROUNDS rounds, in bench/run.sh's table style,
# plus the ratios strata/nutcracker.
#
# usage: bench/redis.sh [--help]
# Environment (defaults in brackets):
#   REQUESTS [100000]   requests per redis-benchmark run (-n)
#   CLIENTS [50]        connections (-c)
#   VSIZE [100]         value size (-d)
#   KEYSPACE [100000]   random keys (-r)
#   ROUNDS [1]          1..20; the table shows medians
#   SCENARIOS ["p1 p16"]  pN = pipeline N (any N)
#   TARGETS ["redis nutcracker strata"]
#   MAX_SECONDS [60]    hard bound of one redis-benchmark run (timeout)
#   PIN [split]         split: redis-benchmark (and, behind a proxy, the
#                       redis-server) on LOAD_CPUS, the target on SUT_CPUS;
#                       none: no pinning
#   LOAD_CPUS [0]  SUT_CPUS [1]
#   STRATA [src/strata]  NUTCRACKER [nutcracker]  REDIS_SERVER [redis-server]
#   REDIS_BENCHMARK [redis-benchmark]  KEEP_TMP [0]
#   STRATA_SETTINGS [""]  lines of a settings file (-C) for Strata, e.g.
#                       'redis_fence_replies = false;' (none: no -C)
# Everything listens on 127.0.0.1 on ports the kernel hands out; every
# process this script starts is stopped by its PID on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

for a in "$@"; do
    case "$a" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "redis.sh: unknown argument '$a' (try --help)" >&2; exit 1 ;;
    esac
done

REQUESTS=${REQUESTS:-100000}
CLIENTS=${CLIENTS:-50}
VSIZE=${VSIZE:-100}
KEYSPACE=${KEYSPACE:-100000}
ROUNDS=${ROUNDS:-1}
SCENARIOS=${SCENARIOS:-"p1 p16"}
TARGETS=${TARGETS:-"redis nutcracker strata"}
MAX_SECONDS=${MAX_SECONDS:-60}
PIN=${PIN:-split}
LOAD_CPUS=${LOAD_CPUS:-0}
SUT_CPUS=${SUT_CPUS:-1}
STRATA=${STRATA:-$top/src/strata}
NUTCRACKER=${NUTCRACKER:-nutcracker}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_BENCHMARK=${REDIS_BENCHMARK:-redis-benchmark}
KEEP_TMP=${KEEP_TMP:-0}

case "$ROUNDS" in ''|*[!0-9]*) echo "redis.sh: ROUNDS must be a number" >&2; exit 1 ;; esac
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || { echo "redis.sh: ROUNDS must be 1..20" >&2; exit 1; }
case "$REQUESTS" in ''|*[!0-9]*) echo "redis.sh: REQUESTS must be a number" >&2; exit 1 ;; esac
[ "$REQUESTS" -le 10000000 ] || { echo "redis.sh: REQUESTS at most 10000000" >&2; exit 1; }
for sc in $SCENARIOS; do
    case "$sc" in p[1-9]|p[1-9][0-9]|p[1-9][0-9][0-9]) ;; *)
        echo "redis.sh: scenario '$sc' is not pN (N = 1..999)" >&2; exit 1 ;; esac
done
command -v "$REDIS_SERVER" >/dev/null || { echo "redis.sh: $REDIS_SERVER not found (Debian: redis-server)" >&2; exit 1; }
command -v "$REDIS_BENCHMARK" >/dev/null || { echo "redis.sh: $REDIS_BENCHMARK not found (Debian: redis-tools)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "redis.sh: python3 is needed" >&2; exit 1; }

NCPU=$(nproc)
if [ "$PIN" = split ] && { ! command -v taskset >/dev/null || [ "$NCPU" -lt 2 ]; }; then
    echo "redis.sh: PIN=split needs taskset and 2 cores; using PIN=none" >&2
    PIN=none
fi
HZ=$(getconf CLK_TCK)

tmp=$(mktemp -d /tmp/strata-redis-bench.XXXXXX)
pids=()
load_pid=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p i
    if [ -n "$load_pid" ]; then
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for i in $(seq 1 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "$KEEP_TMP" = 1 ]; then echo "redis.sh: kept $tmp" >&2; else rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- ports from the kernel (all bound at once, so they differ) --------------
read -r redis_port nc_port nc_stats st_port st_stats < <(python3 - <<'EOF'
import socket
ss = [socket.socket() for _ in range(5)]
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
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
pin() { taskset -a -p -c "$2" "$1" >/dev/null; }

# ---- servers ----------------------------------------------------------------
mkdir -p "$tmp/redis"
"$REDIS_SERVER" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --dir "$tmp/redis" --logfile "$tmp/redis.log" \
    --protected-mode no </dev/null >/dev/null 2>&1 &
redis_pid=$!; pids+=("$redis_pid")
wait_port "$redis_port" "$redis_pid" || { echo "redis.sh: redis-server did not start" >&2; cat "$tmp/redis.log" >&2; exit 1; }

cat >"$tmp/pool.yml" <<EOF
bench:
  listen: 127.0.0.1:PORT
  redis: true
  hash: fnv1a_64
  distribution: ketama
  timeout: 2000
  auto_eject_hosts: false
  servers:
    - 127.0.0.1:$redis_port:1 shard-a
EOF
sed "s/PORT/$nc_port/" "$tmp/pool.yml" >"$tmp/nutcracker.yml"
sed "s/PORT/$st_port/" "$tmp/pool.yml" >"$tmp/strata.yml"

declare -A tpid tport
tpid[redis]=$redis_pid; tport[redis]=$redis_port
for tg in $TARGETS; do
    case "$tg" in
    redis) ;;
    nutcracker)
        command -v "$NUTCRACKER" >/dev/null || { echo "redis.sh: $NUTCRACKER not found; nutcracker skipped" >&2; continue; }
        "$NUTCRACKER" -c "$tmp/nutcracker.yml" -s "$nc_stats" -a 127.0.0.1 \
            -o "$tmp/nutcracker.log" </dev/null >"$tmp/nutcracker.out" 2>&1 &
        p=$!; pids+=("$p")
        if wait_port "$nc_port" "$p"; then tpid[nutcracker]=$p; tport[nutcracker]=$nc_port
        else echo "redis.sh: nutcracker did not start; skipped" >&2; fi ;;
    strata)
        if [ ! -x "$STRATA" ]; then echo "redis.sh: $STRATA not found; strata skipped" >&2; continue; fi
        st_cfg=()
        if [ -n "${STRATA_SETTINGS:-}" ]; then
            printf '%s\n' "$STRATA_SETTINGS" >"$tmp/strata.cfg"
            st_cfg=(-C "$tmp/strata.cfg")
            echo "strata settings: $(tr '\n' ' ' <"$tmp/strata.cfg")"
        fi
        "$STRATA" "${st_cfg[@]}" -c "$tmp/strata.yml" -s "$st_stats" -a 127.0.0.1 \
            -o "$tmp/strata.log" </dev/null >"$tmp/strata.out" 2>&1 &
        p=$!; pids+=("$p")
        if wait_port "$st_port" "$p"; then tpid[strata]=$p; tport[strata]=$st_port
        else
            echo "redis.sh: strata did not start with a Redis pool; skipped. It said:" >&2
            { cat "$tmp/strata.out" "$tmp/strata.log" 2>/dev/null || true; } | tail -n 5 | sed "s/^/  /" >&2
        fi ;;
    *) echo "redis.sh: unknown target '$tg' (redis nutcracker strata)" >&2; exit 1 ;;
    esac
done

echo "== Strata Redis benchmark $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $NCPU cores ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), $(uname -sr); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "versions: $("$REDIS_SERVER" --version | cut -d' ' -f1-3), $("$NUTCRACKER" -V 2>&1 | head -1 | sed 's/^This is //')"
echo "load: redis-benchmark -n $REQUESTS -c $CLIENTS -d $VSIZE -r $KEYSPACE, SET then GET, $ROUNDS round(s); scenarios: $SCENARIOS"
if [ "$PIN" = split ]; then
    echo "pinning: redis-benchmark on CPU $LOAD_CPUS; the target on CPU $SUT_CPUS; behind a proxy, redis-server on CPU $LOAD_CPUS"
else
    echo "pinning: none"
fi
echo

# ---- runs -------------------------------------------------------------------
results=$tmp/results.tsv
: >"$results"
failed=0
for round in $(seq 1 "$ROUNDS"); do
for sc in $SCENARIOS; do
    pipe=${sc#p}
    for tg in $TARGETS; do
        [ -n "${tpid[$tg]:-}" ] || continue
        tp=${tpid[$tg]}
        if ! kill -0 "$tp" 2>/dev/null; then echo "redis.sh: $tg died; skipped" >&2; failed=1; continue; fi
        load=("$REDIS_BENCHMARK")
        if [ "$PIN" = split ]; then
            load=(taskset -c "$LOAD_CPUS" "$REDIS_BENCHMARK")
            if [ "$tg" = redis ]; then pin "$redis_pid" "$SUT_CPUS"
            else pin "$redis_pid" "$LOAD_CPUS"; pin "$tp" "$SUT_CPUS"; fi
        fi
        for cmd in set get; do
            out=$tmp/out-$round-$sc-$tg-$cmd.csv
            t0=$(cpu_ticks "$tp"); r0=$(cpu_ticks "$redis_pid")
            rc=0
            timeout -k 5 "$MAX_SECONDS" "${load[@]}" -h 127.0.0.1 -p "${tport[$tg]}" \
                -t "$cmd" -n "$REQUESTS" -c "$CLIENTS" -d "$VSIZE" -r "$KEYSPACE" \
                -P "$pipe" --csv >"$out" 2>"$out.err" </dev/null &
            load_pid=$!
            wait "$load_pid" || rc=$?
            load_pid=
            t1=$(cpu_ticks "$tp"); r1=$(cpu_ticks "$redis_pid")
            if [ "$rc" != 0 ] || ! grep -q '^"'"${cmd^^}"'"' "$out"; then
                echo "   !! $tg $sc $cmd: redis-benchmark exit $rc (124 = over MAX_SECONDS)"
                sed 's/^/     /' "$out.err" | tail -n 5
                failed=1
                continue
            fi
            line=$(grep '^"'"${cmd^^}"'"' "$out" | head -1)
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$sc" "$tg" "$cmd" \
                "$((t1 - t0))" "$((r1 - r0))" "$line" >>"$results"
            echo "-- round $round, $sc, $tg, $cmd: $line"
        done
    done
done
done

echo
python3 - "$results" "$HZ" "$REQUESTS" "$TARGETS" "$SCENARIOS" <<'EOF'
import csv, io, statistics, sys
path, hz, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
targets, scenarios = sys.argv[4].split(), sys.argv[5].split()
rows = {}
for line in open(path):
    rnd, sc, tg, cmd, dt, dr, rest = line.rstrip("\n").split("\t", 6)
    f = next(csv.reader(io.StringIO(rest)))
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
    # "p95_latency_ms","p99_latency_ms","max_latency_ms"
    r = {"rps": float(f[1]), "p50": float(f[4]) * 1000, "p99": float(f[6]) * 1000,
         "us_t": int(dt) / hz * 1e6 / n, "us_r": int(dr) / hz * 1e6 / n}
    rows.setdefault((sc, cmd, tg), []).append(r)
med = lambda rs, k: statistics.median(x[k] for x in rs)
print("Results (median of the rounds; us/op = CPU microseconds per request from")
print("  /proc/PID/stat utime+stime over the run / requests: tgt = the target, redis =")
print("  the redis-server behind it, for the redis row itself; clock-tick resolution)")
hdr = "%-8s %-4s %-11s %6s %10s %8s %8s %7s %7s" % (
    "scenario", "cmd", "target", "rounds", "req/s", "p50 us", "p99 us", "tgt/op", "redis/op")
print(hdr)
print("-" * len(hdr))
for sc in scenarios:
    for cmd in ("set", "get"):
        for tg in targets:
            rs = rows.get((sc, cmd, tg))
            if not rs:
                print("%-8s %-4s %-11s %9s" % (sc, cmd, tg, "(no result)"))
                continue
            print("%-8s %-4s %-11s %6d %10.0f %8.0f %8.0f %7.2f %7.2f" % (
                sc, cmd, tg, len(rs), med(rs, "rps"), med(rs, "p50"), med(rs, "p99"),
                med(rs, "us_t"), med(rs, "us_r")))
print()
print("Ratios strata/nutcracker (medians): req/s; proxy CPU us/op")
any_ratio = False
for sc in scenarios:
    for cmd in ("set", "get"):
        a, b = rows.get((sc, cmd, "strata")), rows.get((sc, cmd, "nutcracker"))
        if a and b:
            any_ratio = True
            print("  %-4s %-4s req/s %.2f, CPU/op %s" % (
                sc, cmd, med(a, "rps") / med(b, "rps"),
                "%.2f" % (med(a, "us_t") / med(b, "us_t")) if med(b, "us_t") > 0 else "-"))
if not any_ratio:
    print("  (no strata and nutcracker results to compare)")
EOF
if [ "$failed" != 0 ]; then
    echo "redis.sh: some runs failed (see above)" >&2
    exit 2
fi
