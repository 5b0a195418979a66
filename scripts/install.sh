#!/bin/sh
# Install sandboxd as a systemd service on a fresh Debian 12 or Ubuntu 24.04
# server, as root, from a clone of this repository:
#
#     scripts/install.sh --domain preview.example.com [--email you@example.com]
#
# Run it again to upgrade in place (data, config and keys are kept);
# --uninstall removes the service, --uninstall --purge the data too.
# docs/operations.md explains every step; --help lists the options.
set -eu

usage() {
	cat <<'TXT'
usage: scripts/install.sh --domain DOMAIN [options]
       scripts/install.sh --uninstall [--purge]

Installs sandboxd on this server (Debian 12 or Ubuntu 24.04, as root):
the Debian packages it needs (scripts/install-deps.sh, docker.io included),
a build of this tree (configure, make, make install under /usr/local, the
web console included), the
default sandbox image sandboxd/base (base-image/build.sh), the config
/etc/sandboxd/sandboxd.conf with a new admin API key (only its SHA-256 is
kept; the key is printed once), the preview-token secret, and the systemd
unit, enabled and started. It ends with the API URL, the key, the DNS
records to create and how to get the wildcard TLS certificate.

Run again, it upgrades in place: it rebuilds and reinstalls the program and
restarts the service, and never rewrites an existing config, key or secret.

  --domain DOMAIN   previews are served at <id>.DOMAIN (a DNS name you
                    control: you create *.DOMAIN)
  --api-host NAME   the API's host name (default: DOMAIN itself); it must not
                    be a name directly under DOMAIN, which are previews
  --email ADDR      your address for Let's Encrypt, put in the certbot command
  --listen ADDR     the plain HTTP listener (default 0.0.0.0:80)
  --jobs N          make -jN (default: the number of CPUs)
  --build-dir DIR   where to build (default: build/ in this tree)
  --no-image        do not build the sandbox image (you bring your own
                    templates, or build it later: base-image/build.sh)
  --no-start        install and enable the service, do not (re)start it
  --skip-os-check   try an OS other than Debian 12 / Ubuntu 24.04
  --uninstall       stop and remove the service and the program; the config
                    (/etc/sandboxd) and data_dir (/var/lib/sandboxd) stay
  --purge           with --uninstall: remove them too, and this server's
                    sandbox containers (their files go with data_dir)
  -h, --help        this text

Exit codes: 0 done, 1 a step failed, 2 bad arguments.
TXT
}

die() {
	echo "install.sh: $*" >&2
	exit 1
}

bad_usage() {
	echo "install.sh: $*" >&2
	echo "(scripts/install.sh --help lists the options)" >&2
	exit 2
}

step() {
	echo "==> $*"
}

# valid_dns NAME: lowercase labels of [a-z0-9-], 1-63 each, no hyphen at
# either end, 253 in all, and at least two labels (a public name).
valid_dns() {
	name=$1
	[ ${#name} -le 253 ] || return 1
	case $name in
	*.*) ;;
	*) return 1 ;;
	esac
	old_ifs=$IFS
	IFS=.
	# shellcheck disable=SC2086
	set -- $name
	IFS=$old_ifs
	for label in "$@"; do
		[ ${#label} -ge 1 ] && [ ${#label} -le 63 ] || return 1
		case $label in
		-*|*-|*[!a-z0-9-]*) return 1 ;;
		esac
	done
	# "a..b" leaves an empty label that the loop above already refused;
	# a trailing dot leaves none: refuse that here.
	case $name in
	*.) return 1 ;;
	esac
	return 0
}

check_name() {
	what=$1 name=$2
	case $name in
	'') bad_usage "$what: empty" ;;
	\*.*) bad_usage "$what: give the name without \"*.\" ($name: use ${name#\*.})" ;;
	*://*) bad_usage "$what: a host name, not a URL ($name)" ;;
	esac
	valid_dns "$name" || bad_usage "$what: \"$name\" is not a DNS name" \
	    "(labels of a-z 0-9 and -, at least two, such as preview.example.com)"
}

