#!/bin/sh
# make check entry for the black-box scenarios (real dockerd, real containers):
# test_sandboxd.py (the API, files, lifecycle), test_files.py (file
# reads, listings and writes off the loop: slow clients, memory, caps,
# bodies cut off), test_density.py (wake,
# idleness, pause, eviction), test_private.py (private previews, cookie
# and port hygiene, error pages), test_egress.py (network isolation;
# needs root, nft and ip), test_ops.py (the service: sd_notify, keys,
# status, backups under load, the unit's restrictions, make install),
# test_install.py (scripts/install.sh in a fresh Debian 12 root filesystem
# made with mmdebstrap, run with chroot: install, re-run, uninstall, purge;
# then booted with systemd-nspawn: the service under a real systemd),
# test_tls.py (TLS termination, SNI, reload, redirect_https, testssl),
# test_h2.py (HTTP/2, plain and over TLS), test_defenses.py (slowloris,
# slow read, body rates, connection caps), test_tasks.py (agent tasks,
# their events), test_dev.py (the dev server: logs, restart-dev, dev_server),
# test_terminal.py (the terminal's WebSocket), test_agentd.py (nothing in a
# sandbox poses as its agentd; exec output and requests at once capped),
# test_secrets.py (no secret
# in any log), test_openapi.py (docs/openapi.yaml walked against the
# daemon, and the route table against the file), test_limits.py (a fork
# bomb, a memory hog and a disk filler in one sandbox; the disk ceiling; a
# full data disk on a loop-mounted ext4), test_browser.py (headless
# Chromium and the Vite starter app over h2 and TLS), test_faults.py
# (kill -9 mid-create, a dockerd restart, containers killed or removed
# behind the daemon's back, SIGSTOP for 30 s), test_metrics.py
# (/metrics after real traffic, promtool, the access log and its reopen
# on SIGHUP), test_sdk_python.py (the Python SDK in clients/python: its
# unittest suite against a real daemon, and the example app builder),
# test_provider.py (the credential proxy against a fake TLS provider, from
# inside real sandboxes; needs root, nft and openssl),
# test_console.py (the console's files as the daemon serves them, and the
# console end to end in headless Chromium) and test_sdk_typescript.py
# (clients/typescript built with npm ci and tsc, its node --test suite
# against a daemon).
# Each prints "N passed, N failed"; the last line here is their sum. Exit
# 77 (skip) only if all skip, else 1 if any fails.
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp "${TMPDIR:-/tmp}/sbx-blackbox.XXXXXX")
trap 'rm -f "$out"' EXIT INT TERM
status=0; skipped=0; total_p=0; total_f=0
tests="test_sandboxd.py test_files.py test_density.py test_private.py test_egress.py test_ops.py test_install.py test_tls.py test_h2.py test_defenses.py test_tasks.py test_dev.py test_terminal.py test_agentd.py test_secrets.py test_openapi.py test_limits.py test_browser.py test_faults.py test_metrics.py test_provider.py test_sdk_python.py test_console.py test_sdk_typescript.py"
for t in $tests; do
	echo "==> $t"
	start=$(date +%s)
	python3 "$here/$t" >"$out" 2>&1
	rc=$?
	cat "$out"
	# How long each scenario took, so the suite's time can be watched.
	echo "<== $t: $(($(date +%s) - start)) s, exit $rc"
	case $rc in
	0) ;;
	77) skipped=$((skipped + 1)) ;;
	*) status=1 ;;
	esac
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -1)
	if [ -n "$line" ]; then
		p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
		total_p=$((total_p + p)); total_f=$((total_f + f))
	elif [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
		total_f=$((total_f + 1))
	fi
done
[ $skipped -eq $(echo $tests | wc -w) ] && exit 77
echo "$total_p passed, $total_f failed"
exit $status
