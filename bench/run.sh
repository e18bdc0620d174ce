#!/usr/bin/env bash
# Strata benchmark: the same load against
#   memcached        directly
#   nutcracker       (twemproxy 0.5.0, single-threaded) in front of it
#   strata-w1        Strata --workers 1
#   strata-w2        Strata --workers 2
# side by side in one run, printing ops/s, p50/p99 latency, the CPU each
# process used (% of a core, and CPU microseconds per request for the
# target and for the memcached behind it), and the ratios strata/nutcracker.
# With --syscalls it counts instead the system calls per request of the
# proxies (strace -c, or perf stat with SYSCALL_TOOL=perf, attached only
# for a fixed number of requests).
#
# usage: bench/run.sh [--four] [--syscalls] [--help]
#   --four      4 memcached behind the proxies instead of 1 (the "memcached"
#               row still talks to the first one only)
#   --syscalls  syscall mode: for each of SYSCALL_SCENARIOS and
#               SYSCALL_TARGETS: prefill, 1 s warm-up, then attach
#               `strace -c -f -p PROXY -o FILE`, run exactly SYSCALL_REQUESTS
#               requests (SYSCALL_THREADS x SYSCALL_CONNS connections),
#               detach (SIGINT) and print syscalls per request, in all and
#               by name, side by side, with the ratio to nutcracker.
#               One round; the time bound is SYSCALL_MAX_SECONDS. Rows
#               "reads"/"writes" add up read, readv, recv* / write, writev,
#               send*.
#               SYSCALL_TOOL=perf counts with perf stat instead of strace:
#               `perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_X,..
#               -p PROXY -o FILE` (all threads of the proxy, stopped with
#               SIGINT). "total" is raw_syscalls:sys_enter (every syscall);
#               the named rows are only the tracepoints listed in
#               PERF_SYSCALLS, the rest is in "(not listed)". perf does not
#               stop the proxy at each syscall as strace does, so the
#               counts are closer to an unobserved run.
#
# Scenarios (SCENARIOS, default "v100 v4k v4k-p16 mget10 v10k v200k v1m"):
# all but small/pipelined send 1 set : 10 gets (mcload --set-every
# SET_EVERY: every 11th request of a thread is a set), prefill every key of
# the key space first (so gets hit), and use SC_THREADS x SC_CONNS
# connections at pipeline 1 unless noted:
#   v100      100 B values, 100000 keys
#   v4k       4096 B values, 20000 keys
#   v4k-p16   4096 B values, 20000 keys, pipeline SC_PIPELINE
#   mget10    'get k1 ... k10' (MGET distinct keys), 32 B values, 100000 keys
#             (a request is one get of 10 keys, or one set)
#   v10k      10240 B values, 5000 keys
#   v200k     204800 B values, 500 keys, SC_THREADS x V200K_CONNS connections
#   v1m       1048576 B values, 200 keys, SC_THREADS x V1M_CONNS connections
#   small     the older scenario: THREADS x CONNS, pipeline 1, GET_PCT % gets
#             chosen at random, VSIZE B values, KEYS keys
#   pipelined the older scenario: THREADS x PIPE_CONNS, pipeline PIPELINE,
#             otherwise as small
#
# Environment (defaults in brackets):
#   DURATION [5]        measured seconds per run
#   WARMUP [1]          unmeasured seconds before each measurement
#   ROUNDS [1]          rounds over all scenarios and targets; the table
#                       shows the median of the rounds
#   SCENARIOS ["v100 v4k v4k-p16 mget10 v10k v200k v1m"]
#   TARGETS ["memcached nutcracker strata-w1 strata-w2"]
#   SC_THREADS [4]  SC_CONNS [50]  SC_PIPELINE [16]  SET_EVERY [11]  MGET [10]
#   V200K_CONNS [4]  V1M_CONNS [2]   connections per thread for v200k, v1m
#   THREADS [2] CONNS [50] PIPE_CONNS [10] PIPELINE [16] VSIZE [100]
#   KEYS [100000] GET_PCT [90]       the older small/pipelined scenarios
#   SYSCALL_SCENARIOS ["v4k v100"]  SYSCALL_TARGETS ["nutcracker strata-w1"]
#   SYSCALL_REQUESTS [100000]  SYSCALL_THREADS [2]  SYSCALL_CONNS [25]
#   SYSCALL_MAX_SECONDS [300]        time bound of one fixed-count run
#   SYSCALL_TOOL [strace]            strace or perf: what counts the syscalls
#   PERF_SYSCALLS ["read readv recvfrom write writev sendmsg epoll_wait
#     epoll_pwait epoll_ctl ioctl getpeername accept4"]
#                       syscalls counted by name with SYSCALL_TOOL=perf
#                       (tracepoints syscalls:sys_enter_NAME)
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
#   MC_MEM [2048]       memcached -m (MB); memcached also gets -I 2m
#   STRATA [src/strata]  NUTCRACKER [nutcracker]  MEMCACHED [memcached]
#   STRACE [strace]     for --syscalls
#   PERF [perf]         for --syscalls with SYSCALL_TOOL=perf
#   KEEP_TMP [0]        1: keep the temp dir (logs, pool file, raw output)
#
# Strata gets a settings file (-C) with max_value_size = 2097152 so that
# v1m's 1 MB values pass (nutcracker has no value size limit), and then
# the lines of STRATA_SETTINGS [""] (e.g. 'fence_replies = "batch";').
# The table above each run's results names them.
# Everything listens on 127.0.0.1 only, on ports the kernel hands out.
# Every process this script starts is stopped by its PID on exit, and
# every load is bounded in count and time (mcload's own deadlines, plus
# `timeout` around it).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

