#!/usr/bin/env bash
# A real 3-node Docker Swarm on this one machine, for the tests of the swarm target: a manager and two
# workers, each a dockerd running inside a container of the host engine (a nested engine), plus a
# Distribution registry with htpasswd auth on the manager that every node pulls from.
#
#   scripts/cluster.sh up       build the node image once, start the nodes, make the swarm (idempotent)
#   scripts/cluster.sh status   the nodes, the registry, how to reach the manager; exit 0 only if all is well
#   scripts/cluster.sh down     remove every container, volume, network and file `up` made (idempotent)
#   scripts/cluster.sh image    only build the node image (tests/buildhost_helpers.py's build host uses it too)
#   scripts/cluster.sh kill-node NODE     NODE stops answering, as a node that lost power looks to the
#                                         others: its network goes down and every process in it is frozen
#   scripts/cluster.sh revive-node NODE   undo kill-node: it thaws, its network comes back, it rejoins
#                                         (`up` revives killed nodes too)
#
# Run as root, next to a working host engine (scripts/ensure-docker.sh) that has hookdeploy-nginx:local.
#
# What `up` makes, all named hdcluster* (containers, volumes and the network also carry the label
# hdcluster.rig=1), so `down` removes exactly that:
#   - the image hookdeploy-node:local: Debian 12 (debootstrap, offline but for Debian's apt mirror) with
#     docker.io, docker-registry, apache2-utils, curl, iproute2 and openssh-server (for the build host
#     rig: tests/buildhost_helpers.py); built only when missing;
#   - the bridge network hdcluster on the host engine; the nodes hdcluster-manager, hdcluster-worker1 and
#     hdcluster-worker2 on it, each with its own volume for /var/lib/docker (hdcluster-NODE-docker);
#   - a swarm: the manager advertises its bridge address, the workers join with the worker token;
#   - docker-registry on the manager at MANAGER_IP:5000, plain HTTP, htpasswd (bcrypt) auth, storage
#     on the volume hdcluster-registry; every node's dockerd trusts the bridge subnet as insecure;
#   - the attachable overlay network hdcluster (use endpoint mode dnsrr: this kernel has no ip_vs,
#     so neither the ingress routing mesh nor service VIPs answer; reach tasks at their own addresses);
#   - hookdeploy-nginx:local loaded into the manager (builds FROM it work there) and pushed once to
#     the registry as MANAGER_IP:5000/hookdeploy-nginx:local (workers pull it from there);
#   - the state dir /var/lib/hookdeploy-cluster (HOOKDEPLOY_CLUSTER_STATE overrides): cluster.env
#     (KEY=VALUE lines, see write_state) and registry-password (mode 600), and its folder shared/,
#     bind-mounted into the manager at the same path (state for a hookdeploy on this host: see SHARED_DIR).
#
# The manager's engine listens on tcp://MANAGER_IP:2375 WITHOUT TLS or auth: acceptable only because
# the address is on a private bridge of this machine and the whole thing is a throwaway test rig.
# hookdeploy talks to it with DOCKER_HOST=tcp://MANAGER_IP:2375 (printed by up and status).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

readonly PREFIX=hdcluster
readonly LABEL=hdcluster.rig=1
readonly NETWORK=$PREFIX
readonly OVERLAY=$PREFIX
readonly MANAGER=$PREFIX-manager
readonly WORKERS=("$PREFIX-worker1" "$PREFIX-worker2")
readonly NODES=("$MANAGER" "${WORKERS[@]}")
readonly NODE_IMAGE=hookdeploy-node:local
# Bump when the node image's recipe changes: an image made by another recipe is rebuilt.
readonly NODE_RECIPE=2
readonly BASE_IMAGE=hookdeploy-nginx:local
readonly REGISTRY_PORT=5000
readonly REGISTRY_USER=hookdeploy
readonly REGISTRY_VOLUME=$PREFIX-registry
readonly STATE_DIR=${HOOKDEPLOY_CLUSTER_STATE:-/var/lib/hookdeploy-cluster}
readonly LOCK=/tmp/hookdeploy-cluster.lock
# Bind-mounted into the manager at the same path: hookdeploy, running on this host, keeps its state
# (the proxy's conf.d above all) here, and the proxy it starts on the manager sees the same files,
# as when hookdeploy runs on the manager itself (which is how a real deployment goes).
readonly SHARED_DIR=$STATE_DIR/shared

