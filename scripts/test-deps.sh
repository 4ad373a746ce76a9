#!/bin/sh
# Install the Debian packages the real-service test fixtures (tests/services.py) need, only when
# something is missing: Slurm (+ munge), PostgreSQL, an ssh server and client, iproute2.
# Fast and silent when everything is present (no apt-get update then). Never fails the build: when
# apt is unavailable or the install fails, it prints what is missing and exits 0, and the fixtures
# skip with a clear message. While installing, services are kept from starting (policy-rc.d), so
# no system-wide sshd, slurmctld, munged or postgres is left running: the fixtures start their own.
need=""
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have slurmctld && have slurmd || need="$need slurm-wlm"
have sbatch && have srun && have scontrol || need="$need slurm-client"
have munged || need="$need munge"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
have sshd || need="$need openssh-server"
have ssh && have ssh-keygen || need="$need openssh-client"
have ip || need="$need iproute2"
have runuser || need="$need util-linux"
have pgrep || need="$need procps"
[ -z "$need" ] && exit 0

missing() {
    echo "brasil: test services missing Debian packages:$need ($1);" \
         "the tests needing them will skip. Install with: apt-get install$need" >&2
    exit 0
}
[ "$(id -u)" = 0 ] || missing "not root"
command -v apt-get >/dev/null 2>&1 || missing "no apt-get"

echo "installing Debian packages for the test services:$need"
export DEBIAN_FRONTEND=noninteractive
# Keep the packages' services from starting (Docker images ship this file already).
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
        && made_policy=1
fi
cleanup() { [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d; }
trap cleanup EXIT
apt_install() {
    apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1
}
# Try with the package lists already here first; refresh them only if that fails.
if ! apt_install; then
    apt-get update -qq >/dev/null 2>&1
    apt_install || missing "apt-get install failed"
fi
exit 0
