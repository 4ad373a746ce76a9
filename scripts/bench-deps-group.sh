#!/bin/sh
# Install the Debian packages bench/group.py compares `equiv` against, only when something is
# missing: pdsh (for dshbak -c) and ClusterShell (for clubak -b). Fast and silent when everything
# is present (no apt-get update then). Never fails the build: when apt is unavailable or the
# install fails, it prints what is missing and exits 0, and the benchmark marks those rows
# "not installed".
#
# Debian's clubak is /usr/bin/clubak (the virtualenv has another, from the ClusterShell pip
# package brasil depends on); bench/group.py uses the Debian one, as a user of the distribution
# would.
need=""
[ -x /usr/bin/dshbak ] || need="$need pdsh"
[ -x /usr/bin/clubak ] || need="$need clustershell"
[ -z "$need" ] && exit 0

missing() {
    echo "brasil: benchmark peers missing Debian packages:$need ($1);" \
         "bench/group.py marks their rows 'not installed'. Install with: apt-get install$need" >&2
    exit 0
}
[ "$(id -u)" = 0 ] || missing "not root"
command -v apt-get >/dev/null 2>&1 || missing "no apt-get"

echo "installing Debian packages for the benchmarks:$need"
export DEBIAN_FRONTEND=noninteractive
apt_install() {
    apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1
}
# Try with the package lists already here first; refresh them only if that fails.
if ! apt_install; then
    apt-get update -qq >/dev/null 2>&1
    apt_install || missing "apt-get install failed"
fi
exit 0
