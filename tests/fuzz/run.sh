#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (apart from the autotools
# build) and runs each for a bounded time over a copy of its seed corpus.
# Exits non-zero on any crash, leak, sanitizer report, timeout or
# out-of-memory, and prints the path of the input that caused it.
#   tests/fuzz/run.sh                 15 s per harness, every harness
#   tests/fuzz/run.sh 600             10 minutes per harness
#   tests/fuzz/run.sh 60 fuzz_mc_req  one harness
#   tests/fuzz/run.sh --build DIR     only build the harnesses into DIR
# FUZZ_WORKDIR=DIR keeps the build, corpora and findings in DIR (default:
# a temporary directory, removed when every harness passed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

all_harnesses="fuzz_mc_req fuzz_mc_rsp fuzz_redis_req fuzz_redis_rsp fuzz_conf_yaml fuzz_conf_settings"

# The src/ files each harness links.
harness_sources() {
    case "$1" in
    fuzz_mc_req|fuzz_mc_rsp)
        echo "src/proto_mc_req.c src/proto_mc_rsp.c src/proto_mc_frame.c" \
             "src/proto_mc_compose.c" ;;
    fuzz_redis_req|fuzz_redis_rsp)
        echo "src/proto_redis_req.c src/proto_redis_rsp.c src/proto_redis_cmd.c" \
             "src/proto_redis_compose.c" ;;
    fuzz_conf_yaml)
        echo "src/conf_yaml.c src/hashkit/names.c" ;;
    fuzz_conf_settings)
        echo "src/conf_settings.c" ;;
    *) echo "unknown harness: $1" >&2; return 1 ;;
    esac
}

build() {   # build OUTDIR HARNESS...
    local out=$1; shift
    local cc=${CC_FUZZ:-clang} pkgs="libevent yaml-0.1 libconfig"
    command -v "$cc" >/dev/null || {
        echo "fuzz: $cc not found (apt-get install clang)" >&2; return 1; }
    mkdir -p "$out"
    local flags="-g -O1 -std=gnu11 -Wall -Wextra -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
        -I $top/include -I $top/src -D_GNU_SOURCE"
    local h srcs
    for h in "$@"; do
        srcs=$(harness_sources "$h")
        # shellcheck disable=SC2046,SC2086
        (cd "$top" && "$cc" $flags $(pkg-config --cflags $pkgs) \
            "tests/fuzz/$h.c" $srcs -o "$out/$h" $(pkg-config --libs $pkgs))
    done
}

if [ "${1:-}" = "--build" ]; then
    [ $# -ge 2 ] || { echo "usage: $0 --build DIR [HARNESS...]" >&2; exit 2; }
    out=$2; shift 2
    # shellcheck disable=SC2086
    build "$out" ${*:-$all_harnesses}
    exit 0
fi

seconds=${1:-15}
shift || true
harnesses=${*:-$all_harnesses}
work=${FUZZ_WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/strata-fuzz.XXXXXX")}
mkdir -p "$work"
echo "fuzz: building into $work"
# shellcheck disable=SC2086
build "$work/bin" $harnesses

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$here/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
status=0
for h in $harnesses; do
    corpus="$work/corpus/$h"
    findings="$work/findings/$h"
    mkdir -p "$corpus" "$findings"
    cp -r "$here/corpus/$h/." "$corpus/" 2>/dev/null || true
    dict=()
    [ -f "$here/dict/$h.dict" ] && dict=(-dict="$here/dict/$h.dict")
    log="$work/$h.log"
    echo "fuzz: $h for ${seconds}s"
    if "$work/bin/$h" "${dict[@]}" -max_total_time="$seconds" -timeout=5 \
            -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
            -artifact_prefix="$findings/" "$corpus" >"$log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$log" || true
    else
        status=1
        tail -60 "$log"
        echo "fuzz: $h FAILED; log: $log"
        for f in "$findings"/*; do
            [ -e "$f" ] && echo "fuzz: reproduce with: $work/bin/$h $f"
        done
    fi
done
if [ $status -eq 0 ] && [ -z "${FUZZ_WORKDIR:-}" ]; then
    rm -rf "$work"
fi
exit $status