FOUR=0
SYSCALLS=0
for a in "$@"; do
    case "$a" in
    --four) FOUR=1 ;;
    --syscalls) SYSCALLS=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$a' (try --help)" >&2; exit 1 ;;
    esac
done

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-1}
KEYS=${KEYS:-100000}
SC_THREADS=${SC_THREADS:-4}
SC_CONNS=${SC_CONNS:-50}
SC_PIPELINE=${SC_PIPELINE:-16}
SET_EVERY=${SET_EVERY:-11}
MGET=${MGET:-10}
V200K_CONNS=${V200K_CONNS:-4}
V1M_CONNS=${V1M_CONNS:-2}
SYSCALL_SCENARIOS=${SYSCALL_SCENARIOS:-"v4k v100"}
SYSCALL_TARGETS=${SYSCALL_TARGETS:-"nutcracker strata-w1"}
SYSCALL_REQUESTS=${SYSCALL_REQUESTS:-100000}
SYSCALL_THREADS=${SYSCALL_THREADS:-2}
SYSCALL_CONNS=${SYSCALL_CONNS:-25}
SYSCALL_MAX_SECONDS=${SYSCALL_MAX_SECONDS:-300}
MC_MEM=${MC_MEM:-2048}
STRACE=${STRACE:-strace}
PERF=${PERF:-perf}
SYSCALL_TOOL=${SYSCALL_TOOL:-strace}
PERF_SYSCALLS=${PERF_SYSCALLS:-"read readv recvfrom write writev sendmsg epoll_wait epoll_pwait epoll_ctl ioctl getpeername accept4"}
VSIZE=${VSIZE:-100}
GET_PCT=${GET_PCT:-90}
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}
PIPE_CONNS=${PIPE_CONNS:-10}
PIPELINE=${PIPELINE:-16}
SCENARIOS=${SCENARIOS:-"v100 v4k v4k-p16 mget10 v10k v200k v1m"}
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
if [ "$SYSCALLS" = 1 ]; then
    case "$SYSCALL_TOOL" in
    strace)
        command -v "$STRACE" >/dev/null || { echo "run.sh: $STRACE not found (needed for --syscalls)" >&2; exit 1; }
        ;;
    perf)
        command -v "$PERF" >/dev/null || {
            echo "run.sh: $PERF not found (needed for --syscalls with SYSCALL_TOOL=perf; Debian: linux-perf)" >&2; exit 1; }
        PERF_EVENTS=raw_syscalls:sys_enter
        for n in $PERF_SYSCALLS; do PERF_EVENTS+=",syscalls:sys_enter_$n"; done
        PERF_NEVENTS=$(( $(echo "$PERF_EVENTS" | tr -cd , | wc -c) + 1 ))
        # probe: every tracepoint must open and count (permissions, kernel config)
        probe=$(mktemp /tmp/strata-bench-perfprobe.XXXXXX)
        if ! timeout -k 2 20 "$PERF" stat -x, -e "$PERF_EVENTS" -o "$probe" -- true >"$probe.err" 2>&1 \
           || grep -q '<not supported>' "$probe" \
           || ! grep -q ',raw_syscalls:sys_enter,' "$probe"; then
            echo "run.sh: SYSCALL_TOOL=perf: '$PERF stat' cannot count the syscall tracepoints" >&2
            echo "  ($PERF_EVENTS)" >&2
            echo "  needs tracefs (/sys/kernel/tracing), CONFIG_FTRACE_SYSCALLS and, usually, root" >&2
            echo "  (or CAP_PERFMON with read access to tracefs); perf said:" >&2
            cat "$probe.err" "$probe" 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 15 | sed 's/^/    /' >&2
            rm -f "$probe" "$probe.err"
            exit 1
        fi
        rm -f "$probe" "$probe.err"
        ;;
    *) echo "run.sh: SYSCALL_TOOL must be strace or perf" >&2; exit 1 ;;
    esac
    TARGETS=$SYSCALL_TARGETS
    SCENARIOS=$SYSCALL_SCENARIOS