say() { echo "cluster: $*" >&2; }
fail() { echo "cluster: $*" >&2; exit 1; }
quiet() { "$@" >/dev/null 2>&1; }

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

need_root() { [[ $EUID -eq 0 ]] || fail "run as root (it starts privileged containers and builds an image with debootstrap)"; }

need_engine() {
    timeout 20 docker info >/dev/null 2>&1 || fail "no Docker engine answers; run scripts/ensure-docker.sh"
}

# docker exec into a node; the rest of the arguments are the command.
on() { local node=$1; shift; docker exec -i "$node" "$@"; }

node_ip() {
    docker inspect --format "{{with index .NetworkSettings.Networks \"$NETWORK\"}}{{.IPAddress}}{{end}}" "$1" 2>/dev/null
}

# -- the node image -----------------------------------------------------------------------------------

node_image_is_current() {
    local made_by
    made_by=$(docker image inspect --format '{{index .Config.Labels "hdcluster.recipe"}}' "$NODE_IMAGE" 2>/dev/null) || return 1
    [[ "$made_by" == "$NODE_RECIPE" ]]
}

build_node_image() {
    node_image_is_current && return 0
    command -v debootstrap >/dev/null || {
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >/dev/null 2>&1 || {
            apt-get -o DPkg::Lock::Timeout=300 update -qq
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >/dev/null
        }
    }
    local root log mirror started=$SECONDS
    root=$(mktemp -d /tmp/hdcluster-node.XXXXXX)
    log=/tmp/hdcluster-debootstrap.log
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    say "building $NODE_IMAGE with debootstrap from $mirror (once, about a minute; log: $log)"
    # debootstrap resolves the dependencies of --include (docker.io brings containerd, runc, tini and
    # iptables); Recommends are left out. No service starts: there is no init in the chroot.
    if ! debootstrap --variant=minbase \
        --include=docker.io,docker-registry,apache2-utils,curl,iproute2,iptables,procps,ca-certificates,openssh-server \
        bookworm "$root" "$mirror" >"$log" 2>&1; then
        rm -rf "$root"
        fail "debootstrap failed; the end of $log: $(tail -n 5 "$log")"
    fi
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
        rm -f "$root/etc/apt/sources.list"
    fi
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
    chroot "$root" update-ca-certificates >/dev/null 2>&1 || true
    # The package's registry service is never used: the rig writes its own config and starts it by hand.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar --numeric-owner -C "$root" -c . | docker import \
        -c "LABEL hdcluster.recipe=$NODE_RECIPE" -c 'CMD ["/bin/bash"]' - "$NODE_IMAGE" >/dev/null
    rm -rf "$root"
    say "built $NODE_IMAGE in $((SECONDS - started)) s"
}

# -- the nodes ----------------------------------------------------------------------------------------

ensure_network() {
    quiet docker network inspect "$NETWORK" && return 0
    # MTU 1500 on the bridge (the default, said out loud) although eth0 has 1400 here: this bridge
    # is the overlay's underlay, and the overlay (VXLAN, 50 bytes of headers) takes 1500 - 50 = 1450.
    # Only the nodes' own traffic to the outside crosses eth0 (none is needed: no registry is reachable).
    docker network create --driver bridge --label "$LABEL" \
        --opt com.docker.network.driver.mtu=1500 "$NETWORK" >/dev/null
}

network_subnet() {
    docker network inspect --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$NETWORK"
}

