#!/usr/bin/env bash
# The Debian package, end to end: build it from the release tarball
# (make dist, then dpkg-buildpackage -us -uc -b in a scratch directory),
# check what it holds, install it, run the service (under systemd when
# systemd runs this machine; else the unit's ExecStart as its User=, with
# a NOTIFY_SOCKET of our own: tests/packaging/run_as_unit.py), reload it,
# rotate its log, then remove and purge it. Installing needs root; a
# strata package already installed is left alone (the script stops).
#   bash tests/package.sh            build and test
#   bash tests/package.sh --build    build and inspect only (no root needed)
# Leaves the .deb in build-deb/ (STRATA_DEB_DIR). docs/operations.md,
# "Release tarball and package".
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
out=${STRATA_DEB_DIR:-$top/build-deb}
build_only=0
[ "${1:-}" = "--build" ] && build_only=1

say() { printf 'package: %s\n' "$*"; }
fail() { printf 'package: FAIL: %s\n' "$*" >&2; exit 1; }

# ---- build from the release tarball ----
[ -x configure ] || ./autogen.sh
[ -f Makefile ] || ./configure
make dist >/dev/null
version=$(sed -n 's/^PACKAGE_VERSION = //p' Makefile)
rm -rf "$out" && mkdir -p "$out"
tar xzf "strata-$version.tar.gz" -C "$out"
rm -f "strata-$version.tar.gz"
say "dpkg-buildpackage -us -uc -b in $out/strata-$version"
(cd "$out/strata-$version" &&
 DEB_BUILD_OPTIONS="parallel=$(nproc 2>/dev/null || echo 2) ${DEB_BUILD_OPTIONS:-}" \
     dpkg-buildpackage -us -uc -b >"$out/build.log" 2>&1) ||
    { tail -40 "$out/build.log"; fail "dpkg-buildpackage (log: $out/build.log)"; }
deb=$(ls "$out"/strata_"$version"*_*.deb)
say "built $deb"

# ---- what it holds ----
contents=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|')
for f in /usr/sbin/strata /lib/systemd/system/strata.service /etc/strata/pools.yml \
         /etc/strata/strata.cfg /etc/logrotate.d/strata /usr/lib/sysusers.d/strata.conf \
         /usr/share/man/man8/strata.8.gz /usr/share/doc/strata/operations.md.gz; do
    printf '%s\n' "$contents" | grep -qx "$f" || fail "$deb lacks $f"
done
conffiles=$(dpkg-deb -I "$deb" conffiles)
for f in /etc/strata/pools.yml /etc/strata/strata.cfg /etc/logrotate.d/strata; do
    printf '%s\n' "$conffiles" | grep -qx "$f" || fail "$f is not a conffile"
done
dpkg-deb -f "$deb" Depends | grep -q libsystemd0 || fail "not linked with libsystemd"
say "contents, conffiles and dependencies as expected"
[ "$build_only" = 1 ] && exit 0

# ---- install ----
[ "$(id -u)" = 0 ] || { say "SKIP install, run and removal: needs root"; exit 0; }
if dpkg-query -W -f='${Status}' strata 2>/dev/null | grep -q installed; then
    fail "a strata package is installed already: not touching it"
fi
installed=1
cleanup() { [ "${installed:-0}" = 1 ] && dpkg -P strata >/dev/null 2>&1 || true; }
trap cleanup EXIT
dpkg -i "$deb" >"$out/install.log" 2>&1 || { cat "$out/install.log"; fail "dpkg -i"; }
getent passwd strata >/dev/null || fail "no strata user after install"
for d in /var/lib/strata /var/log/strata; do
    [ "$(stat -c %U "$d")" = strata ] || fail "$d is not owned by strata"
done
/usr/sbin/strata -t -C /etc/strata/strata.cfg || fail "the installed configuration does not pass -t"
(cd / && /usr/sbin/strata -t 2>&1 | grep -q "'/etc/strata/pools.yml' syntax is ok") ||
    fail "strata -t without -c does not read /etc/strata/pools.yml"
# in place of /usr/sbin/nutcracker (run as "nutcracker", no -c), as
# Debian's nutcracker.service runs it: nutcracker's pool file first
made_nc=0
if [ ! -e /etc/nutcracker/nutcracker.yml ]; then
    mkdir -p /etc/nutcracker && cp /etc/strata/pools.yml /etc/nutcracker/nutcracker.yml && made_nc=1
fi
nc_dir=$(mktemp -d) && ln -s /usr/sbin/strata "$nc_dir/nutcracker"
nc_out=$(cd / && "$nc_dir/nutcracker" -t 2>&1) || true
rm -rf "$nc_dir"
[ "$made_nc" = 1 ] && rm -f /etc/nutcracker/nutcracker.yml
printf '%s\n' "$nc_out" | grep -q "'/etc/nutcracker/nutcracker.yml' syntax is ok" ||
    fail "run as nutcracker without -c: $nc_out"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/strata.service ||
        fail "systemd-analyze verify of the installed unit"
fi
say "installed: user, directories, configuration and unit check out"

# ---- run, reload, rotate, stop ----
if [ -d /run/systemd/system ]; then
    say "systemd runs this machine: systemctl start, reload, stop (the example"
    say "pool file: 127.0.0.1:22121, stats on 127.0.0.1:22222)"
    systemctl start strata || { journalctl -u strata -n 30 --no-pager; fail "start"; }
    systemctl show -p StatusText --value strata | grep -q "configuration 1 " ||
        fail "no READY status: $(systemctl show -p StatusText --value strata)"
    systemctl reload strata || fail "reload"
    # systemd 252 returns once the signal is sent: wait for the READY=1
    # that ends the reload (its status names generation 2), 10 s at most
    for _ in $(seq 100); do
        systemctl show -p StatusText --value strata | grep -q "configuration 2 " && break
        sleep 0.1
    done
    systemctl show -p StatusText --value strata | grep -q "configuration 2 " ||
        fail "reload not in force: $(systemctl show -p StatusText --value strata)"
    systemctl stop strata || fail "stop"
else
    say "no systemd running here: the unit's ExecStart as its User=, with a NOTIFY_SOCKET"
    python3 tests/packaging/run_as_unit.py /lib/systemd/system/strata.service ||
        fail "running as the unit would"
fi

# ---- removal ----
dpkg -r strata >/dev/null || fail "dpkg -r"
[ ! -e /usr/sbin/strata ] || fail "/usr/sbin/strata left after removal"
[ -f /etc/strata/strata.cfg ] || fail "removal took the conffiles (only purge should)"
dpkg -P strata >/dev/null || fail "dpkg -P"
installed=0
for p in /etc/strata /etc/logrotate.d/strata /var/lib/strata /var/log/strata \
         /lib/systemd/system/strata.service; do
    [ ! -e "$p" ] || fail "$p left after purge"
done
say "PASS: built, installed, ran, reloaded, rotated, stopped, removed and purged"
