#!/usr/bin/env bash
# conf/strata.service.in passes `systemd-analyze verify`, with ExecStart
# pointing at this build's binary (verify checks that it exists and is
# executable). Run by `make check`; exit 77 (skipped, with the reason in
# the log) where systemd-analyze is not installed.
set -euo pipefail
srcdir=${srcdir:-.}
bin="$PWD/src/strata"
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "SKIP: systemd-analyze not installed (Debian package systemd)"
    exit 77
fi
[ -x "$bin" ] || { echo "FAIL: $bin not built"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed -e "s|@sbindir@|$PWD/src|g" -e "s|@sysconfdir@|$dir/etc|g" \
    "$srcdir/conf/strata.service.in" > "$dir/strata.service"
# --man=no: the man page is not installed yet (verify would run man(1));
# --recursive-errors=no: judge this unit, not the host's targets.
out=$(systemd-analyze verify --man=no --recursive-errors=no "$dir/strata.service" 2>&1) || {
    echo "FAIL: systemd-analyze verify:"; echo "$out"; exit 1; }
# verify exits 0 on some warnings; any line naming our unit is a finding
if printf '%s\n' "$out" | grep -F "strata.service" >/dev/null; then
    echo "FAIL: systemd-analyze verify warns:"; echo "$out"; exit 1
fi
echo "PASS: systemd-analyze verify: $dir/strata.service"
[ -z "$out" ] || printf 'other output (not about the unit):\n%s\n' "$out"
