#!/bin/sh
# Build the built-in console (console/, docs/console.md) into OUT:
#
#     scripts/build-console.sh OUT
#
# npm ci installs the pinned build tools (console/package-lock.json:
# esbuild, xterm.js) from the npm registry into console/node_modules, or
# into $CONSOLE_WORK/node_modules with a copy of the sources there (only
# when the lockfile changed since the last install), then esbuild bundles
# the app into OUT: index.html, favicon.svg, assets/ with hashed names and
# gzip copies.
# Node.js 18+ and npm are needed at build time only; the daemon serves the
# files (console_dir) and runs no Node.js. Exit 0 built, 1 failed, 2 usage.
set -eu
case ${1:-} in
-h|--help)
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
	exit 0 ;;
'')
	echo "usage: scripts/build-console.sh OUT" >&2
	exit 2 ;;
esac
out=$1
src=$(cd "$(dirname "$0")/../console" && pwd)
# CONSOLE_WORK=DIR: install and build in a copy there (make does, so the
# source tree is never written to); else in console/ itself.
if [ -n "${CONSOLE_WORK:-}" ]; then
	mkdir -p "$CONSOLE_WORK"
	work=$(cd "$CONSOLE_WORK" && pwd)
	rm -rf "$work/src"
	cp -R "$src/src" "$src/build.mjs" "$src/package.json" "$src/package-lock.json" \
	    "$src/.npmrc" "$work/"
	src=$work
fi
for tool in node npm; do
	command -v $tool >/dev/null 2>&1 || {
		echo "build-console.sh: $tool is not installed (scripts/install-deps.sh installs Node.js and npm)" >&2
		exit 1
	}
done
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 18 ] || {
	echo "build-console.sh: Node.js $(node --version) is too old: 18 or later is needed" >&2
	exit 1
}
# npm ci only when node_modules does not match the lockfile (npm keeps
# its own copy of the lockfile it installed in node_modules/).
if ! cmp -s "$src/package-lock.json" "$src/node_modules/.package-lock.json.sandboxd" 2>/dev/null; then
	echo "==> console: npm ci (pinned by console/package-lock.json)"
	# Every package is pinned with its hash: one npm's cache holds is
	# taken from there without asking the registry. Where the registry's
	# name does not resolve (no network, no DNS), npm would retry for over
	# a minute before it fails: then only its cache is tried, which fails
	# at once when it lacks a package. Not through a proxy, which
	# resolves the name itself.
	mode=--prefer-offline
	# One npm start for the three settings, as key=value lines.
	npmconf=$(cd "$src" && npm config get registry https-proxy proxy \
	    2>/dev/null) || npmconf=
	host=$(printf '%s\n' "$npmconf" | sed -n \
	    's|^registry=[A-Za-z]*://\([^@/]*@\)\{0,1\}\([^]/:[]*\).*|\2|p')
	proxy=${https_proxy:-${HTTPS_PROXY:-${http_proxy:-${HTTP_PROXY:-}}}}
	proxy=$proxy$(printf '%s\n' "$npmconf" |
	    sed -n '/^\(https-\)\{0,1\}proxy=null$/d; s/^\(https-\)\{0,1\}proxy=//p')
	if [ -n "$host" ] && [ -z "$proxy" ] && command -v getent >/dev/null &&
	    ! getent hosts "$host" >/dev/null 2>&1; then
		echo "    the npm registry's name $host does not resolve: npm's cache only"
		mode=--offline
	fi
	(cd "$src" && npm ci $mode --no-audit --no-fund --loglevel=error) || {
		echo "build-console.sh: npm ci failed (is the npm registry reachable?)" >&2
		exit 1
	}
	cp "$src/package-lock.json" "$src/node_modules/.package-lock.json.sandboxd"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
node "$src/build.mjs" "$out"
