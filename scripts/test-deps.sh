#!/bin/sh
# Install the Debian packages the real-service test fixtures (tests/services.py) need, only when
# something is missing: Slurm (+ munge), PostgreSQL, an ssh server and client, iproute2, and for
# process inspection gcc (test programs are built at test time), elfutils, gdb and graphviz;
# Prometheus, and headless Chromium with its driver for the dashboard's browser tests.
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
have gcc || need="$need gcc libc6-dev"
have eu-stack || need="$need elfutils"
have gdb || need="$need gdb"
have dot || need="$need graphviz"
have prometheus || need="$need prometheus"
have chromium && [ -x /usr/bin/chromedriver ] || need="$need chromium chromium-driver"
exec sh "$(dirname "$0")/install-missing.sh" "the test services" $need
