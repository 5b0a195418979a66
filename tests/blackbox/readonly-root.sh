#!/bin/sh
# readonly-root.sh DIR CMD...: run CMD in a mount namespace of its own where
# every mount but /proc, /sys, /dev and DIR is read-only, as the unit's
# ProtectSystem=strict with ReadWritePaths=DIR makes it. Needs root (run
# under unshare -m --propagation private).
set -e
rw=$1; shift
mount --bind "$rw" "$rw"
awk '{print $2}' /proc/self/mounts | sort -u | while read -r m; do
	case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$rw") continue ;; esac
	mount -o remount,bind,ro "$m" 2>/dev/null ||
	    echo "readonly-root: cannot make $m read-only" >&2
done
exec "$@"
