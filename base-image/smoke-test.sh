#!/bin/bash
# Smoke test of the sandboxd/base image under the daemon's hardening flags.
#
#   base-image/smoke-test.sh [TAG]        (default sandboxd/base:latest)
#
# Starts the image as the daemon starts a sandbox (read-only root, every
# capability dropped, no-new-privileges, pid/file/memory limits, uid 1000,
# tmpfs /tmp, bind-mounted /workspace and /home/sandbox, an ICC-off bridge)
# with the starter template's seed copied into the workspace, and checks:
#   - the starter app answers HTTP 200 with its HTML on port 3000 (timed
#     from `docker run`), for a preview Host header too;
#   - hot reload: Vite's client connects back to the page's own host:port,
#     the WebSocket upgrade is accepted for a preview host, and editing
#     src/App.jsx sends an update over it;
#   - node, npm, pnpm, bun, python3, git, opencode and claude run;
#   - npm, pnpm, bun, pip and git work without writing to the root
#     filesystem (and `docker diff` shows nothing written there).
#
# The seed comes from $SEED_DIR, else base-image/out/templates/vite-react,
# else /usr/share/sandboxd/templates/vite-react. Exit 0: all passed; 1: a
# check failed; 77: skipped (no image, or not root), as automake expects.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TAG=${1:-sandboxd/base:latest}
APP_TIMEOUT=${APP_TIMEOUT:-30}
PREVIEW_HOST=smoke.preview.localhost:8080
# The daemon's (control/lifecycle.c); Docker adds noexec unless told "exec".
TMPFS_OPTS=${TMPFS_OPTS:-rw,exec,nosuid,nodev,size=256m}
NAME=sandboxd-smoke-$$-$RANDOM
NET=
CID=
TMP=
PASS=0
FAIL=0
FAILED=()

skip() { printf 'SKIP: %s\n' "$*"; exit 77; }
pass() { PASS=$((PASS + 1)); printf '  ok    %s\n' "$*"; }
fail() { FAIL=$((FAIL + 1)); FAILED+=("$1"); printf '  FAIL  %s\n' "$*"; }

