#!/bin/sh
# Install the Debian packages Brasil needs, only when something is missing (you are root here;
# elsewhere run it with sudo). fuse3 brings fusermount3 and libfuse3, which mfusepy loads.
set -e
need=""
command -v fusermount3 >/dev/null 2>&1 || need="$need fuse3"
ldconfig -p 2>/dev/null | grep -q 'libfuse3\.so\.3' || need="$need libfuse3-3"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "brasil: missing Debian packages:$need — run: sudo apt-get install$need" >&2
    exit 1
fi
echo "installing Debian packages:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq $need >/dev/null
