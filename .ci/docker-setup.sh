#!/usr/bin/env bash
# Make a Docker Engine answer on this machine, idempotently: install docker.io from Debian when dockerd is
# missing, start dockerd in the background when the socket does not answer, wait until `docker info` works.
# The daemon runs with no bridge and no iptables: grading containers use network_mode=none, so the engine
# needs no networking of its own (and this machine may not allow it).
set -euo pipefail

LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
WAIT_S="${DOCKER_WAIT_S:-60}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_retry() {
    # Another apt (a concurrent setup script) may hold the dpkg lock: wait for it instead of failing.
    local tries=0
    until as_root env DEBIAN_FRONTEND=noninteractive "$@"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 30 ]; then echo "docker-setup: '$*' kept failing" >&2; return 1; fi
        echo "docker-setup: '$*' failed (dpkg lock held?); retrying in 10 s" >&2
        sleep 10
    done
}

install_engine() {
    if command -v dockerd >/dev/null 2>&1; then return 0; fi
    echo "docker-setup: installing docker.io (dockerd not found)"
    apt_retry apt-get update -q
    apt_retry apt-get install -y -q --no-install-recommends docker.io
}

engine_answers() {
    docker info >/dev/null 2>&1
}

start_engine() {
    if engine_answers; then return 0; fi
    local pidfile=/var/run/docker.pid
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        as_root rm -f "$pidfile"  # left by a daemon that died: dockerd refuses to start while it exists
    fi
    echo "docker-setup: starting dockerd (log: $LOG)"
    # setsid + nohup: the daemon outlives this script and the shell that ran it.
    as_root setsid nohup dockerd --bridge=none --iptables=false --ip-forward=false >"$LOG" 2>&1 < /dev/null &
}

wait_for_engine() {
    local waited=0
    until engine_answers; do
        if [ "$waited" -ge "$WAIT_S" ]; then
            echo "docker-setup: dockerd did not answer within ${WAIT_S} s; last lines of $LOG:" >&2
            tail -n 30 "$LOG" >&2 || true
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "docker-setup: engine up: $(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}')"
}

install_engine
start_engine
wait_for_engine
