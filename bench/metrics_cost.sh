#!/usr/bin/env bash
# What the latency histograms cost per request (issue 15): interleaved
# rounds of bench/run.sh's v100 scenario on strata-w1, one binary built
# as usual and one built with -DSTRATA_NO_HISTOGRAMS (the clock reads and
# observations compiled out), then the CPU microseconds per request of
# each round from the kept raw results (process CPU over the measured
# window / requests; clock-tick resolution, 10 ms over 8 s), the medians
# and the median of the paired ratios.
#
# usage: bench/metrics_cost.sh HIST_BINARY NOHIST_BINARY [ROUNDS]
#   build the second with: make clean && make CPPFLAGS=-DSTRATA_NO_HISTOGRAMS src/strata
#   (in a copy of the tree), then rebuild the first as usual.
# Environment: DURATION [8], WAIT_QUIET [10], QUIET_MAX [40], passed to
# bench/run.sh. Every run keeps its temp dir (KEEP_TMP=1) until the
# figures are read, then removes it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 1; }
hist=$1 nohist=$2 rounds=${3:-12}
out=$(mktemp -d /tmp/strata-metrics-cost.XXXXXX)
for i in $(seq 1 "$rounds"); do
    for v in hist nohist; do
        bin=$hist; [ "$v" = nohist ] && bin=$nohist
        KEEP_TMP=1 DURATION=${DURATION:-8} WAIT_QUIET=${WAIT_QUIET:-10} QUIET_MAX=${QUIET_MAX:-40} \
            STRATA=$bin ROUNDS=1 TARGETS=strata-w1 SCENARIOS=v100 \
            "$here/run.sh" >"$out/$v-$i.txt" 2>&1
    done
done
python3 - "$out" "$rounds" <<'PY'
import glob, os, re, shutil, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])

def us_per_request(path):
    """CPU us per request of the target in one run, from its RESULT line."""
    m = re.search(r"run.sh: kept (\S+)", open(path).read())
    if not m:
        return None
    value = None
    for f in glob.glob(m.group(1) + "/*"):
        try:
            text = open(f, errors="replace").read()
        except OSError:
            continue
        for line in text.splitlines():
            if "\tRESULT " not in line:
                continue
            parts = line.split("\t")
            kv = dict(x.split("=", 1) for x in parts[6].split()[1:] if "=" in x)
            value = float(kv["cpus_" + parts[3]]) * 1e6 / int(kv["ops"])
    shutil.rmtree(m.group(1), ignore_errors=True)
    return value

runs = {v: [us_per_request("%s/%s-%d.txt" % (out, v, i)) for i in range(1, rounds + 1)]
        for v in ("hist", "nohist")}
for v, us in runs.items():
    ok = [u for u in us if u is not None]
    print("%-7s rounds %2d  median %.3f us/request  (%s)" %
          (v, len(ok), statistics.median(ok), " ".join("%.2f" % u for u in ok)))
ratios = [a / b for a, b in zip(runs["hist"], runs["nohist"]) if a and b]
print("paired hist/nohist: median %.4f, mean %.4f, min %.3f, max %.3f (%d pairs)" %
      (statistics.median(ratios), statistics.mean(ratios), min(ratios), max(ratios), len(ratios)))
print("raw output: %s" % out)
PY