fi

NCPU=$(nproc)
if [ "$PIN" = split ] && { ! command -v taskset >/dev/null || [ "$NCPU" -lt 2 ]; }; then
    echo "run.sh: PIN=split needs taskset and 2 cores; using PIN=none" >&2
    PIN=none
fi
ALL_CPUS="0-$((NCPU - 1))"

tmp=$(mktemp -d /tmp/strata-bench.XXXXXX)
pids=()
load_pid=
counter_pid=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p i
    if [ -n "$counter_pid" ]; then   # stop strace/perf first (SIGINT), bounded
        kill -INT "$counter_pid" 2>/dev/null || true
        for i in $(seq 1 50); do
            kill -0 "$counter_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$counter_pid" 2>/dev/null || true
        wait "$counter_pid" 2>/dev/null || true
    fi
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
    "$MEMCACHED" "${mc_user[@]}" -l 127.0.0.1 -p "$p" -U 0 -m "$MC_MEM" -I 2m -c 4096 -t "$MC_THREADS" \
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
# Strata's settings: values up to 2 MB (the default max_value_size is
# 1048576, exactly v1m's value size; leave room)
echo "max_value_size = 2097152;" >"$tmp/strata.cfg"
STRATA_SETTINGS=${STRATA_SETTINGS:-}
if [ -n "$STRATA_SETTINGS" ]; then
    printf '%s\n' "$STRATA_SETTINGS" >>"$tmp/strata.cfg"
    echo "strata settings: $(tr '\n' ' ' <"$tmp/strata.cfg")"
fi

