#!/usr/bin/env bash
# The end-to-end demo: a sample site in git, `git push`, the site live on a local port, then a
# second push switched in with zero downtime while a load generator hits the site.
#
# Usage: scripts/demo.sh           run the demo (installs what is missing, as scripts/test.sh does)
#        scripts/demo.sh --swarm   the same story on a 3-node Docker Swarm on this machine
#                                  (scripts/cluster.sh up): 3 tasks a release, spread over the nodes
#        scripts/demo.sh --stop    stop the demo's worker and remove its containers and files (both
#                                  demos; the swarm's services too, but the cluster stays up)
# Env:   DEMO_PORT (default 8088), DEMO_DIR (default ./.demo)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
port=${DEMO_PORT:-8088}
demo=${DEMO_DIR:-$root/.demo}
instance=hookdeploy-demo
hookdeploy="$root/.venv/bin/hookdeploy"
cluster_env=${HOOKDEPLOY_CLUSTER_STATE:-/var/lib/hookdeploy-cluster}/cluster.env

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

usage() { sed -n '5,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

swarm=0 stop=0
for argument in "$@"; do
    case "$argument" in
        --swarm) swarm=1 ;;
        --stop) stop=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

# One value of the file scripts/cluster.sh up writes, read in a subshell (it sets DOCKER_HOST,
# which must not leak into this script's own docker commands: those talk to the host engine).
cluster_value() { (set +u; . "$cluster_env"; printf '%s' "${!1}"); }

# The docker CLI against the swarm manager's engine.
manager_docker() { DOCKER_HOST=$(cluster_value DOCKER_HOST) docker "$@"; }

# What a stop could not remove, each with the engine's reason; a stop goes on with the rest and
# says these at the end (under set -e one failed removal used to end it at once, and silently).
not_removed=()

# Run a removal (its output dropped); if it fails, note `what` and the first line of its error.
try_remove() {
    local what=$1 error
    shift
    if ! error=$("$@" 2>&1 >/dev/null); then
        not_removed+=("$what: $(printf '%s\n' "$error" | head -n 1)")
    fi
}

