#!/usr/bin/env bash
# Strata benchmark: the same load against
#   memcached        directly
#   nutcracker       (twemproxy 0.5.0, single-threaded) in front of it
#   strata-w1        Strata --workers 1
#   strata-w2        Strata --workers 2
# side by side in one run, printing ops/s, p50/p99 latency, the CPU each
# process used, and the ratios strata/nutcracker and strata/memcached.
#
# usage: bench/run.sh [--four] [--help]
#   --four   4 memcached behind the proxies instead of 1 (the "memcached"
#            row still talks to the first one only)
#
# Environment (defaults in brackets):
#   DURATION [5]        measured seconds per run
#   WARMUP [1]          unmeasured seconds before each measurement
#   ROUNDS [1]          rounds over all scenarios and targets; the table
#                       shows the median of the rounds
#   KEYS [100000]       key space (prefilled with sets before each run)
#   VSIZE [100]         value bytes
#   GET_PCT [90]        percent gets (the rest are sets)
#   THREADS [2]         load generator threads
#   CONNS [50]          connections per thread, scenario "small"
#   PIPE_CONNS [10]     connections per thread, scenario "pipelined"
#   PIPELINE [16]       requests in flight per connection, "pipelined"
#   SCENARIOS ["small pipelined"]
#   TARGETS ["memcached nutcracker strata-w1 strata-w2"]
#   PIN [split]         split: load generator (and the backend memcached)
#                       on LOAD_CPUS, the system under test on SUT_CPUS;
#                       none: no pinning, every process may use every core
#   LOAD_CPUS [0]  SUT_CPUS [1]
#   QUIET_MAX [15]      the table keeps, per row, the rounds in which other
#                       processes used at most this % of a core (all rounds
#                       when none qualifies), so a busy machine disturbs less
#   WAIT_QUIET [0]      before each measurement wait up to this many seconds
#                       for a second in which the machine is idle (under
#                       QUIET_MAX % of a core busy); for shared machines
#   MC_THREADS [2]      memcached -t
#   STRATA [src/strata]  NUTCRACKER [nutcracker]  MEMCACHED [memcached]
#   KEEP_TMP [0]        1: keep the temp dir (logs, pool file, raw output)
#
# Everything listens on 127.0.0.1 only, on ports the kernel hands out.
# Every process this script starts is stopped by its PID on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

FOUR=0
for a in "$@"; do
    case "$a" in
    --four) FOUR=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$a' (try --help)" >&2; exit 1 ;;
    esac
done

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-1}
KEYS=${KEYS:-100000}
VSIZE=${VSIZE:-100}
GET_PCT=${GET_PCT:-90}
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}
PIPE_CONNS=${PIPE_CONNS:-10}
PIPELINE=${PIPELINE:-16}
SCENARIOS=${SCENARIOS:-"small pipelined"}
TARGETS=${TARGETS:-"memcached nutcracker strata-w1 strata-w2"}
PIN=${PIN:-split}
LOAD_CPUS=${LOAD_CPUS:-0}
SUT_CPUS=${SUT_CPUS:-1}
MC_THREADS=${MC_THREADS:-2}
QUIET_MAX=${QUIET_MAX:-15}
WAIT_QUIET=${WAIT_QUIET:-0}
STRATA=${STRATA:-$top/src/strata}
NUTCRACKER=${NUTCRACKER:-nutcracker}
MEMCACHED=${MEMCACHED:-memcached}
KEEP_TMP=${KEEP_TMP:-0}

case "$ROUNDS" in ''|*[!0-9]*) echo "run.sh: ROUNDS must be a number" >&2; exit 1 ;; esac
if [ "$ROUNDS" -lt 1 ] || [ "$ROUNDS" -gt 20 ]; then
    echo "run.sh: ROUNDS must be 1..20" >&2; exit 1
fi
[ -x "$STRATA" ] || { echo "run.sh: $STRATA not found; build it with 'make -j2 src/strata'" >&2; exit 1; }
command -v "$NUTCRACKER" >/dev/null || { echo "run.sh: $NUTCRACKER not found" >&2; exit 1; }
command -v "$MEMCACHED" >/dev/null || { echo "run.sh: $MEMCACHED not found" >&2; exit 1; }
command -v python3 >/dev/null || { echo "run.sh: python3 is needed" >&2; exit 1; }

