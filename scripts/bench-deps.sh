#!/bin/sh
# The Debian packages the benchmarks compare against, installed only when missing: GNU parallel
# (bench/push.py), GNU time (peak RSS), ClusterShell's clush/clubak and pdsh/dshbak (bench/run.py,
# bench/group.py). Fast and silent when all are there. GNU parallel's citation notice is
# silenced once (~/.parallel/will-cite). Debian's clush is /usr/bin/clush (the virtualenv has
# another, from the ClusterShell pip package brasil depends on); the benchmarks use Debian's.
need=""
# Debian's `parallel` is GNU parallel; moreutils ships another `parallel` without --pipe.
parallel --version 2>/dev/null | grep -q 'GNU parallel' || need="$need parallel"
[ -x /usr/bin/time ] || need="$need time"
[ -x /usr/bin/clush ] && [ -x /usr/bin/clubak ] || need="$need clustershell"
[ -x /usr/bin/pdsh ] && [ -x /usr/bin/dshbak ] || need="$need pdsh"
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || need="$need chromium chromium-driver"  # bench/web.py
sh "$(dirname "$0")/install-missing.sh" "the benchmarks" $need
mkdir -p "$HOME/.parallel" 2>/dev/null && touch "$HOME/.parallel/will-cite" 2>/dev/null
exit 0
