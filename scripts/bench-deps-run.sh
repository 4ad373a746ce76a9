#!/bin/sh
# Install the Debian packages bench/run.py compares `brasil run` against, only when something is
# missing: ClusterShell (clush, clubak) and pdsh (pdsh, dshbak, with its exec rcmd module).
# Fast and silent when everything is present (no apt-get update then). Never fails the build: when
# apt is unavailable or the install fails, it prints what is missing and exits 0, and the
# benchmark marks those rows "not installed".
#
# Debian's clush is /usr/bin/clush (the virtualenv has another, from the ClusterShell pip package
# brasil depends on); bench/run.py uses the Debian one, as a user of the distribution would.
need=""
[ -x /usr/bin/clush ] && [ -x /usr/bin/clubak ] || need="$need clustershell"
[ -x /usr/bin/pdsh ] && [ -x /usr/bin/dshbak ] || need="$need pdsh"
[ -z "$need" ] && exit 0

missing() {
    echo "brasil: benchmark peers missing Debian packages:$need ($1);" \
         "bench/run.py marks their rows 'not installed'. Install with: apt-get install$need" >&2
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