top=$(cd "$(dirname "$0")/.." && pwd)
domain='' api_host='' email='' listen=0.0.0.0:80 jobs='' build_dir=''
build_image=1 start=1 os_check=1 uninstall=0 purge=0
while [ $# -gt 0 ]; do
	case $1 in
	-h|--help) usage; exit 0 ;;
	--domain|--api-host|--email|--listen|--jobs|--build-dir)
		[ $# -ge 2 ] || bad_usage "$1 needs a value"
		case $1 in
		--domain) domain=$2 ;;
		--api-host) api_host=$2 ;;
		--email) email=$2 ;;
		--listen) listen=$2 ;;
		--jobs) jobs=$2 ;;
		--build-dir) build_dir=$2 ;;
		esac
		shift 2 ;;
	--domain=*) domain=${1#*=}; shift ;;
	--api-host=*) api_host=${1#*=}; shift ;;
	--email=*) email=${1#*=}; shift ;;
	--listen=*) listen=${1#*=}; shift ;;
	--jobs=*) jobs=${1#*=}; shift ;;
	--build-dir=*) build_dir=${1#*=}; shift ;;
	--no-image) build_image=0; shift ;;
	--no-start) start=0; shift ;;
	--skip-os-check) os_check=0; shift ;;
	--uninstall) uninstall=1; shift ;;
	--purge) purge=1; shift ;;
	*) bad_usage "unknown argument \"$1\"" ;;
	esac
done

# Paths: the prefix configure gets, and what the unit and docs expect.
prefix=/usr/local
bindir=$prefix/bin
sandboxd=$bindir/sandboxd
unitdir=$prefix/lib/systemd/system
unit=$unitdir/sandboxd.service
wants=/etc/systemd/system/multi-user.target.wants/sandboxd.service
confdir=/etc/sandboxd
conf=$confdir/sandboxd.conf
tlsdir=$confdir/tls
hook=$tlsdir/deploy-hook
data_dir=/var/lib/sandboxd
secret_file=$data_dir/preview-secret
seed_dir=/usr/share/sandboxd/templates/vite-react

# The sd_booted() test: systemd is the init only if this directory exists.
systemd_running() {
	[ -d /run/systemd/system ] && command -v systemctl >/dev/null
}

# --- Arguments and the machine ----------------------------------------------

if [ $purge = 1 ] && [ $uninstall = 0 ]; then
	bad_usage "--purge goes with --uninstall"
fi
if [ $uninstall = 0 ]; then
	[ -n "$domain" ] || bad_usage "--domain is required (the preview domain, e.g. --domain preview.example.com)"
	domain=$(printf '%s' "$domain" | tr '[:upper:]' '[:lower:]')
	check_name --domain "$domain"
	if [ -n "$api_host" ]; then
		api_host=$(printf '%s' "$api_host" | tr '[:upper:]' '[:lower:]')
		check_name --api-host "$api_host"
		case $api_host in
		*.*.$domain) ;;
		*.$domain) bad_usage "--api-host $api_host is a preview name" \
		    "(<id>.$domain are previews): use $domain itself or a name outside it" ;;
		esac
	else
		api_host=$domain
	fi
	case $email in
	''|?*@?*.?*) ;;
	*) bad_usage "--email: \"$email\" is not an e-mail address" ;;
	esac
	case $email in
	*[!A-Za-z0-9@._+-]*) bad_usage "--email: \"$email\" has characters an address does not" ;;
	esac
	# A literal IPv4 or [IPv6] address and a port, as sandboxd.conf takes.
	case $listen in
	\[*\]:*|*.*.*.*:*) ;;
	*) bad_usage "--listen: \"$listen\" is not an address:port (e.g. 0.0.0.0:80, [::]:80)" ;;
	esac
	listen_port=${listen##*:}
	case $listen_port in
	''|*[!0-9]*) bad_usage "--listen: \"$listen\" has no port" ;;
	esac
	[ "$listen_port" -ge 1 ] && [ "$listen_port" -le 65535 ] ||
	    bad_usage "--listen: port $listen_port is not 1-65535"
	case $jobs in
	'') jobs=$(nproc 2>/dev/null || echo 1) ;;
	*[!0-9]*|0) bad_usage "--jobs: \"$jobs\" is not a positive number" ;;
	esac
fi

