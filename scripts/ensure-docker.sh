#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine (install Debian's docker.io and start dockerd
# if needed), then make sure the offline image hookdeploy-nginx:local exists.
# A fast no-op when both are already there. Leaves dockerd running.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly LOG=/var/log/hookdeploy-dockerd.log
readonly WAIT_SECONDS=${HOOKDEPLOY_DOCKERD_WAIT:-60}
# dockerd and iptables live in sbin, which a CI shell's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

fail() {
    echo "ensure-docker: $*" >&2
    exit 1
}

engine_answers() {
    timeout 20 docker info >/dev/null 2>&1
}

need_root() {
    [[ $EUID -eq 0 ]] || fail "$1 needs root; run this script as root (or start the Docker engine yourself)"
}

install_engine() {
    need_root "installing docker.io"
    echo "ensure-docker: installing docker.io (dockerd, containerd, runc, iptables) with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    # docker.io pulls in containerd, runc, tini and iptables; nothing from Recommends is needed.
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends docker.io iptables >/dev/null
    command -v dockerd >/dev/null || fail "docker.io is installed but dockerd is not on PATH"
}

start_engine() {
    need_root "starting dockerd"
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        # Under systemd the unit owns dockerd; a second, hand-started one would fight it.
        systemctl start docker.service || true
        return
    fi
    if pgrep -x dockerd >/dev/null; then
        return   # another run started it and it is still coming up
    fi
    echo "ensure-docker: starting dockerd (log: $LOG)"
    echo "=== dockerd started by $0 at $(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$LOG"
    # setsid + nohup: dockerd outlives this script and its session. It must not inherit fd 9,
    # the lock below, or every later run would wait for dockerd to exit.
    setsid nohup dockerd >>"$LOG" 2>&1 </dev/null 9>&- &
}

show_log_tail() {
    # dockerd's gRPC chatter hides the line that says why it stopped.
    grep -v 'module=grpc' "$LOG" 2>/dev/null | tail -n 12 >&2 || true
}

wait_for_engine() {
    local deadline=$((SECONDS + WAIT_SECONDS))
    until engine_answers; do
        if ((SECONDS >= deadline)); then
            echo "ensure-docker: the Docker engine did not answer within ${WAIT_SECONDS}s; see $LOG, which ends with:" >&2
            show_log_tail
            exit 1
        fi
        if ! pgrep -x dockerd >/dev/null && ! [[ -d /run/systemd/system ]]; then
            echo "ensure-docker: dockerd exited while starting; see $LOG, which ends with:" >&2
            show_log_tail
            exit 1
        fi
        sleep 0.5
    done
}

if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null || ! engine_answers; then
    # Two test runs at once must not both install or both start dockerd.
    exec 9>"/tmp/hookdeploy-ensure-docker.lock"
    flock -w 600 9 || fail "could not get /tmp/hookdeploy-ensure-docker.lock"
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        install_engine
    fi
    if ! engine_answers; then
        start_engine
        wait_for_engine
    fi
    driver=$(docker info --format '{{.Driver}}')
    version=$(docker info --format '{{.ServerVersion}}')
    echo "ensure-docker: Docker engine $version answers (storage driver $driver)"
    if [[ "$driver" == vfs ]]; then
        echo "ensure-docker: warning: storage driver vfs copies every layer; builds will be slow" >&2
    fi
    exec 9>&-
fi

"$here/build-nginx-image.sh"
