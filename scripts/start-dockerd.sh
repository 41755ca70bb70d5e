#!/bin/sh
# Start a Docker engine for labkit's docker runtime, unless one already answers.
#
# Idempotent: if `docker info` works, nothing is done. Otherwise dockerd is
# started in the background (log: $LABKIT_DOCKERD_LOG, default
# /var/log/labkit-dockerd.log) and we wait up to $LABKIT_DOCKERD_TIMEOUT
# seconds (default 60) for `docker info` to succeed.
#
# labkit only runs containers with network_mode none (it wires their
# namespaces itself), so the engine is started without a default bridge and
# without touching the host's iptables: a lab's host-access and other labs'
# forwarding keep working. Set LABKIT_DOCKERD_ARGS to override those flags.
set -eu

LOG=${LABKIT_DOCKERD_LOG:-/var/log/labkit-dockerd.log}
TIMEOUT=${LABKIT_DOCKERD_TIMEOUT:-60}
ARGS=${LABKIT_DOCKERD_ARGS:---bridge=none --iptables=false --ip6tables=false}

if docker info >/dev/null 2>&1; then
    echo "start-dockerd: Docker engine already running"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "start-dockerd: dockerd not found: install docker.io (apt-get install docker.io)" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "start-dockerd: must run as root to start dockerd" >&2
    exit 1
fi

pidfile=/var/run/docker.pid
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    pid=$(cat "$pidfile")
    echo "start-dockerd: dockerd (pid $pid) is running but not answering yet; waiting"
else
    mkdir -p "$(dirname "$LOG")"
    echo "start-dockerd: starting dockerd $ARGS (log: $LOG)"
    # shellcheck disable=SC2086  # ARGS is a list of flags
    nohup dockerd $ARGS >>"$LOG" 2>&1 </dev/null &
    pid=$!
fi

i=0
while [ "$i" -lt "$TIMEOUT" ]; do
    if docker info >/dev/null 2>&1; then
        echo "start-dockerd: Docker engine ready after ${i}s (dockerd pid $pid)"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "start-dockerd: dockerd exited; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
    sleep 1
    i=$((i + 1))
done

echo "start-dockerd: Docker engine not ready after ${TIMEOUT}s; last lines of $LOG:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