start_node() {
    local node=$1 subnet=$2 mounts=(--mount "type=volume,source=$1-docker,target=/var/lib/docker")
    if [[ "$node" == "$MANAGER" ]]; then
        mkdir -p "$SHARED_DIR"
        mounts+=(--mount "type=volume,source=$REGISTRY_VOLUME,target=/var/lib/docker-registry"
                 --mount "type=bind,source=$SHARED_DIR,target=$SHARED_DIR")
    fi
    # The volumes get the label too, so `down` finds them even if a container is gone.
    docker volume create --label "$LABEL" "$node-docker" >/dev/null
    [[ "$node" != "$MANAGER" ]] || docker volume create --label "$LABEL" "$REGISTRY_VOLUME" >/dev/null
    # What a nested dockerd needs here (as ../shared/tools/fresh-debian.sh): every capability but
    # SYS_RESOURCE, no seccomp/apparmor profile, all devices, the host's cgroup tree (cgroup v1,
    # cgroupfs) and a /var/lib/docker that is not overlayfs (a volume: ext4 on this machine, tmpfs
    # inside fresh-debian.sh's container; overlay2 works nested on both). Plain --privileged fails
    # here (runc: "unable to apply caps": SYS_RESOURCE is not in this machine's bounding set).
    # /proc/sys and /sys stay read-only: dockerd logs errors about IPv6 sysctls, ip_vs sysctls and
    # the overlay bridge's default VLAN, none of which matters for the swarm or the overlay.
    # --cgroup-parent keeps the nested containers' cgroups out of the host engine's /docker tree.
    # The engine API on tcp://NODE_IP:2375 has no TLS: a private bridge, a test rig (see the top).
    docker run -d --name "$node" --hostname "$node" --label "$LABEL" --network "$NETWORK" \
        --cap-add ALL --cap-drop SYS_RESOURCE \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --device-cgroup-rule='a *:* rwm' --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
        "${mounts[@]}" --init "$NODE_IMAGE" \
        bash -c 'exec dockerd --host unix:///var/run/docker.sock --host "tcp://$(hostname -i):2375" --tls=false \
                   --storage-driver overlay2 --insecure-registry "$0" --cgroup-parent "/$1" --log-level warn' \
        "$subnet" "$node" >/dev/null
}

wait_for_engine() {
    local node=$1
    for _ in $(seq 120); do
        quiet docker exec "$node" docker info && return 0
        [[ $(docker inspect --format '{{.State.Running}}' "$node" 2>/dev/null) == true ]] ||
            fail "$node stopped; its dockerd said: $(docker logs --tail 15 "$node" 2>&1)"
        sleep 0.5
    done
    fail "the dockerd in $node did not answer within 60 s: $(docker logs --tail 15 "$node" 2>&1)"
}

# running | stopped | missing
node_state() {
    local running
    running=$(docker inspect --format '{{.State.Running}}' "$1" 2>/dev/null) || { echo missing; return; }
    [[ "$running" == true ]] && echo running || echo stopped
}

ensure_nodes() {
    local node state subnet broken=0
    for node in "${NODES[@]}"; do
        state=$(node_state "$node")
        [[ "$state" == running || "$state" == missing ]] || broken=1
    done
    if [[ $(node_state "$MANAGER") == running ]] &&
        ! docker inspect --format '{{range .Mounts}}{{.Destination}} {{end}}' "$MANAGER" | grep -qF "$SHARED_DIR "; then
        say "$MANAGER was made without the shared state folder $SHARED_DIR"
        broken=1
    fi
    if ((broken)); then
        # A stopped node comes back with another address, which the swarm and the registry config would
        # not survive: start over rather than patch it up.
        say "a node container is stopped; removing the cluster and making it anew"
        teardown
    fi
    ensure_network
    subnet=$(network_subnet)
    [[ -n "$subnet" ]] || fail "network $NETWORK has no subnet"
    for node in "${NODES[@]}"; do
        [[ $(node_state "$node") == running ]] || start_node "$node" "$subnet"
        if [[ $(docker inspect --format '{{.State.Paused}}' "$node") == true || -f "$STATE_DIR/$node.route" ]]; then
            say "$node was killed (scripts/cluster.sh kill-node); reviving it"
            revive "$node"
        fi
    done
    for node in "${NODES[@]}"; do
        wait_for_engine "$node"
    done
}

# -- the swarm ----------------------------------------------------------------------------------------

swarm_state() { docker exec "$1" docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true; }