NCPU=$(nproc)
if [ "$PIN" = split ] && { ! command -v taskset >/dev/null || [ "$NCPU" -lt 2 ]; }; then
    echo "run.sh: PIN=split needs taskset and 2 cores; using PIN=none" >&2
    PIN=none
fi
ALL_CPUS="0-$((NCPU - 1))"

tmp=$(mktemp -d /tmp/strata-bench.XXXXXX)
pids=()
load_pid=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p i
    if [ -n "$load_pid" ]; then     # a load generator still running
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do        # bounded wait: 20 x 0.1 s, then KILL
        for i in $(seq 1 20); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "$KEEP_TMP" = 1 ]; then
        echo "run.sh: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build the load generator -------------------------------------------
gcc -O2 -Wall -Wextra -Werror -pthread -o "$tmp/mcload" "$here/mcload.c"

# ---- ports from the kernel ------------------------------------------------
# All sockets are bound at once so the ports differ; they are closed again
# right before the servers start (a tiny race other programs could win).
nmc=1; [ "$FOUR" = 1 ] && nmc=4
nports=$((nmc + 6))
read -r -a ports <<<"$(python3 -c '
import socket, sys
ss = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))
' "$nports")"
mc_ports=("${ports[@]:0:$nmc}")
nc_port=${ports[$nmc]};       nc_stats=${ports[$((nmc + 1))]}
s1_port=${ports[$((nmc + 2))]}; s1_stats=${ports[$((nmc + 3))]}
s2_port=${ports[$((nmc + 4))]}; s2_stats=${ports[$((nmc + 5))]}

wait_port() {   # wait_port PID PORT NAME: up to 100 x 0.1 s
    local pid=$1 port=$2 name=$3 i
    for i in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "run.sh: $name (pid $pid) exited at start-up" >&2
            return 1
        fi
        if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()' "$port" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "run.sh: $name did not listen on 127.0.0.1:$port within 10 s" >&2
    return 1
}

# ---- memcached ------------------------------------------------------------
mc_pids=()
mc_user=()
[ "$(id -u)" = 0 ] && mc_user=(-u root)
for p in "${mc_ports[@]}"; do
    "$MEMCACHED" "${mc_user[@]}" -l 127.0.0.1 -p "$p" -U 0 -m 512 -c 4096 -t "$MC_THREADS" \
        >"$tmp/memcached-$p.log" 2>&1 &
    pids+=($!); mc_pids+=($!)
done
for i in "${!mc_ports[@]}"; do
    wait_port "${mc_pids[$i]}" "${mc_ports[$i]}" "memcached :${mc_ports[$i]}"
done

# ---- one pool file for both proxies ---------------------------------------
pool() {   # pool LISTEN_PORT
    cat <<EOF
bench:
  listen: 127.0.0.1:$1
  hash: fnv1a_64
  distribution: ketama
  timeout: 2000
  auto_eject_hosts: false
  servers:
EOF
    local p
    for p in "${mc_ports[@]}"; do
        echo "    - 127.0.0.1:$p:1"
    done
}
pool "$nc_port" >"$tmp/nutcracker.yml"
pool "$s1_port" >"$tmp/strata-w1.yml"
pool "$s2_port" >"$tmp/strata-w2.yml"

"$NUTCRACKER" -c "$tmp/nutcracker.yml" -s "$nc_stats" -a 127.0.0.1 \
    -o "$tmp/nutcracker.log" -p "$tmp/nutcracker.pid" &
nc_pid=$!; pids+=($nc_pid)
"$STRATA" -c "$tmp/strata-w1.yml" -s "$s1_stats" -a 127.0.0.1 \
    -o "$tmp/strata-w1.log" -p "$tmp/strata-w1.pid" --workers 1 &
s1_pid=$!; pids+=($s1_pid)
"$STRATA" -c "$tmp/strata-w2.yml" -s "$s2_stats" -a 127.0.0.1 \
    -o "$tmp/strata-w2.log" -p "$tmp/strata-w2.pid" --workers 2 &
