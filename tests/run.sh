#!/usr/bin/env bash
# Builds Strata if needed and runs every test: the cmocka unit tests
# (make check) and the integration suite, which drives src/strata against
# real memcached servers and Debian's nutcracker on 127.0.0.1. Under
# --sanitizers it also runs the libFuzzer harnesses (tests/fuzz/run.sh,
# built with clang) for STRATA_FUZZ_SECONDS each (default 15).
#   bash tests/run.sh               normal build
#   bash tests/run.sh --sanitizers  rebuild with ASan+UBSan, run it all
set -euo pipefail
cd "$(dirname "$0")/.."

flags=""
export STRATA_SANITIZERS=0
if [ "${1:-}" = "--sanitizers" ]; then
    flags="--enable-sanitizers"
    STRATA_SANITIZERS=1     # the integration tests scale their time bounds
fi
[ -x configure ] || ./autogen.sh
# Reconfigure when the wanted build differs from the configured one.
want=""
[ -n "$flags" ] && want="'$flags'"
have=$(./config.status --config 2>/dev/null || echo none)
if [ ! -f Makefile ] || [ "$have" != "$want" ]; then
    ./configure $flags
    make clean >/dev/null
fi
jobs=$(nproc 2>/dev/null || echo 2)
make -j"$jobs"

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=86"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
status=0
make -j"$jobs" check || { cat tests/unit/*.log 2>/dev/null | tail -50; status=1; }
grep -h -E '^\[  (PASSED|FAILED)' tests/unit/test_*.log 2>/dev/null || true

# The tests take their ports from the kernel, so they run in parallel
# (python3-pytest-xdist), one process per core.
parallel=""
/usr/bin/python3 -c "import xdist" 2>/dev/null && parallel="-n $jobs"
STRATA_BIN="$PWD/src/strata" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    $parallel tests/integration || status=1

if [ "$STRATA_SANITIZERS" = 1 ]; then
    bash tests/fuzz/run.sh "${STRATA_FUZZ_SECONDS:-15}" || status=1
fi
exit $status