[ "$(id -u)" = 0 ] || die "run me as root (sudo $0 ...): I install packages, /usr/local, /etc/sandboxd and a systemd unit"

if [ $os_check = 1 ] && [ $uninstall = 0 ]; then
	[ -r /etc/os-release ] || die "cannot read /etc/os-release: is this Debian 12 or Ubuntu 24.04? (--skip-os-check to try anyway)"
	os_id=$(. /etc/os-release && echo "${ID:-}")
	os_version=$(. /etc/os-release && echo "${VERSION_ID:-}")
	case "$os_id $os_version" in
	"debian 12"|"ubuntu 24.04") ;;
	*) die "unsupported OS: $(. /etc/os-release && echo "${PRETTY_NAME:-$os_id $os_version}");" \
	    "this script knows Debian 12 and Ubuntu 24.04 (--skip-os-check to try anyway)" ;;
	esac
fi

# --- Uninstall ----------------------------------------------------------------

if [ $uninstall = 1 ]; then
	instance=
	if [ $purge = 1 ]; then
		# Which containers are this server's: the daemon says (before it
		# goes), or the instance line install.sh wrote in the config.
		if [ -x "$sandboxd" ]; then
			instance=$("$sandboxd" status --json 2>/dev/null |
			    sed -n 's/.*"instance": *"\([A-Za-z0-9_.-]*\)".*/\1/p') || true
		fi
		if [ -z "$instance" ] && [ -f "$conf" ]; then
			instance=$(sed -n 's/^instance *= *\([A-Za-z0-9_.-]*\).*/\1/p' "$conf")
		fi
	fi
	if systemd_running; then
		step "stopping and disabling sandboxd.service"
		systemctl disable --now sandboxd.service 2>/dev/null || true
	else
		step "systemd is not running here: disabling the unit for the next boot"
		rm -f "$wants"
		pid=$(pidof sandboxd 2>/dev/null || true)
		[ -z "$pid" ] || echo "    sandboxd is running (pid $pid), started by hand: stop it with kill $pid"
	fi
	step "removing the program"
	rm -f "$unit" "$sandboxd" "$prefix/share/man/man8/sandboxd.8" \
	    "$prefix/share/man/man5/sandboxd.conf.5"
	rm -rf "$prefix/libexec/sandboxd" "$prefix/share/doc/sandboxd" \
	    "$prefix/share/sandboxd" /usr/share/sandboxd
	systemd_running && systemctl daemon-reload
	if [ $purge = 1 ]; then
		if [ -z "$instance" ]; then
			echo "    (no instance known: sandbox containers, if any, are left to docker)"
		elif ! docker info >/dev/null 2>&1; then
			echo "    Docker does not answer: remove the containers labelled io.sandboxd.instance=$instance yourself"
		else
			step "removing the sandbox containers and network of instance $instance"
			ids=$(docker ps -aq --filter "label=io.sandboxd.instance=$instance")
			# shellcheck disable=SC2086
			[ -z "$ids" ] || docker rm -f $ids >/dev/null
			ids=$(docker network ls -q --filter "label=io.sandboxd.instance=$instance")
			# shellcheck disable=SC2086
			[ -z "$ids" ] || docker network rm $ids >/dev/null || true
		fi
		step "purging $data_dir and $confdir"
		rm -rf "$data_dir" "$confdir"
		echo "    The image sandboxd/base stays: docker rmi sandboxd/base:latest removes it."
	else
		echo "    Kept: $confdir (config, API key hash, TLS) and $data_dir (the store,"
		echo "    workspaces); sandboxes still running keep running. Installing again picks"
		echo "    them up; --uninstall --purge removes them."
	fi
	step "sandboxd is uninstalled"
	exit 0
fi

# --- Packages and the build ---------------------------------------------------

step "packages"
"$top/scripts/install-deps.sh"

build_dir=${build_dir:-$top/build}
upgrade=0
[ -x "$sandboxd" ] && upgrade=1
step "building sandboxd in $build_dir (make -j$jobs)"
if [ ! -x "$top/configure" ]; then
	(cd "$top" && autoreconf -fi >/dev/null 2>&1) || die "autoreconf failed in $top"