ensure_swarm() {
    local manager_ip=$1 node token
    if [[ $(swarm_state "$MANAGER") != active ]]; then
        say "swarm init on $MANAGER ($manager_ip)"
        on "$MANAGER" docker swarm init --advertise-addr "$manager_ip" --listen-addr "$manager_ip:2377" >/dev/null
    fi
    token=$(on "$MANAGER" docker swarm join-token -q worker)
    for node in "${WORKERS[@]}"; do
        if [[ $(swarm_state "$node") != active ]]; then
            say "$node joins the swarm"
            on "$node" docker swarm join --token "$token" --advertise-addr "$(node_ip "$node")" \
                "$manager_ip:2377" >/dev/null
        fi
    done
    # Each node's name as a label, for placement preferences (spread over node.labels.hdcluster.node).
    for node in "${NODES[@]}"; do
        [[ $(on "$MANAGER" docker node inspect --format '{{index .Spec.Labels "hdcluster.node"}}' "$node" 2>/dev/null) == "$node" ]] ||
            on "$MANAGER" docker node update --label-add "hdcluster.node=$node" "$node" >/dev/null
    done
    # Wait until every node is Ready and Active.
    for _ in $(seq 60); do
        [[ $(ready_nodes) -eq ${#NODES[@]} ]] && return 0
        sleep 0.5
    done
    fail "not every node became Ready/Active: $(on "$MANAGER" docker node ls 2>&1)"
}

ready_nodes() {
    on "$MANAGER" docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}' 2>/dev/null |
        awk '$2 == "Ready" && $3 == "Active"' | wc -l
}

ensure_overlay() {
    quiet on "$MANAGER" docker network inspect "$OVERLAY" && return 0
    # No MTU option: for an overlay, com.docker.network.driver.mtu is the UNDERLAY's MTU and the driver
    # takes 50 off (=1450 gave containers 1400); the default, 1500, gives 1450, which fits the bridge.
    on "$MANAGER" docker network create --driver overlay --attachable --label "$LABEL" "$OVERLAY" >/dev/null
}

# -- the registry -------------------------------------------------------------------------------------

registry_status() {  # the HTTP status of an unauthenticated GET /v2/, asked from a worker
    on "${WORKERS[0]}" curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$1:$REGISTRY_PORT/v2/" 2>/dev/null || true
}

ensure_registry() {
    local manager_ip=$1 password
    mkdir -p "$STATE_DIR"
    chmod 700 "$STATE_DIR"
    if [[ ! -s "$STATE_DIR/registry-password" ]]; then
        (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$STATE_DIR/registry-password")
    fi
    password=$(<"$STATE_DIR/registry-password")
    if ! quiet on "$MANAGER" pgrep -f 'docker-registry serve'; then
        start_registry "$password"
    fi
    for _ in $(seq 40); do
        [[ $(registry_status "$manager_ip") == 401 ]] && break
        sleep 0.25
    done
    [[ $(registry_status "$manager_ip") == 401 ]] ||
        fail "the registry on $MANAGER does not answer 401 at /v2/: $(on "$MANAGER" tail -n 5 /var/log/docker-registry.log 2>&1)"
    # The manager's docker CLI is logged in (for `docker exec hdcluster-manager docker push/service create
    # --with-registry-auth`); the workers are not: services get the credentials from the manager.
    printf '%s' "$password" | on "$MANAGER" docker login --username "$REGISTRY_USER" --password-stdin \
        "$manager_ip:$REGISTRY_PORT" >/dev/null 2>&1 || fail "docker login to the cluster registry failed"
}

# docker-registry on the manager, a process of the node container (the package's own service is unused).
start_registry() {
    local password=$1
    # bcrypt (-B), the password read from stdin (-i) so that it shows in no process list
    printf '%s' "$password" | on "$MANAGER" sh -c "htpasswd -iBn $REGISTRY_USER > /etc/docker/registry/htpasswd"
    on "$MANAGER" sh -c 'cat > /etc/docker/registry/hdcluster.yml' <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :$REGISTRY_PORT
  secret: $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
auth:
  htpasswd:
    realm: hdcluster-registry
    path: /etc/docker/registry/htpasswd
EOF
    docker exec -d "$MANAGER" sh -c \
        'exec docker-registry serve /etc/docker/registry/hdcluster.yml >>/var/log/docker-registry.log 2>&1'
}

# hookdeploy-nginx:local into the manager (when the host's differs) and into the registry (when missing).
ensure_base_image() {
    local manager_ip=$1 host_id node_id reference digest=""
    host_id=$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null) ||
        fail "$BASE_IMAGE is not on the host engine; run scripts/ensure-docker.sh"
    node_id=$(on "$MANAGER" docker image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
    reference=$manager_ip:$REGISTRY_PORT/$BASE_IMAGE
    if [[ "$host_id" != "$node_id" ]]; then
        say "loading $BASE_IMAGE into $MANAGER"
        docker save "$BASE_IMAGE" | on "$MANAGER" docker load >/dev/null
    fi
    if [[ $(on "$MANAGER" docker image inspect --format '{{.Id}}' "$reference" 2>/dev/null) != "$host_id" ]]; then
        on "$MANAGER" docker tag "$BASE_IMAGE" "$reference"
    fi
    digest=$(on "$MANAGER" docker image inspect --format '{{join .RepoDigests "\n"}}' "$reference" 2>/dev/null |
        sed -n "s|^$manager_ip:$REGISTRY_PORT/${BASE_IMAGE%%:*}@||p" | head -n 1)
    if [[ -z "$digest" ]] || ! registry_has_manifest "$manager_ip" "${BASE_IMAGE%%:*}" "$digest"; then
        say "pushing $reference"
        on "$MANAGER" docker push "$reference" >/dev/null
        digest=$(on "$MANAGER" docker image inspect --format '{{join .RepoDigests "\n"}}' "$reference" |
            sed -n "s|^$manager_ip:$REGISTRY_PORT/${BASE_IMAGE%%:*}@||p" | head -n 1)
    fi
    [[ -n "$digest" ]] || fail "no digest for $reference after the push"
    echo "$digest"
}

registry_has_manifest() {
    local manager_ip=$1 repository=$2 digest=$3 status
    status=$(on "$MANAGER" curl -s -o /dev/null -w '%{http_code}' --max-time 5 -u "$REGISTRY_USER:$(<"$STATE_DIR/registry-password")" \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -I "http://$manager_ip:$REGISTRY_PORT/v2/$repository/manifests/$digest" 2>/dev/null || true)
    [[ "$status" == 200 ]]
}

# -- state ----------------------------------------------------------------------------------------------

write_state() {
    local manager_ip=$1 base_digest=$2
    (umask 077; cat >"$STATE_DIR/cluster.env.new" <<EOF
# Written by scripts/cluster.sh up; removed by down. Shell-sourceable KEY=VALUE lines.
DOCKER_HOST=tcp://$manager_ip:2375
MANAGER_IP=$manager_ip
NODES="${NODES[*]}"
OVERLAY_NETWORK=$OVERLAY
REGISTRY=$manager_ip:$REGISTRY_PORT
REGISTRY_USERNAME=$REGISTRY_USER
REGISTRY_PASSWORD_FILE=$STATE_DIR/registry-password
BASE_IMAGE=$manager_ip:$REGISTRY_PORT/${BASE_IMAGE%%:*}@$base_digest
SHARED_DIR=$SHARED_DIR
EOF
    mv "$STATE_DIR/cluster.env.new" "$STATE_DIR/cluster.env")
}

print_access() {
    local manager_ip=$1
    cat <<EOF
manager engine:  DOCKER_HOST=tcp://$manager_ip:2375   (plain TCP, no TLS: private bridge, test rig only)
registry:        http://$manager_ip:$REGISTRY_PORT  user $REGISTRY_USER, password in $STATE_DIR/registry-password
base image:      $(sed -n 's/^BASE_IMAGE=//p' "$STATE_DIR/cluster.env" 2>/dev/null)
overlay network: $OVERLAY (attachable; services: endpoint mode dnsrr, reach tasks at their addresses)
state:           $STATE_DIR/cluster.env
EOF
}

# -- commands -------------------------------------------------------------------------------------------

cmd_up() {
    need_root
    need_engine
    local started=$SECONDS manager_ip digest
    build_node_image
    ensure_nodes
    manager_ip=$(node_ip "$MANAGER")
    [[ -n "$manager_ip" ]] || fail "$MANAGER has no address on $NETWORK"
    ensure_swarm "$manager_ip"
    ensure_overlay
    ensure_registry "$manager_ip"
    digest=$(ensure_base_image "$manager_ip")
    write_state "$manager_ip" "$digest"
    say "up in $((SECONDS - started)) s"
    print_access "$manager_ip"
}

cmd_image() {
    need_root
    need_engine
    build_node_image
}

cmd_status() {
    local node manager_ip ok=1 code ready
    for node in "${NODES[@]}"; do
        if [[ $(node_state "$node") != running ]]; then
            echo "$node: $(node_state "$node")"
            ok=0
        fi
    done
    if ((ok == 0)); then
        echo "cluster: not up (scripts/cluster.sh up)"
        return 1
    fi
    manager_ip=$(node_ip "$MANAGER")
    on "$MANAGER" docker node ls || ok=0
    ready=$(ready_nodes)
    echo "nodes Ready/Active: $ready of ${#NODES[@]}"
    [[ "$ready" -eq ${#NODES[@]} ]] || ok=0
    code=$(registry_status "$manager_ip")
    echo "registry: unauthenticated GET http://$manager_ip:$REGISTRY_PORT/v2/ from ${WORKERS[0]} -> ${code:-no answer} (want 401)"
    [[ "$code" == 401 ]] || ok=0
    print_access "$manager_ip"
    ((ok)) && { echo "cluster: OK"; return 0; }
    echo "cluster: NOT OK"
    return 1
}

teardown() {
    local ids
    ids=$(docker ps -aq --filter "label=$LABEL")
    # shellcheck disable=SC2086  # one id per word
    [[ -z "$ids" ]] || docker rm -f -v $ids >/dev/null
    for node in "${NODES[@]}"; do quiet docker rm -f -v "$node" || true; done
    ids=$(docker volume ls -q --filter "label=$LABEL")
    # shellcheck disable=SC2086
    [[ -z "$ids" ]] || docker volume rm -f $ids >/dev/null
    quiet docker network rm "$NETWORK" || true
    # The nested engines' container cgroups (--cgroup-parent /hdcluster-NODE): empty once the nodes are gone.
    local dir
    for dir in /sys/fs/cgroup/*/"$PREFIX"-* /sys/fs/cgroup/"$PREFIX"-*; do
        [[ -d "$dir" ]] || continue
        for _ in 1 2 3 4 5; do
            find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d "$dir" ]] || break
            sleep 0.2
        done
    done
}

# kill-node: the node's eth0 goes down (the manager stops hearing its heartbeats, the proxy's packets to
# its tasks go nowhere), then `docker pause` freezes every process in it, dockerd and tasks alike. The
# container and its address stay, so revive-node brings back the same node (up would otherwise have to
# make the whole cluster anew: a restarted node gets another address).
cmd_kill_node() {
    local node=$1
    need_root
    [[ $(node_state "$node") == running ]] || fail "$node is not running"
    if [[ $(docker inspect --format '{{.State.Paused}}' "$node") == true ]]; then
        say "$node is killed already"
        return 0
    fi
    on "$node" ip route show default >"$STATE_DIR/$node.route"
    on "$node" ip link set eth0 down
    # The cgroup freezer gives up ("unable to freeze") when a process does not stop in time, as on a
    # loaded host; runc thaws what it froze then, so trying again is safe.
    local try error
    for try in 1 2 3 4 5; do
        error=$(docker pause "$node" 2>&1 >/dev/null) && break
        ((try < 5)) || fail "docker pause $node failed 5 times: $error"
        sleep 1
    done
    say "$node killed (network down, processes frozen); bring it back: scripts/cluster.sh revive-node $node"
}

cmd_revive_node() {
    local node=$1 route
    need_root
    revive "$node"
    for _ in $(seq 120); do
        [[ $(on "$MANAGER" docker node inspect --format '{{.Status.State}}' "$node" 2>/dev/null) == ready ]] && {
            say "$node is back and Ready"
            return 0
        }
        sleep 0.5
    done
    fail "$node did not become Ready within 60 s: $(on "$MANAGER" docker node ls 2>&1)"
}

revive() {
    local node=$1 route
    [[ $(docker inspect --format '{{.State.Paused}}' "$node" 2>/dev/null) == true ]] && docker unpause "$node" >/dev/null
    on "$node" ip link set eth0 up
    route=$(cat "$STATE_DIR/$node.route" 2>/dev/null || true)
    # shellcheck disable=SC2086  # "default via GATEWAY dev eth0" as words
    [[ -z "$route" ]] || on "$node" ip route replace $route
    rm -f "$STATE_DIR/$node.route"
}

cmd_down() {
    need_root
    need_engine
    teardown
    rm -rf "$STATE_DIR"
    say "down"
}

main() {
    local command=${1:-}
    case "$command" in
        up|down|status|image) ;;
        kill-node|revive-node)
            [[ " ${NODES[*]} " == *" ${2:-} "* ]] || fail "$command needs a node: one of ${NODES[*]}" ;;
        -h|--help|help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    [[ "$command" == status ]] || { exec 9>"$LOCK"; flock -w 600 9 || fail "could not get $LOCK"; }
    "cmd_${command//-/_}" "${@:2}"
}

main "$@"