s2_pid=$!; pids+=($s2_pid)
wait_port "$nc_pid" "$nc_port" nutcracker
wait_port "$s1_pid" "$s1_port" strata-w1
wait_port "$s2_pid" "$s2_port" strata-w2

target_pid() {
    case "$1" in
    memcached) echo "${mc_pids[0]}" ;;
    nutcracker) echo "$nc_pid" ;;
    strata-w1) echo "$s1_pid" ;;
    strata-w2) echo "$s2_pid" ;;
    esac
}
target_port() {
    case "$1" in
    memcached) echo "${mc_ports[0]}" ;;
    nutcracker) echo "$nc_port" ;;
    strata-w1) echo "$s1_port" ;;
    strata-w2) echo "$s2_port" ;;
    esac
}
target_log() {
    case "$1" in
    memcached) echo "$tmp/memcached-${mc_ports[0]}.log" ;;
    *) echo "$tmp/$1.log" ;;
    esac
}

# wait_quiet: up to WAIT_QUIET one-second samples of /proc/stat until one
# shows less than QUIET_MAX % of a core busy (our servers are idle then)
wait_quiet() {
    [ "$WAIT_QUIET" -gt 0 ] 2>/dev/null || return 0
    python3 - "$WAIT_QUIET" "$QUIET_MAX" <<'PYEOF'
import os, sys, time
tries, limit = int(sys.argv[1]), float(sys.argv[2])
hz = os.sysconf("SC_CLK_TCK")
def busy():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
b = 0
for i in range(tries):
    a = busy(); time.sleep(1.0); b = 100.0 * (busy() - a) / hz
    if b <= limit:
        if i:
            print("   (waited %d s for the machine to quiet down)" % i)
        sys.exit(0)
print("   (machine still busy after %d s: %.0f%% of a core; measuring anyway)" % (tries, b))
PYEOF
}

# pin PID CPUS: every thread of a running process
pin() { taskset -a -p -c "$2" "$1" >/dev/null; }

# ---- banner ----------------------------------------------------------------
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
echo "== Strata benchmark $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $NCPU cores ($cpu_model), $(uname -sr); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "versions: $("$MEMCACHED" -V), $("$NUTCRACKER" -V 2>&1 | head -1 | sed 's/^This is //'), $("$STRATA" -V 2>&1 | head -1 | sed 's/^This is //')"
echo "backends: $nmc memcached (-t $MC_THREADS) on 127.0.0.1:${mc_ports[*]}"
echo "load: mcload $THREADS threads, $GET_PCT% get, $KEYS keys, $VSIZE B values, ${WARMUP}s warm-up + ${DURATION}s measured, $ROUNDS round(s)"
if [ "$PIN" = split ]; then
    echo "pinning: load generator on CPU $LOAD_CPUS; the target on CPU $SUT_CPUS;"
    echo "         behind a proxy, memcached shares CPU $LOAD_CPUS with the load generator"
else
    echo "pinning: none (every process may run on CPUs $ALL_CPUS)"
fi
if [ "$NCPU" -le 2 ]; then
    echo "NOTE: only $NCPU cores: load generator, proxy and memcached compete for them;"
    echo "      with PIN=split strata-w2 runs its 2 workers on one core."
fi
echo

# ---- runs ------------------------------------------------------------------
results=$tmp/results.tsv
: >"$results"
failed=0
mc_list=$(IFS=,; echo "${mc_pids[*]}")

