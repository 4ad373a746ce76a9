#!/bin/sh
# Install the Debian packages the benchmarks compare against, only when something is missing:
# GNU parallel (bench/push.py) and GNU time (/usr/bin/time, for peak RSS). Fast and silent when
# everything is present (no apt-get update then). Never fails the build: when apt is unavailable
# or the install fails, it prints what is missing and exits 0, and the benchmark marks those rows
# "not installed". GNU parallel's citation notice is silenced once (~/.parallel/will-cite).
need=""
# Debian's `parallel` is GNU parallel; moreutils ships another `parallel` without --pipe.
if command -v parallel >/dev/null 2>&1 && parallel --version 2>/dev/null | grep -q 'GNU parallel'; then
    :
else
    need="$need parallel"
fi
[ -x /usr/bin/time ] || need="$need time"

will_cite() {
    mkdir -p "$HOME/.parallel" 2>/dev/null && touch "$HOME/.parallel/will-cite" 2>/dev/null
    return 0
}
if [ -z "$need" ]; then
    will_cite
    exit 0
fi

missing() {
    echo "brasil: benchmark peers missing Debian packages:$need ($1);" \
         "bench/push.py marks their rows 'not installed'. Install with: apt-get install$need" >&2
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
will_cite
exit 0
