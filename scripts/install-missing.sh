#!/bin/sh
# Usage: install-missing.sh WHAT PKG…   (sourced logic for test-deps.sh and bench-deps.sh)
# Install Debian packages PKG… that WHAT needs. Never fails the build: when not root, without
# apt-get, or when the install fails, it says what is missing and exits 0, and what needed them
# says so in its turn (tests skip with a message, benchmarks mark rows "not installed"). The
# package lists are refreshed only if an install with the present ones fails. Services the
# packages bring are kept from starting: the tests start their own.
what="$1"; shift
need="$*"
[ -z "$need" ] && exit 0
missing() {
    echo "brasil: $what: missing Debian packages: $need ($1); install with: apt-get install $need" >&2
    exit 0
}
[ "$(id -u)" = 0 ] || missing "not root"
command -v apt-get >/dev/null 2>&1 || missing "no apt-get"
echo "installing Debian packages for $what: $need"
export DEBIAN_FRONTEND=noninteractive
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
        && made_policy=1
fi
cleanup() { [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d; }
trap cleanup EXIT
apt_install() { apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1; }
if ! apt_install; then
    apt-get update -qq >/dev/null 2>&1
    apt_install || missing "apt-get install failed"
fi
exit 0
