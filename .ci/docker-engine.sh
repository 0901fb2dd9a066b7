# Sourced by .ci/run. `start_docker_engine` makes a Docker engine answer for the container
# tests: as root with apt-get it installs Debian's docker.io, debootstrap (for the local base
# image: no registry is reachable) and docker-compose where they are missing, then starts dockerd
# unless one already answers. It returns non-zero, having said why, when no engine can run here;
# the container tests then skip with the reason. `stop_docker_engine` stops a dockerd that it
# started, and no other.

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/study-query-llm-dockerd.log}
DOCKERD_PID=

start_docker_engine() {
    local began=$SECONDS missing=() flags pid
    if docker info >/dev/null 2>&1; then
        echo "docker engine: already running"
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "note: not root with apt-get: no Docker engine is installed or started here"
        return 1
    fi
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]} (apt-get)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null; } || echo "note: apt-get could not install ${missing[*]}"
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        echo "note: no dockerd"
        return 1
    fi
    # With Docker's own iptables rules first; where the kernel lacks what they need, without
    # them: ports published on 127.0.0.1 still work (docker-proxy), and that is all the tests use.
    for flags in "" "--iptables=false"; do
        # shellcheck disable=SC2086  # no flags at all is the first try
        dockerd $flags >>"$DOCKERD_LOG" 2>&1 &
        pid=$!
        for _ in $(seq 60); do
            if docker info >/dev/null 2>&1; then
                DOCKERD_PID=$pid
                echo "docker engine: dockerd ${flags:-(defaults)} ready after $((SECONDS - began)) s (log: $DOCKERD_LOG)"
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "note: dockerd ${flags:-(defaults)} did not start; the end of $DOCKERD_LOG:"
        tail -n 5 "$DOCKERD_LOG"
    done
    return 1
}

stop_docker_engine() {
    if [ -n "$DOCKERD_PID" ]; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        wait "$DOCKERD_PID" 2>/dev/null || true
    fi
}
