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
# mypy, python3-pip, python3-setuptools, python3-wheel: test_sdk_python.py
# type-checks the Python SDK as Python 3.9 and pip-installs it offline.
[ "${SANDBOXD_TEST_DEPS:-0}" = 1 ] && pkgs="$pkgs clang libclang-rt-14-dev valgrind
    nghttp2-client python3-h2 python3-websockets python3-yaml testssl.sh slowhttptest openssl
    strace man-db systemd systemd-container chromium prometheus
    mypy python3-pip python3-setuptools python3-wheel"
# Node.js and npm build the console (scripts/build-console.sh) at build
# time only, the daemon never runs them; and the TypeScript SDK's tests
# (clients/typescript; Node.js 20+, they skip on an older one). A Node.js
# already installed (e.g. NodeSource's, which carries its own npm) is used
# as it is.
node_pkgs="nodejs npm"
if [ "${1:-}" = --list ]; then
	# shellcheck disable=SC2086
	printf '%s\n' $pkgs $node_pkgs
	exit 0
fi
command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
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
