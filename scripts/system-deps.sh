#!/bin/sh
# Install the Debian packages Brasil needs, only when something is missing (you are root here;
# elsewhere run it with sudo). Nothing to do on a machine that already has them.
set -e
need=""
command -v fusermount3 >/dev/null 2>&1 || need="$need fuse3"
[ -e /usr/include/fuse3/fuse.h ] || need="$need libfuse3-dev"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "brasil: missing Debian packages:$need — run: sudo apt-get install$need" >&2
    exit 1
fi
echo "installing Debian packages:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq $need >/dev/null
