#!/usr/bin/env bash
# The release tarball: `make distcheck` passes (the tarball configures,
# builds, passes `make check`, installs and uninstalls cleanly in a
# VPATH build), and it holds what the README's commands read: the CI
# package list, autogen.sh, the demo, the test runner, the debian/
# directory. Prints the tarball's path. Run by .ci/run; see
# docs/operations.md ("Release tarball and package").
#   bash tests/distcheck.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x configure ] || ./autogen.sh
[ -f Makefile ] || ./configure
jobs=$(nproc 2>/dev/null || echo 2)
make -j"$jobs" distcheck
version=$(sed -n 's/^PACKAGE_VERSION = //p' Makefile)
tarball="strata-$version.tar.gz"
missing=0
for f in .ci/packages .ci/run autogen.sh configure.ac Makefile.am README.md \
         conf/demo.sh conf/nutcracker.yml conf/strata.service.in conf/etc/pools.yml \
         conf/etc/strata.cfg.in conf/strata.logrotate conf/strata.sysusers \
         tests/run.sh tests/package.sh tests/integration/conftest.py \
         include/strata/stats_tier.h debian/control debian/rules docs/strata.8; do
    if ! tar tzf "$tarball" "strata-$version/$f" >/dev/null 2>&1; then
        echo "distcheck: $tarball lacks $f" >&2
        missing=1
    fi
done
if tar tzf "$tarball" | grep -E '(__pycache__|\.log$|\.trs$|conf/strata\.service$)' >&2; then
    echo "distcheck: $tarball holds build or test leftovers (above)" >&2
    missing=1
fi
[ "$missing" = 0 ] || exit 1
echo "distcheck: $PWD/$tarball passes and holds what the README needs"
