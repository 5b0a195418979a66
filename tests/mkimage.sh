#!/bin/sh
#
# Build a tiny test image from the host's static busybox, without network:
#   tests/mkimage.sh [--force] [TAG]      (TAG: sandboxd-test-busybox:1)
# The image has /bin/busybox with a symlink per applet, root and a
# "sandbox" user (1000:1000), and empty /workspace /home/sandbox /tmp /run.
# Does nothing if TAG exists already, unless --force. Prints the tag.

set -eu

force=0
if [ "${1:-}" = "--force" ]; then
	force=1
	shift
fi
tag=${1:-sandboxd-test-busybox:1}
busybox=${BUSYBOX:-/bin/busybox}

if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
	echo "$tag"
	exit 0
fi

# A dynamic busybox would need the host's libc inside the image.
if ! [ -x "$busybox" ]; then
	echo "mkimage.sh: $busybox not found (apt-get install busybox-static)" >&2
	exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
	echo "mkimage.sh: $busybox is not static (install busybox-static)" >&2
	exit 1
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/sbx-rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT INT TERM

mkdir -p "$root/bin" "$root/etc" "$root/workspace" "$root/home/sandbox" \
    "$root/tmp" "$root/run"
chmod 1777 "$root/tmp"
chown 1000:1000 "$root/workspace" "$root/home/sandbox"
cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
	[ "$applet" = busybox ] && continue
	ln -s busybox "$root/bin/$applet"
done

cat >"$root/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/bin/sh
sandbox:x:1000:1000::/home/sandbox:/bin/sh
PASSWD
cat >"$root/etc/group" <<GROUP
root:x:0:
sandbox:x:1000:
GROUP

# --numeric-owner keeps uid 1000 even if the host names it differently.
tar --numeric-owner -C "$root" -cf - . |
    docker import --change 'CMD ["/bin/sh"]' - "$tag" >/dev/null
echo "$tag"