for round in $(seq 1 "$ROUNDS"); do
for sc in $SCENARIOS; do
    case "$sc" in
    small) sc_args=(-t "$THREADS" -c "$CONNS" -d 1) ;;
    pipelined) sc_args=(-t "$THREADS" -c "$PIPE_CONNS" -d "$PIPELINE") ;;
    *) echo "run.sh: unknown scenario '$sc' (small, pipelined)" >&2; exit 1 ;;
    esac
    for tg in $TARGETS; do
        tpid=$(target_pid "$tg")
        [ -n "$tpid" ] || { echo "run.sh: unknown target '$tg'" >&2; exit 1; }
        if ! kill -0 "$tpid" 2>/dev/null; then
            echo "run.sh: $tg (pid $tpid) is not running; skipped" >&2
            failed=1
            continue
        fi
        load_cmd=("$tmp/mcload")
        watch=(-W "$tpid")
        if [ "$tg" != memcached ]; then
            for p in "${mc_pids[@]}"; do watch+=(-W "$p"); done
        fi
        if [ "$PIN" = split ]; then
            load_cmd=(taskset -c "$LOAD_CPUS" "$tmp/mcload")
            if [ "$tg" = memcached ]; then
                for p in "${mc_pids[@]}"; do pin "$p" "$SUT_CPUS"; done
            else
                for p in "${mc_pids[@]}"; do pin "$p" "$LOAD_CPUS"; done
                pin "$tpid" "$SUT_CPUS"
            fi
        else
            for p in "${pids[@]}"; do pin "$p" "$ALL_CPUS" 2>/dev/null || true; done
        fi
        out=$tmp/out-$round-$sc-$tg
        args=(-p "$(target_port "$tg")" "${sc_args[@]}" -r "$GET_PCT" -k "$KEYS" -v "$VSIZE"
              -T "$DURATION" -w "$WARMUP" -P 30 -o 2000 "${watch[@]}")
        echo "-- round $round, $sc, $tg: mcload ${args[*]}"
        wait_quiet
        rc=0
        # hard bound on top of mcload's own deadlines
        # (in the background, so that a signal to this script is handled at once)
        timeout -k 5 "$(python3 -c "print(int($DURATION + $WARMUP + 30 + 20))")" \
            "${load_cmd[@]}" "${args[@]}" >"$out" 2>"$out.err" &
        load_pid=$!
        wait "$load_pid" || rc=$?
        load_pid=
        sed 's/^/   /' "$out" | grep -v '^   RESULT' || true
        if [ -s "$out.err" ]; then
            echo "   mcload stderr:"; sed 's/^/     /' "$out.err"
        fi
        if [ "$rc" != 0 ]; then
            echo "   !! mcload exit status $rc (3 = errors seen, 124 = killed by timeout)"
            failed=1
        fi
        if ! kill -0 "$tpid" 2>/dev/null; then
            echo "   !! $tg (pid $tpid) DIED during the run; last lines of its log:"
            tail -n 20 "$(target_log "$tg")" | sed 's/^/     /'
            failed=1
        fi
        res=$(grep '^RESULT ' "$out" || true)
        if [ -n "$res" ]; then
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$sc" "$tg" "$tpid" "$mc_list" "$res" >>"$results"
        fi
    done
done
done

# ---- table -------------------------------------------------------------------
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)"
python3 - "$results" "$PIN" "$TARGETS" "$SCENARIOS" "$QUIET_MAX" <<'EOF'
import sys, statistics
path, pin, targets, scenarios = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
quiet_max = float(sys.argv[5])
rows = {}
for line in open(path):
    rnd, sc, tg, tpid, mpids, res = line.rstrip("\n").split("\t")
    kv = dict(f.split("=", 1) for f in res.split()[1:])
    r = {k: float(v) for k, v in kv.items()}
    r["cpu_t"] = r.get("cpu_" + tpid, -1)
    # all memcached behind the proxy together
    r["cpu_mc"] = sum(r.get("cpu_" + m, 0) for m in mpids.split(",")) if tg != "memcached" else -1
    # CPU used by everything else on the machine while measuring
    # (clock-tick granularity can make it slightly negative: shown as 0)
    r["cpu_other"] = max(0.0, r.get("cpu_machine", -1) - r["cpu_self"] - r["cpu_t"] - max(r["cpu_mc"], 0))
    rows.setdefault((sc, tg), []).append(r)

def med(rs, k):
    return statistics.median(x[k] for x in rs)

# keep the quiet rounds of each row (all of them when none is quiet);
# errors and misses are summed over every round
all_rows = {k: list(v) for k, v in rows.items()}
used = {}
for key, rs in rows.items():
    q = [x for x in rs if x["cpu_other"] <= quiet_max]
    used[key] = (len(q) if q else len(rs), len(rs))
    if q:
        rows[key] = q

