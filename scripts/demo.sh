#!/usr/bin/env bash
# The end-to-end demo: a sample site in git, `git push`, the site live on a local port, then a
# second push switched in with zero downtime while a load generator hits the site.
#
# Usage: scripts/demo.sh          run the demo (installs what is missing, as scripts/test.sh does)
#        scripts/demo.sh --stop   stop the demo's worker and remove its containers and files
# Env:   DEMO_PORT (default 8088), DEMO_DIR (default ./.demo)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
port=${DEMO_PORT:-8088}
demo=${DEMO_DIR:-$root/.demo}
instance=hookdeploy-demo
hookdeploy="$root/.venv/bin/hookdeploy"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

stop_demo() {
    if [[ -f "$demo/worker.pid" ]]; then
        kill "$(cat "$demo/worker.pid")" 2>/dev/null || true
        rm -f "$demo/worker.pid"
    fi
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        mapfile -t leftovers < <(docker ps -aq --filter "label=hookdeploy.instance=$instance")
        ((${#leftovers[@]})) && docker rm -f "${leftovers[@]}" >/dev/null
        mapfile -t images < <(docker images -q --filter "label=hookdeploy.instance=$instance" | sort -u)
        ((${#images[@]})) && docker rmi -f "${images[@]}" >/dev/null 2>&1
        docker network rm "$instance" >/dev/null 2>&1 || true
    fi
    rm -rf "$demo"
}

if [[ "${1:-}" == "--stop" ]]; then
    stop_demo
    echo "demo stopped and removed"
    exit 0
fi

say "Installing what is missing (tools, virtualenv, Docker engine, offline nginx image)"
bash scripts/ensure-tools.sh
bash scripts/ensure-venv.sh
bash scripts/ensure-docker.sh
stop_demo  # start from a clean slate
mkdir -p "$demo"

cat >"$demo/deploy.toml" <<TOML
[server]
name = "$instance"
state_dir = "state"
listen = "127.0.0.1:8089"

[proxy]
image = "hookdeploy-nginx:local"   # built offline; with a registry: nginx:stable-alpine
publish = "127.0.0.1:$port"

[apps.site]
repo = "git/site.git"
branch = "deploy"
drain_seconds = 2.0

[apps.site.health]
path = "/"
contains = "hookdeploy demo"
interval = 0.1
TOML
export HOOKDEPLOY_CONFIG="$demo/deploy.toml"

say "hookdeploy init-repo site"
"$hookdeploy" init-repo site

say "Starting the worker (log: $demo/worker.log)"
setsid "$hookdeploy" worker >"$demo/worker.log" 2>&1 </dev/null &
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
say "curl http://127.0.0.1:$port/"
curl -si "http://127.0.0.1:$port/" | grep -E '^(HTTP|X-Hookdeploy-Release)|<h1>'

say "Version 2, pushed while hey sends steady load at the site for 12 s"
write_page "version 2"
commit "version 2"
hey -z 12s -c 8 -q 50 "http://127.0.0.1:$port/" >"$demo/hey.txt" &
load=$!
sleep 2
git -C "$site" push production deploy
wait "$load"
say "What the load generator saw during the switch"
sed -n '/Status code distribution/,$p' "$demo/hey.txt"
if grep -q "Error distribution" "$demo/hey.txt" ||
    sed -n '/Status code distribution/,$p' "$demo/hey.txt" | grep -Eq '^ +\[[^2][0-9][0-9]\]'; then
    echo "demo: requests failed during the switch (see above)" >&2
    exit 1
fi
echo "zero failed requests"

say "curl http://127.0.0.1:$port/"
curl -si "http://127.0.0.1:$port/" | grep -E '^(HTTP|X-Hookdeploy-Release)|<h1>'
say "hookdeploy history site"
"$hookdeploy" history site

cat <<DONE

The site is live at http://127.0.0.1:$port/ and the worker keeps running. Try:
  export HOOKDEPLOY_CONFIG=$demo/deploy.toml
  $hookdeploy rollback site --wait     # back to version 1
  $hookdeploy status
  (cd $site && edit index.html && git commit -am v3 && git push production deploy)
Stop and remove everything: scripts/demo.sh --stop
DONE