# The swarm demo's services (their tasks first, as they hold the overlay network), its proxy,
# images (on every node: workers keep what they pulled), network and state; the cluster stays.
stop_swarm_demo() {
    [[ -f "$cluster_env" ]] || return 0
    local node leftovers=() images=()
    if ! DOCKER_HOST=$(cluster_value DOCKER_HOST) timeout 10 docker info >/dev/null 2>&1; then
        not_removed+=("the swarm demo's services, containers and images: the cluster's manager does not answer")
        return 0
    fi
    mapfile -t leftovers < <(manager_docker service ls -q --filter "label=hookdeploy.instance=$instance")
    if ((${#leftovers[@]})); then
        try_remove "the demo's swarm services" manager_docker service rm "${leftovers[@]}"
    fi
    mapfile -t leftovers < <(manager_docker ps -aq --filter "label=hookdeploy.instance=$instance")
    if ((${#leftovers[@]})); then  # the proxy, on the overlay network too
        try_remove "the demo's containers on the manager" manager_docker rm -f "${leftovers[@]}"
    fi
    for _ in $(seq 60); do  # Swarm lets go of the overlay once the tasks are gone
        manager_docker network inspect "$instance" >/dev/null 2>&1 || break
        manager_docker network rm "$instance" >/dev/null 2>&1 || sleep 0.5
    done
    if manager_docker network inspect "$instance" >/dev/null 2>&1; then
        not_removed+=("the swarm network $instance: still in use after 30 s")
    fi
    for node in $(cluster_value NODES); do
        # A removed service's task containers take a while to stop on each node, and an image
        # cannot be removed while a container of it is there (not even with -f): remove them first.
        for _ in $(seq 60); do
            mapfile -t leftovers < <(docker exec "$node" docker ps -aq --filter "label=hookdeploy.instance=$instance" 2>/dev/null)
            ((${#leftovers[@]})) || break
            docker exec "$node" docker rm -f "${leftovers[@]}" >/dev/null 2>&1 || sleep 0.5
        done
        mapfile -t images < <(docker exec "$node" docker images -q --filter "label=hookdeploy.instance=$instance" 2>/dev/null | sort -u)
        if ((${#images[@]})); then
            try_remove "the demo's images on $node" docker exec "$node" docker rmi -f "${images[@]}"
        fi
    done
    rm -rf "$(cluster_value SHARED_DIR)/$instance"
}

stop_demo() {
    if [[ -f "$demo/worker.pid" ]]; then
        kill "$(cat "$demo/worker.pid")" 2>/dev/null || true
        rm -f "$demo/worker.pid"
    fi
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        mapfile -t leftovers < <(docker ps -aq --filter "label=hookdeploy.instance=$instance")
        if ((${#leftovers[@]})); then
            try_remove "the demo's containers" docker rm -f "${leftovers[@]}"
        fi
        mapfile -t images < <(docker images -q --filter "label=hookdeploy.instance=$instance" | sort -u)
        if ((${#images[@]})); then
            try_remove "the demo's images" docker rmi -f "${images[@]}"
        fi
        docker network rm "$instance" >/dev/null 2>&1 || true
        stop_swarm_demo
    fi
    rm -rf "$demo"
}

# Say what a stop left behind, if anything (on stderr); false if it left something.
report_not_removed() {
    ((${#not_removed[@]})) || return 0
    echo "demo.sh: could not remove:" >&2
    printf '  %s\n' "${not_removed[@]}" >&2
    not_removed=()
    return 1
}

if ((stop)); then
    stop_demo
    if ! report_not_removed; then
        echo "demo.sh: the demo is stopped; run scripts/demo.sh --stop again to remove what is left" >&2
        exit 1
    fi
    echo "demo stopped and removed"
    if [[ -f "$cluster_env" ]]; then
        echo "the swarm cluster is still up (other work may use it); take it down: scripts/cluster.sh down"
    fi
    exit 0
fi

say "Installing what is missing (tools, virtualenv, Docker engine, offline nginx image)"
bash scripts/ensure-tools.sh
bash scripts/ensure-venv.sh
bash scripts/ensure-docker.sh
if ((swarm)); then
    say "scripts/cluster.sh up (a manager and two workers, nested engines, and a registry)"
    bash scripts/cluster.sh up
fi
stop_demo  # start from a clean slate
report_not_removed || echo "demo.sh: going on; the demo makes what it needs anew" >&2
mkdir -p "$demo"

# Where the site answers, and what the swarm demo adds to the config: releases as services of
# 3 tasks, pushed to the cluster's registry; the state in the folder the manager shares, so the
# proxy the worker starts on the manager sees its conf.d (hookdeploy itself would run on the
# manager in a real deployment).
address=127.0.0.1 state_dir=state site_keys="" registry=""
if ((swarm)); then
    address=$(cluster_value MANAGER_IP)
    state_dir=$(cluster_value SHARED_DIR)/$instance/state
    site_keys=$'\ntarget = "swarm"\nreplicas = 3'
    registry="

[registry]
url = \"$(cluster_value REGISTRY)\"
username = \"$(cluster_value REGISTRY_USERNAME)\"
password_file = \"$(cluster_value REGISTRY_PASSWORD_FILE)\"
insecure = true                    # the test rig's registry speaks plain HTTP"
fi

cat >"$demo/deploy.toml" <<TOML
[server]
name = "$instance"
state_dir = "$state_dir"
listen = "127.0.0.1:8089"

[proxy]
image = "hookdeploy-nginx:local"   # built offline; with a registry: nginx:stable-alpine
publish = "$address:$port"

[apps.site]
repo = "git/site.git"
branch = "deploy"
drain_seconds = 2.0$site_keys

[apps.site.health]
path = "/"
contains = "hookdeploy demo"
interval = 0.1$registry
TOML
export HOOKDEPLOY_CONFIG="$demo/deploy.toml"

say "hookdeploy init-repo site"
"$hookdeploy" init-repo site

if ((swarm)); then
    say "Starting the worker with DOCKER_HOST=$(cluster_value DOCKER_HOST) (log: $demo/worker.log)"
    DOCKER_HOST=$(cluster_value DOCKER_HOST) setsid "$hookdeploy" worker >"$demo/worker.log" 2>&1 </dev/null &
else
    say "Starting the worker (log: $demo/worker.log)"
    setsid "$hookdeploy" worker >"$demo/worker.log" 2>&1 </dev/null &
fi
echo $! >"$demo/worker.pid"
sleep 1

say "A sample site, in git, with a Dockerfile"
site="$demo/site"
mkdir -p "$site"
git -C "$site" init -q -b deploy
cat >"$site/Dockerfile" <<'DOCKERFILE'
FROM hookdeploy-nginx:local
COPY index.html /usr/share/nginx/html/index.html
DOCKERFILE
write_page() {
    printf '<!doctype html><title>hookdeploy demo</title><h1>hookdeploy demo: %s</h1>\n' "$1" >"$site/index.html"
}
commit() { git -C "$site" -c user.name=demo -c user.email=demo@localhost commit -q -am "$1"; }
write_page "version 1"
git -C "$site" add -A
commit "version 1"
git -C "$site" remote add production "$demo/git/site.git"

say "git push production deploy"
git -C "$site" push production deploy
say "curl http://$address:$port/"
curl -si "http://$address:$port/" | grep -E '^(HTTP|X-Hookdeploy-Release)|<h1>'

if ((swarm)); then
    service=$(manager_docker service ls --filter "label=hookdeploy.instance=$instance" --format '{{.Name}}')
    say "docker service ps $service   (DOCKER_HOST=$(cluster_value DOCKER_HOST))"
    manager_docker service ps --filter desired-state=running --format '{{.Node}}  {{.Name}}  {{.CurrentState}}' "$service"
    say "The proxy's upstream: the tasks' addresses on the overlay network $instance"
    grep -E '^ *server [0-9]' "$state_dir/proxy/conf.d/app-site.conf"
fi

write_page "version 2"
commit "version 2"
if ((swarm)); then
    # A swarm release takes longer than 12 s (build, push, 3 tasks pulled and checked), so the load
    # runs until the push has returned (the old service drained and removed) and a moment after.
    say "Version 2, pushed while hey sends steady load at the site until the old release is gone"
    hey -z 10m -c 8 -q 50 "http://$address:$port/" >"$demo/hey.txt" &
    load=$!
    sleep 2
    git -C "$site" push production deploy
    sleep 2
    kill -INT "$load"
else
    say "Version 2, pushed while hey sends steady load at the site for 12 s"
    hey -z 12s -c 8 -q 50 "http://$address:$port/" >"$demo/hey.txt" &
    load=$!
    sleep 2
    git -C "$site" push production deploy
fi
wait "$load"
say "What the load generator saw during the switch"
sed -n '/Status code distribution/,$p' "$demo/hey.txt"
if grep -q "Error distribution" "$demo/hey.txt" ||
    sed -n '/Status code distribution/,$p' "$demo/hey.txt" | grep -Eq '^ +\[[^2][0-9][0-9]\]'; then
    echo "demo: requests failed during the switch (see above)" >&2
    exit 1
fi
echo "zero failed requests"

say "curl http://$address:$port/"
curl -si "http://$address:$port/" | grep -E '^(HTTP|X-Hookdeploy-Release)|<h1>'
if ((swarm)); then
    say "docker service ls   (the old release's service is gone)"
    manager_docker service ls --filter "label=hookdeploy.instance=$instance"
fi
say "hookdeploy history site"
"$hookdeploy" history site

if ((swarm)); then
    cat <<DONE

The site is live at http://$address:$port/ (3 tasks on the swarm, behind the proxy on the
manager) and the worker keeps running. Try:
  export HOOKDEPLOY_CONFIG=$demo/deploy.toml DOCKER_HOST=$(cluster_value DOCKER_HOST)
  $hookdeploy rollback site --wait     # back to version 1
  docker service ls; docker service ps SERVICE
  (cd $site && edit index.html && git commit -am v3 && git push production deploy)
Stop and remove the demo: scripts/demo.sh --stop   (the cluster stays up: scripts/cluster.sh down)
DONE
    exit 0
fi

cat <<DONE

The site is live at http://127.0.0.1:$port/ and the worker keeps running. Try:
  export HOOKDEPLOY_CONFIG=$demo/deploy.toml
  $hookdeploy rollback site --wait     # back to version 1
  $hookdeploy status
  (cd $site && edit index.html && git commit -am v3 && git push production deploy)
Stop and remove everything: scripts/demo.sh --stop
DONE
