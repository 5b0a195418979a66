#!/bin/sh
# Make sure a Docker engine answers on /var/run/docker.sock: through systemd
# where it runs, else by starting dockerd in the background.
set -eu
if docker info >/dev/null 2>&1; then
	exit 0
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
	systemctl start docker || true
fi
if ! docker info >/dev/null 2>&1; then
	echo "==> starting dockerd (log: /var/log/sandboxd-dockerd.log)"
	setsid dockerd >>/var/log/sandboxd-dockerd.log 2>&1 < /dev/null &
fi
i=0
until docker info >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 120 ]; then
		echo "dockerd did not start; see /var/log/sandboxd-dockerd.log" >&2
		exit 1
	fi
	sleep 0.5
done
echo "==> dockerd is running"
