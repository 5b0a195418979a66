#!/bin/sh
# Install what sandboxd needs to build, test and run on Debian 12, as root.
# Idempotent: packages already there are left alone.
#   SANDBOXD_TEST_DEPS=1  also what the test suite needs (mmdebstrap builds
#                         the fresh root filesystems the install test uses)
#   --list                print the package names, one a line, and exit
set -eu
pkgs="build-essential autoconf automake libtool pkg-config
libevent-dev libssl-dev libsqlite3-dev libnghttp2-dev libjson-c-dev libwslay-dev
docker.io busybox-static python3 curl ca-certificates mmdebstrap nftables procps"
# procps: /bin/kill, which the unit's ExecReload runs (minimal systems lack it).
# mmdebstrap (above) also makes the test suite's fresh root filesystems;
# systemd-container (systemd-nspawn) boots one with systemd for the install test.
# prometheus: promtool, which test_metrics.py checks /metrics with.
[ "${SANDBOXD_TEST_DEPS:-0}" = 1 ] && pkgs="$pkgs clang libclang-rt-14-dev valgrind
    nghttp2-client python3-h2 python3-websockets python3-yaml testssl.sh slowhttptest openssl
    strace man-db systemd systemd-container chromium prometheus"
# nodejs and npm: the TypeScript SDK's build and tests (clients/typescript;
# they need Node.js 20+ and skip on an older one, such as Debian 12's 18).
# A Node.js installed otherwise, with its own npm, is left as it is.
if [ "${SANDBOXD_TEST_DEPS:-0}" = 1 ]; then
	command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
	command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
fi
if [ "${1:-}" = --list ]; then
	# shellcheck disable=SC2086
	printf '%s\n' $pkgs
	exit 0
fi
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
	    missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "==> installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
echo "==> dependencies present"
