#!/bin/sh
# Finish the sandboxd/base root filesystem from inside it, as root. Both
# build methods run this same script once Debian packages, Node.js and the
# global npm packages are in place: the Dockerfile with RUN, the rootfs
# method with chroot. It needs no network and no /proc.
#
# Environment: SANDBOXD_INPUTS (the inputs hash, for the manifest).
set -eu

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# The sandbox user. uid/gid 1000 is what the daemon runs containers as and
# chowns workspaces to; the name only matters for prompts and `id`.
if ! getent group 1000 >/dev/null; then
	groupadd --gid 1000 sandbox
fi
if ! getent passwd 1000 >/dev/null; then
	useradd --uid 1000 --gid 1000 --home-dir /home/sandbox \
	    --create-home --shell /bin/bash sandbox
fi
[ "$(getent passwd 1000 | cut -d: -f6)" = /home/sandbox ] ||
    die "uid 1000 exists with a home other than /home/sandbox"

# /workspace and /home/sandbox are bind-mounted by the daemon; these are the
# mount points (and what a plain `docker run` without mounts gets).
mkdir -p /workspace /home/sandbox
chown 1000:1000 /workspace /home/sandbox
chmod 0755 /workspace /home/sandbox
chmod 1777 /tmp

# System-wide git defaults: $HOME is an empty bind mount at first, so a
# ~/.gitconfig baked here would be hidden.
git config --system init.defaultBranch main
git config --system safe.directory /workspace

# opencode-ai installs an AVX2 build and a "baseline" build of its 180 MB
# binary and hard-links the one its postinstall picked (for this CPU) to
# bin/opencode.exe. Drop the other: it would only add 180 MB to the image.
oc=/usr/local/lib/node_modules/opencode-ai
if [ -f "$oc/bin/opencode.exe" ] && [ -d "$oc/node_modules" ]; then
	keep=$(find "$oc/node_modules" -samefile "$oc/bin/opencode.exe" |
	    head -n 1)
	[ -n "$keep" ] ||
	    die "opencode-ai: bin/opencode.exe is not one of its platform packages (postinstall did not run?)"
	for d in "$oc"/node_modules/opencode-*; do
		case "$keep" in
		"$d"/*) ;;
		*) say "pruning unused ${d##*/}"; rm -rf "$d" ;;
		esac
	done
fi

# Nothing under /usr/local may be writable by the sandbox user, whoever ran
# the installers.
chown -R -P 0:0 /usr/local
chmod -R go-w /usr/local

# Leftovers of apt and of npm run as root.
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /root/.npm /root/.cache \
    /tmp/* /tmp/.[!.]* 2>/dev/null || true

# The manifest: exactly what went in, since Debian versions cannot be
# pinned without snapshot.debian.org.
mkdir -p /usr/share/sandboxd
{
	echo "# sandboxd/base manifest"
	echo "inputs ${SANDBOXD_INPUTS:-unknown}"
	echo "debian $(cat /etc/debian_version)"
	echo
	echo "# node and global npm packages"
	if [ -x /usr/local/bin/node ]; then
		printf 'node %s\n' "${NODE_VERSION:-?}"
	fi
	for pj in /usr/local/lib/node_modules/*/package.json \
	    /usr/local/lib/node_modules/@*/*/package.json; do
		[ -f "$pj" ] || continue
		jq -r '"\(.name) \(.version)"' "$pj"
	done
	echo
	echo "# debian packages"
	dpkg-query -W -f '${Package} ${Version}\n'
} >/usr/share/sandboxd/manifest.txt
say "manifest: $(grep -c . /usr/share/sandboxd/manifest.txt) lines"