# only the proxies that are measured are started
wanted() { case " $TARGETS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
nc_pid= s1_pid= s2_pid=
if wanted nutcracker; then
    "$NUTCRACKER" -c "$tmp/nutcracker.yml" -s "$nc_stats" -a 127.0.0.1 \
        -o "$tmp/nutcracker.log" -p "$tmp/nutcracker.pid" &
    nc_pid=$!; pids+=($nc_pid)
fi
if wanted strata-w1; then
    "$STRATA" -C "$tmp/strata.cfg" -c "$tmp/strata-w1.yml" -s "$s1_stats" -a 127.0.0.1 \
        -o "$tmp/strata-w1.log" -p "$tmp/strata-w1.pid" --workers 1 &
    s1_pid=$!; pids+=($s1_pid)
fi
if wanted strata-w2; then
    "$STRATA" -C "$tmp/strata.cfg" -c "$tmp/strata-w2.yml" -s "$s2_stats" -a 127.0.0.1 \
        -o "$tmp/strata-w2.log" -p "$tmp/strata-w2.pid" --workers 2 &
    s2_pid=$!; pids+=($s2_pid)
fi
[ -z "$nc_pid" ] || wait_port "$nc_pid" "$nc_port" nutcracker
[ -z "$s1_pid" ] || wait_port "$s1_pid" "$s1_port" strata-w1
[ -z "$s2_pid" ] || wait_port "$s2_pid" "$s2_port" strata-w2

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
echo "backends: $nmc memcached (-t $MC_THREADS -m $MC_MEM -I 2m) on 127.0.0.1:${mc_ports[*]}"
if [ "$SYSCALLS" = 1 ]; then
    if [ "$SYSCALL_TOOL" = perf ]; then
        ctool="perf stat (syscall tracepoints, all threads)"
    else
        ctool="strace -c -f"
    fi
    echo "mode: --syscalls: $SYSCALL_REQUESTS requests per run, mcload $SYSCALL_THREADS threads x $SYSCALL_CONNS connections, $ctool on the proxy"
else
    echo "load: ${WARMUP}s warm-up + ${DURATION}s measured per run, $ROUNDS round(s); scenarios: $SCENARIOS"
fi
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

# ---- scenarios -------------------------------------------------------------
# scenario NAME: sets sc_args (mcload options) and sc_desc
scenario() {
    local t=$SC_THREADS c=$SC_CONNS d=1 v k g=1 mix=(-e "$SET_EVERY")
    case "$1" in
    v100) v=100; k=100000 ;;
    v4k) v=4096; k=20000 ;;
    v4k-p16) v=4096; k=20000; d=$SC_PIPELINE ;;
    mget10) v=32; k=100000; g=$MGET ;;
    v10k) v=10240; k=5000 ;;
    v200k) v=204800; k=500; c=$V200K_CONNS ;;
    v1m) v=1048576; k=200; c=$V1M_CONNS ;;
    small) t=$THREADS; c=$CONNS; v=$VSIZE; k=$KEYS; mix=(-r "$GET_PCT") ;;
    pipelined) t=$THREADS; c=$PIPE_CONNS; d=$PIPELINE; v=$VSIZE; k=$KEYS; mix=(-r "$GET_PCT") ;;
    *) echo "run.sh: unknown scenario '$1' (v100 v4k v4k-p16 mget10 v10k v200k v1m small pipelined)" >&2
       return 1 ;;
    esac
    if [ "$SYSCALLS" = 1 ]; then
        t=$SYSCALL_THREADS; c=$SYSCALL_CONNS
    fi
    sc_args=(-t "$t" -c "$c" -d "$d" "${mix[@]}" -g "$g" -k "$k" -v "$v")
    if [ "${mix[0]}" = -e ]; then
        sc_desc="$t x $c conns, pipeline $d, 1 set every $SET_EVERY, $g-key gets, $v B, $k keys"
    else
        sc_desc="$t x $c conns, pipeline $d, $GET_PCT% gets, $v B, $k keys"
    fi
}
for sc in $SCENARIOS; do scenario "$sc" || exit 1; done

# ---- runs ------------------------------------------------------------------
results=$tmp/results.tsv
: >"$results"
failed=0
mc_list=$(IFS=,; echo "${mc_pids[*]}")
[ "$SYSCALLS" = 1 ] && ROUNDS=1