fi
mkdir -p "$build_dir"
log=$build_dir/install.log
: >"$log"
if [ ! -f "$build_dir/Makefile" ]; then
	(cd "$build_dir" && "$top/configure" --prefix="$prefix" >>"$log" 2>&1) ||
	    { tail -30 "$log" >&2; die "configure failed (whole log: $log)"; }
fi
# A build directory configured for another prefix would install elsewhere.
bprefix=$(sed -n 's/^prefix = //p' "$build_dir/Makefile")
[ "$bprefix" = "$prefix" ] ||
    die "$build_dir is configured with --prefix=$bprefix, not $prefix: remove it or give --build-dir"
make -C "$build_dir" -j"$jobs" >>"$log" 2>&1 ||
    { tail -30 "$log" >&2; die "the build failed (whole log: $log)"; }
make -C "$build_dir" install >>"$log" 2>&1 ||
    { tail -30 "$log" >&2; die "make install failed (whole log: $log)"; }
[ -x "$sandboxd" ] && [ -f "$unit" ] ||
    die "make install did not install $sandboxd and $unit (is $build_dir configured with --prefix=$prefix?)"
echo "    installed $("$sandboxd" version): $sandboxd, $prefix/libexec/sandboxd/agentd, $unit"

# --- The sandbox image --------------------------------------------------------

if [ $build_image = 1 ]; then
	step "the default sandbox image sandboxd/base (a few minutes the first time)"
	"$top/scripts/start-dockerd.sh"
	"$top/base-image/build.sh" --seed-out "$seed_dir" ||
	    die "the image build failed (see above); --no-image skips it"
else
	step "sandbox image: skipped (--no-image); build it later with base-image/build.sh --seed-out $seed_dir"
fi

# --- Config, key and secrets (never over existing ones) ----------------------

key=
# A key made but not yet shown must not be lost if a later step fails.
show_key() {
	[ -n "$key" ] || return 0
	cat <<TXT

==> THE ADMIN API KEY (shown only now; the config keeps only its SHA-256):

        $key

TXT
	key=
}
trap 'show_key' EXIT
trap 'exit 130' INT TERM

install -d -m 0755 "$confdir"
install -d -m 0711 "$data_dir"
if [ -e "$conf" ]; then
	step "config: keeping $conf as it is"
	# What it says is what the daemon serves: the summary below uses it.
	cfg_domain=$(sed -n 's/^preview_domain *= *\([^ #]*\).*/\1/p' "$conf")
	cfg_host=$(sed -n 's|^public_url *= *[a-z]*://\([^:/ #]*\).*|\1|p' "$conf")
	if [ -n "$cfg_domain" ] && [ "$cfg_domain" != "$domain" ]; then
		echo "    note: it says preview_domain = $cfg_domain; --domain $domain is not applied (edit the config to change it)"
		domain=$cfg_domain
	fi
	if [ -n "$cfg_host" ] && [ "$cfg_host" != "$api_host" ]; then
		echo "    note: its public_url names $cfg_host, not $api_host"
		api_host=$cfg_host
	fi