print("Results (median of the rounds in which other processes used <= %g%% of a core;" % quiet_max)
print("  rounds = kept/run; CPU = % of one core used while measuring:")
print("  tgt = the target, mc = memcached behind a proxy, load = mcload, other = the rest")
print("  of the machine; ops/tgt-core = ops/s per core-second the target used)")
hdr = "%-10s %-11s %6s %9s %8s %8s %6s %6s %5s %5s %5s %5s %12s" % (
    "scenario", "target", "rounds", "ops/s", "p50 us", "p99 us", "errors", "misses",
    "tgt", "mc", "load", "other", "ops/tgt-core")
print(hdr)
print("-" * len(hdr))
for sc in scenarios:
    for tg in targets:
        rs = rows.get((sc, tg))
        if not rs:
            print("%-10s %-11s %9s" % (sc, tg, "(no result)"))
            continue
        ops = med(rs, "ops_per_sec")
        cpu = med(rs, "cpu_t")
        per = ops / (cpu / 100) if cpu > 0 else 0
        mc = "-" if tg == "memcached" else "%.0f" % med(rs, "cpu_mc")
        print("%-10s %-11s %6s %9.0f %8.1f %8.1f %6d %6d %5.0f %5s %5.0f %5.0f %12.0f" % (
            sc, tg, "%d/%d" % used[(sc, tg)], ops, med(rs, "p50_us"), med(rs, "p99_us"),
            sum(x["errors"] + x["prefill_failed"] for x in all_rows[(sc, tg)]),
            sum(x["misses"] for x in all_rows[(sc, tg)]),
            cpu, mc, med(rs, "cpu_self"), med(rs, "cpu_other"), per))
busy = sorted({(sc, tg) for (sc, tg), rs in rows.items() if med(rs, "cpu_other") > quiet_max})
if busy:
    print("WARNING: no quiet round (other processes used more than %g%% of a core) for: " % quiet_max +
          ", ".join("%s/%s" % b for b in busy) + "; those figures are disturbed")
print()
print("Ratios (ops/s; per-core = ops/s divided by the target's CPU use)")
for sc in scenarios:
    def g(tg, k="ops_per_sec"):
        rs = rows.get((sc, tg))
        return med(rs, k) if rs else None
    for s in ("strata-w1", "strata-w2"):
        so = g(s)
        if so is None:
            continue
        parts = []
        n, m = g("nutcracker"), g("memcached")
        if n:
            parts.append("/nutcracker %.2f" % (so / n))
            sc_cpu, n_cpu = g(s, "cpu_t"), g("nutcracker", "cpu_t")
            if sc_cpu > 0 and n_cpu > 0:
                parts.append("per-core /nutcracker %.2f" % ((so / sc_cpu) / (n / n_cpu)))
            parts.append("p99 /nutcracker %.2f" % (g(s, "p99_us") / g("nutcracker", "p99_us")))
        if m:
            parts.append("/memcached %.2f" % (so / m))
        print("  %-10s %-10s %s" % (sc, s, ", ".join(parts)))
    n, m = g("nutcracker"), g("memcached")
    if n and m:
        print("  %-10s %-10s /memcached %.2f" % (sc, "nutcracker", n / m))
EOF
if [ "$PIN" = split ]; then
    echo
    echo "Pinned: load generator on CPU $LOAD_CPUS, target on CPU $SUT_CPUS ($NCPU cores in all);"
    echo "strata-w2 therefore shares one core between its workers. PIN=none lets it use both,"
    echo "at the price of competing with the load generator."
fi
for tg in nutcracker strata-w1 strata-w2; do
    if grep -qiE 'error|crit|alert|emerg|panic|assert' "$tmp/$tg.log" 2>/dev/null; then
        echo "note: $tg log has error lines:"
        grep -iE 'error|crit|alert|emerg|panic|assert' "$tmp/$tg.log" | head -n 10 | sed 's/^/  /'
    fi
done
if [ "$failed" != 0 ]; then
    echo "run.sh: some runs saw errors or a process died (see above)" >&2
    exit 2
fi