cleanup() {
	trap - EXIT INT TERM
	[ -z "$CID" ] || docker rm -f "$CID" >/dev/null 2>&1
	[ -z "$NET" ] || docker network rm "$NET" >/dev/null 2>&1
	[ -z "$TMP" ] || rm -rf --one-file-system "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v docker >/dev/null || skip "docker is not installed"
docker info >/dev/null 2>&1 || skip "cannot talk to dockerd"
docker image inspect "$TAG" >/dev/null 2>&1 ||
    skip "image $TAG not found; build it with base-image/build.sh (takes a few minutes)"
[ "$(id -u)" = 0 ] ||
    skip "needs root, like the daemon (workspace dirs must belong to uid 1000)"
command -v curl >/dev/null || skip "curl is not installed"

SEED=${SEED_DIR:-}
if [ -z "$SEED" ]; then
	for d in "$HERE/out/templates/vite-react" \
	    /usr/share/sandboxd/templates/vite-react; do
		[ -d "$d/node_modules" ] && { SEED=$d; break; }
	done
fi
[ -n "$SEED" ] && [ -f "$SEED/package.json" ] ||
    skip "no starter template seed (base-image/build.sh makes one; or set SEED_DIR)"

printf 'smoke test of %s (%s)\n  seed: %s\n' "$TAG" \
    "$(docker image inspect -f '{{.Id}}' "$TAG" | cut -c8-19)" "$SEED"

# The workspace and home as the daemon makes them: host dirs owned by 1000,
# the workspace seeded with cp -a and chowned.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sandboxd-smoke.XXXXXX") || exit 1
mkdir "$TMP/ws" "$TMP/home"
cp -a "$SEED/." "$TMP/ws/" || { echo "cannot copy $SEED"; exit 1; }
chown -R -P 1000:1000 "$TMP/ws" "$TMP/home"

NET=$NAME
docker network create --label sandboxd.smoke=1 \
    -o com.docker.network.bridge.enable_icc=false "$NET" >/dev/null ||
    { echo "cannot create docker network $NET"; NET=; exit 1; }

t0=$(date +%s%N)
CID=$(docker run -d --name "$NAME" --network "$NET" \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    --pids-limit 512 --ulimit nofile=4096:4096 \
    --memory 1g --memory-swap 1g --cpus 1 --user 1000:1000 \
    --tmpfs "/tmp:$TMPFS_OPTS" \
    -v "$TMP/ws:/workspace:rw" -v "$TMP/home:/home/sandbox:rw" \
    -w /workspace "$TAG" \
    sh -c 'exec npm run dev -- --host 0.0.0.0 --port 3000') ||
    { echo "docker run failed"; CID=; exit 1; }
IP=$(docker inspect -f "{{ (index .NetworkSettings.Networks \"$NET\").IPAddress }}" "$CID")
[ -n "$IP" ] || { echo "no IP for the container"; exit 1; }

# --- the starter app ---------------------------------------------------------

echo "starter app (http://$IP:3000/):"
code=
deadline=$(($(date +%s) + APP_TIMEOUT))
while [ "$(date +%s)" -lt "$deadline" ]; do
	code=$(curl -s -o "$TMP/index.html" -w '%{http_code}' -m 2 \
	    "http://$IP:3000/" 2>/dev/null) || true
	[ "$code" = 200 ] && break
	[ "$(docker inspect -f '{{.State.Running}}' "$CID")" = true ] || break
	sleep 0.05
done
ms=$((($(date +%s%N) - t0) / 1000000))
if [ "$code" = 200 ] && grep -q '<div id="root">' "$TMP/index.html"; then
	pass "HTTP 200 with the app's HTML, $ms ms after docker run"
	APP_MS=$ms
else
	fail "app" "no HTTP 200 within ${APP_TIMEOUT}s (last: ${code:-none}); container log:"
	docker logs --tail 30 "$CID" 2>&1 | sed 's/^/        /'
fi

if [ -n "${APP_MS:-}" ]; then
	code=$(curl -s -o /dev/null -w '%{http_code}' -m 10 \
	    -H "Host: $PREVIEW_HOST" "http://$IP:3000/")
	[ "$code" = 200 ] && pass "a preview Host ($PREVIEW_HOST) is allowed" ||
	    fail "allowedHosts" "Host: $PREVIEW_HOST got HTTP $code"

	curl -s -m 30 -H "Host: $PREVIEW_HOST" "http://$IP:3000/src/App.jsx" \
	    >"$TMP/app.js"
	grep -q 'Your sandbox is ready' "$TMP/app.js" &&
	    pass "src/App.jsx is served transformed" ||
	    fail "transform" "src/App.jsx did not come back transformed"

	curl -s -m 10 -H "Host: $PREVIEW_HOST" "http://$IP:3000/@vite/client" \
	    >"$TMP/client.js"
	# The HMR socket must go to the page's own host:port (the preview
	# URL), not to port 3000: no hmr/ws host or port configured.
	if grep -q '^const hmrPort = null;' "$TMP/client.js" &&
	    grep -q 'importMetaUrl.hostname}:${hmrPort || importMetaUrl.port}' \
	    "$TMP/client.js"; then
		pass "the HMR client connects to the page's own host:port"
	else
		fail "hmr-target" "the HMR client does not target the page's host:port:"
		grep -E '^const (hmrPort|socketHost)' "$TMP/client.js" |
		    sed 's/^/        /'
	fi
	TOKEN=$(sed -n 's/^const wsToken = "\(.*\)";$/\1/p' "$TMP/client.js")

	# The upgrade as the proxy forwards it: Host is the preview host.
	curl -s -i -m 3 --http1.1 -H "Host: $PREVIEW_HOST" \
	    -H "Origin: http://$PREVIEW_HOST" \
	    -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
	    -H 'Sec-WebSocket-Version: 13' \
	    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \
	    -H 'Sec-WebSocket-Protocol: vite-hmr' \
	    "http://$IP:3000/?token=$TOKEN" >"$TMP/ws.txt" 2>/dev/null
	head -n 1 "$TMP/ws.txt" | grep -q ' 101 ' &&
	    pass "WebSocket upgrade for the preview host: 101" ||
	    fail "hmr-upgrade" "WebSocket upgrade got: $(head -n 1 "$TMP/ws.txt")"

	# A real hot update: a WebSocket client (node's own) inside the
	# sandbox, then an edit of src/App.jsx from outside, as an agent or
	# the files API would make it.
	# Its own output goes to /tmp/hmr.out, its socket's life to
	# /tmp/hmr.err, so that a client that does not get in says why.
	HMR_JS='
		const fs = require("fs");
		const note = (s) => fs.appendFileSync("/tmp/hmr.err", s + "\n");
		note("started");
		const ws = new WebSocket("ws://127.0.0.1:3000/?token=" +
		    process.argv[1], "vite-hmr");
		ws.onopen = () => note("open");
		ws.onmessage = (m) =>
		    fs.appendFileSync("/tmp/hmr.log", m.data + "\n");
		ws.onerror = (e) => note("error " + String(e.message || e));
		ws.onclose = (e) => note("close " + e.code);
		setTimeout(() => process.exit(0), 60000);
	'
	# "--": Vite's token is random base64url and may begin with "-",
	# which node would take for one of its options.
	hmr_client() {
		docker exec -d "$CID" sh -c \
		    'exec node -e "$0" -- "$1" >>/tmp/hmr.out 2>&1' "$HMR_JS" "$TOKEN"
	}
	# Bounded waits (each docker exec takes ~0.1 s or more on a busy
	# host); a client that did not get in is started again.
	for attempt in 1 2 3; do
		hmr_client
		for _ in $(seq 100); do
			docker exec "$CID" grep -q connected /tmp/hmr.log \
			    2>/dev/null && break 2
			sleep 0.1
		done
		echo "  note  HMR client not connected (attempt $attempt):" \
		    "$(docker exec "$CID" sh -c 'cat /tmp/hmr.err /tmp/hmr.out' \
		    2>&1 | tr '\n' ' ' | head -c 300)"
	done
	printf '\n// edited by the smoke test\n' >>"$TMP/ws/src/App.jsx"
	got=
	for _ in $(seq 200); do
		got=$(docker exec "$CID" grep -o -m 1 -E '"type":"(update|full-reload)"' \
		    /tmp/hmr.log 2>/dev/null) && break
		sleep 0.1
	done
	[ -n "$got" ] && pass "editing src/App.jsx sends a hot update ($got)" ||
	    fail "hmr-update" "no update on the HMR socket after an edit: $(docker exec "$CID" cat /tmp/hmr.log 2>&1 | head -c 300)"
fi

# --- the tools ---------------------------------------------------------------

# Run a shell snippet in the sandbox, as uid 1000 in /workspace.
sx() { docker exec -w /workspace "$CID" bash -c "$1" 2>&1; }

echo "tools:"
for c in "node --version" "npm --version" "pnpm --version" "bun --version" \
    "python3 --version" "git --version" "opencode --version" \
    "claude --version"; do
	if out=$(sx "$c"); then
		pass "$(printf '%-18s %s' "$c" "$(printf '%s' "$out" | tail -n 1)")"
	else
		fail "${c%% *}" "$c: $(printf '%s' "$out" | tail -n 3)"
	fi
done

echo "read-only root (only /workspace, /home/sandbox and /tmp writable):"
# name, snippet: each must exit 0 and not mention a read-only file system.
check() {
	local out
	if out=$(sx "$2") && ! grep -qi -E 'EROFS|read-only file system' <<<"$out"
	then
		pass "$1"
	else
		fail "$1" "$1: $(printf '%s' "$out" | tail -n 4)"
	fi
}
check "root is read-only, user is uid 1000" \
    '! touch /usr/local/x 2>/dev/null && [ "$(id -u):$(id -g)" = 1000:1000 ] && [ "$HOME" = /home/sandbox ]'
check "npm install (no dependencies)" \
    'd=$(mktemp -d) && cd "$d" && npm init -y >/dev/null && npm install --no-audit && test -f package-lock.json && test -d "$HOME/.npm"'
check "npm install -g goes to ~/.npm-global, on PATH" \
    'd=$(mktemp -d -p "$HOME") && cd "$d" && printf "%s" "{\"name\":\"smoke-cli\",\"version\":\"1.0.0\",\"bin\":{\"smoke-cli\":\"cli.js\"}}" >package.json && printf "#!/usr/bin/env node\nconsole.log(42)\n" >cli.js && npm install -g --no-audit "$d" && [ "$(npm prefix -g)" = "$HOME/.npm-global" ] && [ "$(smoke-cli)" = 42 ]'
# A local package tarball stands in for the registry, which sandboxes may
# not reach: installing it goes through each tool's cache or store.
sx 'mkdir -p /tmp/dep && cd /tmp/dep && printf "{\"name\":\"smoke-dep\",\"version\":\"1.0.0\",\"main\":\"i.js\"}" >package.json && echo "module.exports = 7" >i.js && npm pack --silent --pack-destination /tmp >/dev/null' >/dev/null
check "pnpm add (a tarball) in /workspace, store under \$HOME" \
    'mkdir -p /workspace/.smoke-pnpm && cd /workspace/.smoke-pnpm && printf "{\"name\":\"p\",\"version\":\"1.0.0\"}" >package.json && pnpm add /tmp/smoke-dep-1.0.0.tgz && [ "$(node -p "require(\"smoke-dep\")")" = 7 ] && case "$(pnpm store path)" in /home/sandbox/*) ;; *) echo "store: $(pnpm store path)"; exit 1;; esac'
check "bun add (a tarball) and run" \
    'mkdir -p /workspace/.smoke-bun && cd /workspace/.smoke-bun && printf "{\"name\":\"b\",\"version\":\"1.0.0\"}" >package.json && bun add /tmp/smoke-dep-1.0.0.tgz && [ "$(bun -e "console.log(require(\"smoke-dep\"))")" = 7 ]'
check "python3 venv with pip" \
    'python3 -m venv "$HOME/.venv-smoke" && "$HOME/.venv-smoke/bin/pip" --version'
check "pip defaults to a user install" \
    'python3 -m pip --version && python3 -c "import site; assert site.USER_BASE.startswith(\"/home/sandbox\")"'
check "git init and commit" \
    'd=$(mktemp -d) && cd "$d" && git init -q && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m x && [ "$(git branch --show-current)" = main ]'
check "opencode and claude start with an empty \$HOME" \
    'opencode --help >/dev/null && claude --help >/dev/null'

if sx 'grep -q " /tmp .*noexec" /proc/mounts' >/dev/null; then
	echo "  note  /tmp is noexec (Docker's default for --tmpfs without \"exec\"): nothing can be run from it"
fi

diff=$(docker diff "$CID" 2>&1)
[ -z "$diff" ] && pass "docker diff: nothing written to the image's filesystem" ||
    fail "docker-diff" "docker diff: $(printf '%s' "$diff" | head -n 5 | tr '\n' ' ')"

[ "$(docker inspect -f '{{.State.Running}}' "$CID")" = true ] &&
    pass "the dev server is still running" ||
    fail "dev-server" "the dev server died: $(docker logs --tail 5 "$CID" 2>&1)"

echo
printf 'starter app answered %s ms after docker run\n' "${APP_MS:-?}"
[ "$FAIL" = 0 ] || printf 'failed: %s\n' "${FAILED[*]}"
printf '%d passed, %d failed\n' "$PASS" "$FAIL"
[ "$FAIL" = 0 ]