else
	step "config: writing $conf with a new admin key"
	# --no-store: a 256-bit secret and its hash, nothing written. The config
	# does not exist yet, so this reads the embedded default.
	json=$("$sandboxd" key create --no-store --json admin) ||
	    die "sandboxd key create failed"
	secret=$(printf '%s\n' "$json" | sed -n 's/.*"secret": *"\([0-9a-f]*\)".*/\1/p')
	hash=$(printf '%s\n' "$json" | sed -n 's/.*"secret_hash": *"\([0-9a-f]*\)".*/\1/p')
	[ ${#secret} -eq 64 ] && [ ${#hash} -eq 64 ] || die "sandboxd key create --no-store --json gave no key"
	scheme_port=
	[ "$listen_port" = 80 ] || scheme_port=":$listen_port"
	# The label of this server's containers, derived from data_dir as the
	# daemon does; written out so that it stays if data_dir moves and so
	# that --purge finds the containers once the program is gone.
	tmp=$conf.tmp.$$
	printf 'data_dir = %s\n' "$data_dir" >"$tmp"
	instance=$("$sandboxd" status --json -c "$tmp" 2>/dev/null |
	    sed -n 's/.*"instance": *"\([A-Za-z0-9_.-]*\)".*/\1/p') || true
	rm -f "$tmp"
	[ -n "$instance" ] || die "sandboxd status gave no instance"
	tmp=$conf.tmp.$$
	(umask 077 && cat >"$tmp") <<CONF
# sandboxd.conf, written by scripts/install.sh on $(date -u +%Y-%m-%d).
# Every key: man sandboxd.conf (5) or docs/config.md. Check a change with
# "sandboxd check-config", then "systemctl restart sandboxd".

listen         = $listen
data_dir       = $data_dir
preview_secret_file = $secret_file
preview_domain = $domain
public_url     = http://$api_host$scheme_port
# The label on this server's containers (the default, derived from
# data_dir; keep it if data_dir moves).
instance       = $instance

# TLS, once the certificate is in $tlsdir (docs/tls.md; install.sh printed
# the certbot command): uncomment these, make public_url https:// and
# restart. The deploy hook reloads renewed certificates (SIGHUP).
#tls_listen     = 0.0.0.0:443
#tls_listen     = [::]:443
#tls_cert       = $tlsdir/fullchain.pem
#tls_key        = $tlsdir/privkey.pem
#redirect_https = true

# No [template]: the built-in "default" one, sandboxd/base:latest with the
# Vite + React starter (docs/base-image.md).

# The admin key, shown once by install.sh. This file keeps only the SHA-256
# of its secret. More keys: sandboxd key create TENANT.
[api_key admin]
secret_hash = sha256:$hash
admin       = true
CONF
	mv "$tmp" "$conf"
	key=$secret
	unset secret json
fi
chmod 0600 "$conf"

if [ -e "$secret_file" ]; then
	step "preview secret: keeping $secret_file"
else
	step "preview secret: writing $secret_file (32 random bytes, 0600)"
	tmp=$secret_file.tmp.$$
	(umask 077 && head -c 32 /dev/urandom >"$tmp") && mv "$tmp" "$secret_file"
fi

install -d -m 0700 "$tlsdir"
if [ ! -e "$hook" ]; then
	tmp=$hook.tmp.$$
	cat >"$tmp" <<'HOOK'
#!/bin/sh
# certbot's --deploy-hook for sandboxd (docs/tls.md), written by install.sh:
# puts a new or renewed certificate where sandboxd.conf names it and makes
# the daemon load it (SIGHUP: no connection is dropped).
# certbot sets RENEWED_LINEAGE to /etc/letsencrypt/live/<name>.
set -e
install -m 644 "$RENEWED_LINEAGE/fullchain.pem" /etc/sandboxd/tls/fullchain.pem
install -m 600 "$RENEWED_LINEAGE/privkey.pem" /etc/sandboxd/tls/privkey.pem
if [ -d /run/systemd/system ]; then
	systemctl reload sandboxd || true
else
	pid=$(pidof sandboxd) && kill -HUP $pid || true
fi
HOOK
	chmod 0755 "$tmp"
	mv "$tmp" "$hook"
fi

step "checking the config"
"$sandboxd" check-config -c "$conf" ||
    die "$conf has errors (above): fix them, then run me again"

# --- The service --------------------------------------------------------------

service_state=
if systemd_running; then
	step "systemd: enabling docker.service and sandboxd.service"
	systemctl daemon-reload
	systemctl enable --quiet docker.service 2>/dev/null || true
	systemctl enable --quiet sandboxd.service
	if [ $start = 1 ]; then
		systemctl start docker.service ||
		    die "docker.service does not start: systemctl status docker"
		if [ $upgrade = 1 ]; then
			step "restarting sandboxd on the new build (sandboxes keep running)"
			systemctl restart sandboxd.service || true
		else
			step "starting sandboxd"
			systemctl start sandboxd.service || true
		fi
		systemctl is-active --quiet sandboxd.service ||
		    die "sandboxd did not start: systemctl status sandboxd; journalctl -u sandboxd"
		service_state="running (systemctl status sandboxd)"
	else
		step "service start: skipped (--no-start): systemctl start sandboxd"
		service_state="enabled, not started (--no-start): systemctl start sandboxd"
	fi
else
	# A container, a chroot or an init other than systemd: the unit is in
	# place for a systemd boot; until then the daemon runs by hand.
	init=$(cat /proc/1/comm 2>/dev/null || echo unknown)
	mkdir -p "$(dirname "$wants")"
	ln -sf "$unit" "$wants"
	step "systemd is not running here (PID 1 is $init): the service is not started"
	cat <<TXT
    The unit is installed and enabled for the next boot under systemd:
        $unit
    To run sandboxd now, by hand:
        $top/scripts/start-dockerd.sh
        setsid $sandboxd serve >>/var/log/sandboxd.log 2>&1 < /dev/null &
TXT
	[ $start = 1 ] || echo "    (--no-start: it would not have been started anyway)"
	service_state="not started: systemd is not running (see above)"
fi

# --- What to do next ----------------------------------------------------------

addr=
if command -v ip >/dev/null; then
	addr=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
fi
[ -n "$addr" ] || addr=$(hostname -I 2>/dev/null | awk '{print $1}')
[ -n "$addr" ] || addr="<this server's public IPv4 address>"
if [ -n "$email" ]; then
	acct="-m $email --agree-tos"
else
	acct="--register-unsafely-without-email --agree-tos"
fi
if [ "$api_host" = "$domain" ]; then
	names="-d '*.$domain' -d $domain"
else
	names="-d '*.$domain' -d $api_host"
fi
url=$(sed -n 's/^public_url *= *//p' "$conf")
# Previews are reached with public_url's scheme and port.
case $url in
https://*) preview="https://<id>.$domain" ;;
*) preview="http://<id>.$domain" ;;
esac
hostport=${url#*://}
case $hostport in
*:*) preview="$preview:${hostport##*:}" ;;
esac

cat <<TXT

==> sandboxd is installed. Service: $service_state
    API:      $url   (as configured in $conf)
    Console:  $url/console/   (sign in with the API key)
    Previews: $preview/
    Config:   $conf        Data: $data_dir
TXT
case $url in
http://*) echo "    Until TLS is set up (below), the API and its key travel in clear: plain HTTP." ;;
esac
if [ -n "$key" ]; then
	show_key
	echo "    Try it:   curl -s -X POST -H \"Authorization: Bearer <the key>\" $url/v1/sandboxes"
else
	cat <<TXT
    API key:  the admin key is the one shown when the config was first written
              (it is not kept anywhere in clear). A new one, any time:
              $sandboxd key create admin
TXT
fi
cat <<TXT

==> DNS: create these records at your DNS provider (the address found here is
    $addr; use the server's public address if that is not it):

TXT
printf '        %-30s A    %s\n' "$api_host." "$addr" "*.$domain." "$addr"
[ "$api_host" = "$domain" ] || echo "        (and $domain itself needs no record)"
cat <<TXT

    (plus AAAA records with its IPv6 address, if it has one). Check with
    dig +short test.$domain and dig +short $api_host.

==> TLS: a wildcard certificate for *.$domain. Let's Encrypt issues wildcards
    only over the DNS-01 challenge, so certbot needs your DNS provider's API
    (docs/tls.md has the details). With Cloudflare, say:

        apt-get install certbot python3-certbot-dns-cloudflare
        install -d -m 700 /root/.secrets
        printf 'dns_cloudflare_api_token = %s\n' "\$TOKEN" > /root/.secrets/cloudflare.ini
        chmod 600 /root/.secrets/cloudflare.ini
        certbot certonly --dns-cloudflare \\
            --dns-cloudflare-credentials /root/.secrets/cloudflare.ini \\
            $names \\
            $acct \\
            --deploy-hook $hook

    (other providers: python3-certbot-dns-route53, -rfc2136, -digitalocean,
    ...; the same command with their --dns-<provider> options). The deploy
    hook, already in place, copies the pair to $tlsdir/fullchain.pem and
    $tlsdir/privkey.pem and reloads sandboxd (systemctl reload: SIGHUP),
    after the first issuance and after every renewal (certbot.timer renews).
    Then, once: uncomment the tls_ lines and redirect_https in $conf,
    set public_url = https://$api_host, and
        sandboxd check-config && systemctl restart sandboxd
TXT