# all tasks (threads) of PID traced?
all_traced() {
    local st n=0
    for st in /proc/"$1"/task/*/status; do
        [ -r "$st" ] || continue
        n=$((n + 1))
        [ "$(awk '/^TracerPid:/ { print $2 }' "$st" 2>/dev/null)" != 0 ] || return 1
    done
    [ "$n" -gt 0 ]
}

# perf (pid $1) has a counter open for every event on every thread of PID $2?
perf_attached() {
    local nthr nfd
    nthr=$(ls /proc/"$2"/task 2>/dev/null | wc -l)
    nfd=$(ls -l /proc/"$1"/fd 2>/dev/null | grep -c 'perf_event' || true)
    [ "$nthr" -gt 0 ] && [ "$nfd" -ge $((PERF_NEVENTS * nthr)) ]
}

for round in $(seq 1 "$ROUNDS"); do
for sc in $SCENARIOS; do
    scenario "$sc"
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
        if [ "$SYSCALLS" = 1 ]; then
            dur=$SYSCALL_MAX_SECONDS
            args=(-p "$(target_port "$tg")" "${sc_args[@]}" -N "$SYSCALL_REQUESTS" -S
                  -T "$dur" -w 1 -P 60 -o 2000 "${watch[@]}")
            bound=$((dur + 1 + 60 + 120 + 30))
        else
            dur=$DURATION
            args=(-p "$(target_port "$tg")" "${sc_args[@]}" -T "$DURATION" -w "$WARMUP"
                  -P 30 -o 2000 "${watch[@]}")
            bound=$(python3 -c "print(int($DURATION + $WARMUP + 30 + 20))")
        fi
        echo "-- round $round, $sc ($sc_desc), $tg: mcload ${args[*]}"
        wait_quiet
        rc=0
        # hard bound on top of mcload's own deadlines
        # (in the background, so that a signal to this script is handled at once)
        timeout -k 5 "$bound" "${load_cmd[@]}" "${args[@]}" >"$out" 2>"$out.err" &
        load_pid=$!
        if [ "$SYSCALLS" = 1 ]; then
            # mcload prints READY after prefill and warm-up (nothing in
            # flight) and waits for SIGUSR1; attach strace/perf in between
            st=$tmp/$SYSCALL_TOOL-$sc-$tg
            mpid=
            for i in $(seq 1 1200); do           # up to 120 s
                if grep -q '^READY' "$out" 2>/dev/null; then
                    mpid=$(awk '/^READY/ { print $2; exit }' "$out")
                    break
                fi
                kill -0 "$load_pid" 2>/dev/null || break
                sleep 0.1
            done
            if [ -n "$mpid" ] && [ "$SYSCALL_TOOL" = perf ]; then
                # the -o file appears before the counters are open: wait
                # for one perf_event fd per event and thread instead
                "$PERF" stat -x, -e "$PERF_EVENTS" -p "$tpid" -o "$st" 2>"$st.err" &
                counter_pid=$!
                for i in $(seq 1 100); do        # up to 10 s
                    perf_attached "$counter_pid" "$tpid" && break
                    kill -0 "$counter_pid" 2>/dev/null || break
                    sleep 0.1
                done
                if ! perf_attached "$counter_pid" "$tpid"; then
                    echo "   !! perf stat did not attach to $tg (pid $tpid):"
                    sed 's/^/     /' "$st.err"
                    failed=1
                else
                    echo "   perf stat attached to $tg (pid $tpid, $(ls /proc/"$tpid"/task | wc -l) threads)"
                fi
            elif [ -n "$mpid" ]; then
                "$STRACE" -c -f -p "$tpid" -o "$st" 2>"$st.err" &
                counter_pid=$!
                for i in $(seq 1 100); do        # up to 10 s
                    all_traced "$tpid" && break
                    kill -0 "$counter_pid" 2>/dev/null || break
                    sleep 0.1
                done
                if ! all_traced "$tpid"; then
                    echo "   !! strace did not attach to $tg (pid $tpid):"
                    sed 's/^/     /' "$st.err"
                    failed=1
                fi
            fi
            if [ -n "$mpid" ]; then
                sleep 0.2
                kill -USR1 "$mpid" 2>/dev/null || true
            else
                echo "   !! mcload did not get ready (no READY line)"
                failed=1
            fi
            wait "$load_pid" || rc=$?
            load_pid=
            if [ -n "$counter_pid" ]; then        # detach: SIGINT, then the counts are written
                kill -INT "$counter_pid" 2>/dev/null || true
                for i in $(seq 1 100); do
                    kill -0 "$counter_pid" 2>/dev/null || break
                    sleep 0.1
                done
                if kill -0 "$counter_pid" 2>/dev/null; then
                    echo "   !! $SYSCALL_TOOL did not exit within 10 s of SIGINT; killed (its counts may be missing)"
                    failed=1
                fi
                kill -KILL "$counter_pid" 2>/dev/null || true
                wait "$counter_pid" 2>/dev/null || true
                counter_pid=
            fi
        else
            wait "$load_pid" || rc=$?
            load_pid=
        fi
        sed 's/^/   /' "$out" | grep -v -e '^   RESULT' -e '^   READY' || true
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
            stf=-
            [ "$SYSCALLS" = 1 ] && stf=$tmp/$SYSCALL_TOOL-$sc-$tg
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$sc" "$tg" "$tpid" "$mc_list" "$stf" "$res" >>"$results"
        fi
    done
done
done

echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)"

# ---- syscall table -------------------------------------------------------------
if [ "$SYSCALLS" = 1 ]; then
python3 - "$results" "$TARGETS" "$SCENARIOS" "$SYSCALL_TOOL" <<'PYEOF' || failed=1
import sys
path, targets, scenarios, tool = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
notes = []

def parse_strace(fn):
    """strace -c table: '% time seconds usecs/call calls [errors] syscall'.
    Returns ({syscall: calls}, total) or None."""
    try:
        lines = open(fn).read().splitlines()
    except OSError:
        return None
    calls, total, seen_hdr = {}, None, False
    for ln in lines:
        f = ln.split()
        if not f:
            continue
        if f[0] == "%" and "syscall" in f:
            seen_hdr = True
            continue
        if not seen_hdr or set(ln.strip()) <= set("- "):
            continue
        name = f[-1]
        # the calls column is the 4th; errors (5th) may be empty
        try:
            n = int(f[3])
        except (IndexError, ValueError):
            continue
        if name == "total":
            total = n
        else:
            calls[name] = calls.get(name, 0) + n
    if not seen_hdr:
        return None
    if total is None:
        total = sum(calls.values())
    return calls, total

def parse_perf(fn, label):
    """perf stat -x, file: 'count,unit,event,run time,run %,...' per line.
    raw_syscalls:sys_enter is the total; syscalls:sys_enter_NAME the calls
    of NAME. '<not counted>' (the counter never ran: no thread of the
    proxy ran) counts 0; '<not supported>' and a missing total fail.
    Returns ({syscall: calls}, total) or None."""
    try:
        lines = open(fn).read().splitlines()
    except OSError:
        return None
    calls, total = {}, None
    for ln in lines:
        if not ln.strip() or ln.startswith("#"):
            continue
        f = ln.split(",")
        if len(f) < 3:
            continue
        cnt, ev = f[0].strip(), f[2].strip()
        if cnt == "<not supported>":
            notes.append("%s: %s not supported" % (label, ev))
            return None
        if cnt == "<not counted>":
            notes.append("%s: %s <not counted> (taken as 0)" % (label, ev))
            n = 0
        else:
            try:
                n = int(float(cnt))
            except ValueError:
                continue
        if len(f) > 4 and f[4].strip():
            try:
                if float(f[4]) < 99.99:
                    notes.append("%s: %s counted only %s%% of the time" % (label, ev, f[4]))
            except ValueError:
                pass
        if ev == "raw_syscalls:sys_enter":
            total = n
        elif ev.startswith("syscalls:sys_enter_"):
            calls[ev[len("syscalls:sys_enter_"):]] = n
    if total is None:
        return None
    # whatever the named tracepoints do not cover
    calls["(not listed)"] = max(0, total - sum(calls.values()))
    return calls, total

runs = {}
for line in open(path):
    rnd, sc, tg, tpid, mpids, stf, res = line.rstrip("\n").split("\t")
    kv = dict(f.split("=", 1) for f in res.split()[1:])
    if tool == "perf":
        runs[(sc, tg)] = (kv, parse_perf(stf, "%s/%s" % (sc, tg)))
    else:
        runs[(sc, tg)] = (kv, parse_strace(stf))

if tool == "perf":
    print("System calls per request of the proxy, counted by perf stat (tracepoint")
    print("raw_syscalls:sys_enter = total, syscalls:sys_enter_NAME by name; all threads")
    print("of the proxy), attached only while the fixed number of requests ran;")
    print("a request = one get or one set)")
else:
    print("System calls per request of the proxy, counted by strace -c -f (attached only")
    print("while the fixed number of requests ran; a request = one get or one set)")
ok = True
for sc in scenarios:
    cols = [tg for tg in targets if (sc, tg) in runs]
    if not cols:
        print("\n%s: no result" % sc)
        ok = False
        continue
    per = {}
    for tg in cols:
        kv, st = runs[(sc, tg)]
        ops = int(kv["ops"])
        if st is None or ops <= 0:
            print("%s/%s: no %s counts or no requests completed" % (sc, tg, tool))
            ok = False
            continue
        calls, total = st
        per[tg] = ({k: v / ops for k, v in calls.items()}, total / ops, ops, int(kv["errors"]))
    cols = [tg for tg in cols if tg in per]
    if not cols:
        continue
    ref = "nutcracker" if "nutcracker" in per else None
    names = sorted({n for tg in cols for n in per[tg][0]},
                   key=lambda n: -max(per[tg][0].get(n, 0) for tg in cols))
    print()
    print("%s: requests completed %s; errors %s" % (
        sc, ", ".join("%s %d" % (tg, per[tg][2]) for tg in cols),
        ", ".join("%s %d" % (tg, per[tg][3]) for tg in cols)))
    hdr = "  %-16s" % "syscall" + "".join("%12s" % tg for tg in cols)
    others = [tg for tg in cols if tg != ref] if ref else []
    hdr += "".join("%16s" % ("%s/nc" % tg.replace("strata-", "")) for tg in others)
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    def row(label, vals):
        s = "  %-16s" % label + "".join("%12.3f" % vals[tg] for tg in cols)
        for tg in others:
            r, n = vals[tg], vals[ref]
            s += "%16s" % ("%.2f" % (r / n) if n > 0 else ("-" if r == 0 else "(nc: 0)"))
        print(s)
    row("total", {tg: per[tg][1] for tg in cols})
    groups = (("reads", ("read", "readv", "recvfrom", "recvmsg", "recvmmsg", "pread64", "preadv")),
              ("writes", ("write", "writev", "sendto", "sendmsg", "sendmmsg", "pwrite64", "pwritev")))
    for label, members in groups:
        row(label, {tg: sum(per[tg][0].get(m, 0.0) for m in members) for tg in cols})
    for n in names:
        vals = {tg: per[tg][0].get(n, 0.0) for tg in cols}
        if max(vals.values()) < 0.0005:
            continue
        row(n, vals)
for n in notes:
    print("note: " + n)
sys.exit(0 if ok else 1)
PYEOF
else
# ---- table -------------------------------------------------------------------
python3 - "$results" "$PIN" "$TARGETS" "$SCENARIOS" "$QUIET_MAX" <<'EOF'
import sys, statistics
path, pin, targets, scenarios = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
quiet_max = float(sys.argv[5])
rows = {}
for line in open(path):
    rnd, sc, tg, tpid, mpids, stf, res = line.rstrip("\n").split("\t")
    kv = dict(f.split("=", 1) for f in res.split()[1:])
    r = {k: float(v) for k, v in kv.items()}
    r["cpu_t"] = r.get("cpu_" + tpid, -1)
    # all memcached behind the proxy together
    r["cpu_mc"] = sum(r.get("cpu_" + m, 0) for m in mpids.split(",")) if tg != "memcached" else -1
    # CPU microseconds per request: process CPU time over the measured
    # window (/proc/PID/stat) divided by the requests completed in it
    ops = r["ops"]
    r["us_t"] = r.get("cpus_" + tpid, -1) * 1e6 / ops if ops > 0 else -1
    if tg == "memcached":
        r["us_mc"] = r["us_t"]
    else:
        r["us_mc"] = sum(r.get("cpus_" + m, 0) for m in mpids.split(",")) * 1e6 / ops if ops > 0 else -1
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
print("  rounds = kept/run; us/op = CPU microseconds per request (process CPU time over")
print("  the measured window / requests completed): tgt = the target, mc = the memcached")
print("  behind it (for the memcached row: itself); CPU % = % of one core while measuring:")
print("  tgt, mc, load = mcload, other = the rest of the machine)")
hdr = "%-10s %-11s %6s %9s %8s %8s %6s %6s %7s %7s %5s %5s %5s %5s" % (
    "scenario", "target", "rounds", "ops/s", "p50 us", "p99 us", "errors", "misses",
    "tgt/op", "mc/op", "tgt%", "mc%", "load%", "oth%")
print(hdr)
print("-" * len(hdr))
for sc in scenarios:
    for tg in targets:
        rs = rows.get((sc, tg))
        if not rs:
            print("%-10s %-11s %9s" % (sc, tg, "(no result)"))
            continue
        mc = "-" if tg == "memcached" else "%.0f" % med(rs, "cpu_mc")
        print("%-10s %-11s %6s %9.0f %8.1f %8.1f %6d %6d %7.1f %7.1f %5.0f %5s %5.0f %5.0f" % (
            sc, tg, "%d/%d" % used[(sc, tg)], med(rs, "ops_per_sec"), med(rs, "p50_us"),
            med(rs, "p99_us"),
            sum(x["errors"] + x["prefill_failed"] for x in all_rows[(sc, tg)]),
            sum(x["misses"] for x in all_rows[(sc, tg)]),
            med(rs, "us_t"), med(rs, "us_mc"), med(rs, "cpu_t"), mc,
            med(rs, "cpu_self"), med(rs, "cpu_other")))
busy = sorted({(sc, tg) for (sc, tg), rs in rows.items() if med(rs, "cpu_other") > quiet_max})
if busy:
    print("WARNING: no quiet round (other processes used more than %g%% of a core) for: " % quiet_max +
          ", ".join("%s/%s" % b for b in busy) + "; those figures are disturbed")
print()
print("Ratios to nutcracker (medians): ops/s; proxy CPU us/op; memcached CPU us/op; p99")
for sc in scenarios:
    def g(tg, k="ops_per_sec"):
        rs = rows.get((sc, tg))
        return med(rs, k) if rs else None
    n = g("nutcracker")
    for s in ("strata-w1", "strata-w2"):
        so = g(s)
        if so is None or not n:
            continue
        def ratio(k):
            a, b = g(s, k), g("nutcracker", k)
            return "%.2f" % (a / b) if a is not None and b and b > 0 and a >= 0 else "-"
        print("  %-10s %-10s ops/s %s, CPU/op %s, mc CPU/op %s, p99 %s" % (
            sc, s + "/nc", ratio("ops_per_sec"), ratio("us_t"), ratio("us_mc"), ratio("p99_us")))
    m = g("memcached")
    if n and m:
        print("  %-10s %-10s ops/s %.2f" % (sc, "nc/mc", n / m))
EOF
fi
if [ "$PIN" = split ] && [ "$SYSCALLS" = 0 ]; then
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
