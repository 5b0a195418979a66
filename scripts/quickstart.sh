#!/bin/sh
# Quick start on a fresh Debian 12 machine, as root: install what sandboxd
# needs, build and install it, build the default sandbox image (the first
# time only; it takes a few minutes), then run the daemon in the foreground
# on its embedded default: API and previews on http://localhost:8080,
# previews at http://<id>.preview.localhost:8080/, the console at
# http://localhost:8080/console/.
#
# Options: --no-image  skip the base image (use your own templates)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build_image=1
[ "${1:-}" = "--no-image" ] && build_image=0

scripts/install-deps.sh
scripts/start-dockerd.sh

echo "==> building sandboxd"
[ -x configure ] || autoreconf -fi >/dev/null 2>&1
mkdir -p build
(cd build && { [ -f Makefile ] || ../configure --prefix=/usr/local >/dev/null; } &&
    make -j"$(nproc)" >/dev/null && make install >/dev/null)
echo "==> installed /usr/local/bin/sandboxd, /usr/local/libexec/sandboxd/agentd and the console"

if [ $build_image = 1 ]; then
	base-image/build.sh --seed-out /usr/share/sandboxd/templates/vite-react
fi

key=/var/lib/sandboxd/api-key
cat <<TXT
==> starting sandboxd on the embedded default (Ctrl-C stops it; sandboxes keep running)
    API:      http://localhost:8080   (admin key: $key, made at first start)
    Try:      curl -s -X POST -H "Authorization: Bearer \$(cat $key)" http://localhost:8080/v1/sandboxes
    Then open the preview_url it answers, e.g. http://<id>.preview.localhost:8080/
    Console:  http://localhost:8080/console/   (sign in with that key: sandboxes,
              previews, files, tasks and a terminal in the browser)
TXT
exec /usr/local/bin/sandboxd serve
