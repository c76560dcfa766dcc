#!/usr/bin/env bash
# Build the local image hookdeploy-nginx:local without any registry: Debian's nginx binary,
# the libraries it links, and busybox for a shell, laid out like the official nginx image.
#
# Usage: scripts/build-nginx-image.sh [--force]
#   Builds only when the image is missing or was made by another version of this script;
#   --force rebuilds anyway. Every new image is verified before it gets the final tag.
set -euo pipefail

readonly IMAGE="hookdeploy-nginx:local"
readonly CANDIDATE="hookdeploy-nginx:candidate"
readonly ROOTFS="hookdeploy-nginx:rootfs"
readonly TEST_LABEL="hookdeploy.test=image-build"
readonly NGINX_UID=101
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

force=0
for argument in "$@"; do
    case "$argument" in
        --force) force=1 ;;
        -h|--help) sed -n '2,8p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "build-nginx-image: unknown argument: $argument" >&2; exit 2 ;;
    esac
done

# The image records which recipe made it, so editing this script leads to a rebuild.
recipe=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)

image_is_current() {
    local made_by
    made_by=$(docker image inspect --format '{{index .Config.Labels "hookdeploy.recipe"}}' "$IMAGE" 2>/dev/null) || return 1
    [[ "$made_by" == "$recipe" ]]
}

if [[ $force -eq 0 ]] && image_is_current; then
    exit 0
fi

# Concurrent test runs must not build (and verify, and clean up) at the same time.
exec 9>"/tmp/hookdeploy-nginx-image.lock"
flock -w 900 9 || { echo "build-nginx-image: could not get /tmp/hookdeploy-nginx-image.lock" >&2; exit 1; }
if [[ $force -eq 0 ]] && image_is_current; then
    exit 0
fi

if [[ $EUID -ne 0 ]]; then
    echo "build-nginx-image: must run as root (it uses apt-get and chowns files for uid $NGINX_UID)" >&2
    exit 1
fi

work=$(mktemp -d /tmp/hookdeploy-nginx-image.XXXXXX)
cleanup() {
    local status=$?
    remove_test_objects
    docker rmi "$CANDIDATE" "$ROOTFS" >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
remove_test_objects() {
    local ids
    ids=$(docker ps -aq --filter "label=$TEST_LABEL" 2>/dev/null || true)
    if [[ -n "$ids" ]]; then
        # shellcheck disable=SC2086  # one id per word
        docker rm -f $ids >/dev/null 2>&1 || true
    fi
    ids=$(docker images -q --filter "label=$TEST_LABEL" 2>/dev/null || true)
    if [[ -n "$ids" ]]; then
        # shellcheck disable=SC2086
        docker rmi -f $ids >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

fail() {
    echo "build-nginx-image: $*" >&2
    exit 1
}

apt_get() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$@"
}

download() {
    # apt drops to the _apt user while downloading; let it write here to avoid the sandbox warning.
    local dir=$1; shift
    mkdir -p "$dir"
    if id -u _apt >/dev/null 2>&1; then chown _apt "$dir"; fi
    if ! (cd "$dir" && apt-get download "$@" >/dev/null 2>&1); then
        apt_get update -qq
        (cd "$dir" && apt-get download "$@" >/dev/null) || fail "apt-get download $* failed"
    fi
}

extract() {
    local dir=$1 package=$2
    mkdir -p "$dir"
    dpkg-deb -x "$work/debs/${package}"_*.deb "$dir"
}

# --- 1. Debian's nginx, unpacked but not installed (no service appears on the host) ---------
# In bookworm the binary is in package "nginx" (nginx-core is a transitional package);
# older releases ship it in nginx-core, so try both.
unpacked="$work/unpacked"
nginx_package=""
for candidate_package in nginx nginx-core; do
    download "$work/debs" "$candidate_package"
    extract "$unpacked" "$candidate_package"
    if [[ -x "$unpacked/usr/sbin/nginx" ]]; then
        nginx_package=$candidate_package
        break
    fi
done
[[ -n "$nginx_package" ]] || fail "neither nginx nor nginx-core contains /usr/sbin/nginx"
download "$work/debs" nginx-common busybox-static
extract "$unpacked" nginx-common
extract "$unpacked" busybox-static
nginx_binary="$unpacked/usr/sbin/nginx"

# The host lends its libraries to the image; install the package's runtime libraries if missing.
missing_libraries() {
    ldd "$nginx_binary" | grep 'not found' || true
}
if [[ -n "$(missing_libraries)" ]]; then
    mapfile -t libraries < <(dpkg-deb -f "$work/debs/${nginx_package}"_*.deb Depends |
        tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' | grep '^lib')
    apt_get install -y -qq --no-install-recommends "${libraries[@]}" >/dev/null
    [[ -z "$(missing_libraries)" ]] || fail "nginx still misses libraries: $(missing_libraries | tr -s ' \n\t' ' ')"
fi

# --- 2. The root tree ------------------------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/nginx/conf.d,usr/share/nginx/html,proc,sys,dev,root}
chmod 700 "$root/root"
install -m 755 "$nginx_binary" "$root/usr/sbin/nginx"

# Every library ldd lists, and the dynamic loader, at the path the binary will look for it.
while read -r library; do
    mkdir -p "$root$(dirname "$library")"
    cp -L "$library" "$root$library"
done < <(ldd "$nginx_binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')

# busybox as the shell and the usual tools (sh, ls, cat, wget, sleep, kill, ps, ...).
install -m 755 "$unpacked/bin/busybox" "$root/bin/busybox"
while read -r applet; do
    if [[ ! -e "$root/$applet" && ! -L "$root/$applet" ]]; then
        mkdir -p "$root/$(dirname "$applet")"
        ln -s /bin/busybox "$root/$applet"
    fi
done < <("$root/bin/busybox" --list-full)
for tool in sh ls cat wget sleep kill mkdir rm echo env ps; do
    [[ -L "$root/bin/$tool" || -L "$root/usr/bin/$tool" ]] || fail "busybox has no applet $tool"
done

cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/sh
nginx:x:$NGINX_UID:$NGINX_UID:nginx user:/nonexistent:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<EOF
root:x:0:
nginx:x:$NGINX_UID:
nogroup:x:65534:
EOF
# glibc has the files and dns lookups built in since 2.34; this only says in which order.
cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
EOF
mkdir -p "$root/var" "$root/run/lock"
ln -s /run "$root/var/run"
ln -s /run/lock "$root/var/lock"
mkdir -p "$root/tmp"
chmod 1777 "$root/tmp" "$root/run/lock"

# Every directory nginx was compiled to use (temp paths, logs, pid, lock, modules).
compiled_with=$("$nginx_binary" -V 2>&1 | tr ' ' '\n')
compiled_path() {
    sed -n "s/^--$1=//p" <<<"$compiled_with"
}
for option in http-client-body-temp-path http-proxy-temp-path http-fastcgi-temp-path \
    http-uwsgi-temp-path http-scgi-temp-path; do
    directory=$(compiled_path "$option")
    if [[ -n "$directory" ]]; then
        mkdir -p "$root$directory"
        chown "$NGINX_UID:0" "$root$directory"
        chmod 700 "$root$directory"
    fi
done
for option in pid-path lock-path http-log-path; do
    file=$(compiled_path "$option")
    if [[ -n "$file" ]]; then mkdir -p "$root$(dirname "$file")"; fi
done
modules_dir=$(compiled_path modules-path)
modules_dir=${modules_dir:-/usr/lib/nginx/modules}
# No module is loaded (nginx.conf has no load_module), the directory is there for images built on top.
mkdir -p "$root$modules_dir"
ln -s "$modules_dir" "$root/etc/nginx/modules"
# The official image's paths too, so configs written for it work unchanged.
mkdir -p "$root/var/cache/nginx" "$root/var/log/nginx"
chown "$NGINX_UID:0" "$root/var/cache/nginx"
ln -sf /dev/stdout "$root/var/log/nginx/access.log"
ln -sf /dev/stderr "$root/var/log/nginx/error.log"

# --- 3. nginx configuration, as in the official image ----------------------------------------
for file in mime.types fastcgi_params scgi_params uwsgi_params; do
    install -m 644 "$unpacked/etc/nginx/$file" "$root/etc/nginx/$file"
done
cat >"$root/etc/nginx/nginx.conf" <<'EOF'
user  nginx;
worker_processes  auto;

error_log  /dev/stderr notice;
pid        /var/run/nginx.pid;

events {
    worker_connections  1024;
}

http {
    include       mime.types;
    default_type  application/octet-stream;

    access_log  /dev/stdout;

    sendfile           on;
    keepalive_timeout  65;

    include /etc/nginx/conf.d/*.conf;
}
EOF
cat >"$root/etc/nginx/conf.d/default.conf" <<'EOF'
server {
    listen       80;
    server_name  localhost;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }

    error_page   500 502 503 504  /50x.html;
    location = /50x.html {
        root   /usr/share/nginx/html;
    }
}
EOF
cat >"$root/usr/share/nginx/html/index.html" <<'EOF'
<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body>
<h1>Welcome to nginx!</h1>
<p>hookdeploy-nginx:local, built offline from Debian's nginx package.</p>
</body>
</html>
EOF
cat >"$root/usr/share/nginx/html/50x.html" <<'EOF'
<!DOCTYPE html>
<html>
<head><title>Error</title></head>
<body><h1>An error occurred.</h1></body>
</html>
EOF

# --- 4. Import ---------------------------------------------------------------------------------
# `docker import --change` refuses STOPSIGNAL (Debian's Docker 20.10), so the import only makes the
# filesystem and a Dockerfile without context adds the image config; neither needs a registry.
nginx_version=$("$nginx_binary" -v 2>&1 | sed 's/.*nginx\///')
tar --numeric-owner -C "$root" -c . | docker import - "$ROOTFS" >/dev/null
docker build -q -t "$CANDIDATE" - >/dev/null 2>"$work/config.log" <<EOF || fail "adding the image config failed: $(tail -n 5 "$work/config.log")"
FROM $ROOTFS
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EXPOSE 80
STOPSIGNAL SIGQUIT
LABEL hookdeploy.recipe="$recipe" hookdeploy.nginx-version="$nginx_version"
CMD ["nginx", "-g", "daemon off;"]
EOF
docker rmi "$ROOTFS" >/dev/null

# --- 5. Verify before tagging ----------------------------------------------------------------
container_ip() {
    docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"
}

# Wait (~10 s at most) until URL answers 200 with a body containing TEXT.
expect_page() {
    local url=$1 text=$2 body
    for _ in $(seq 50); do
        if body=$(curl -fsS --max-time 2 "$url" 2>/dev/null) && [[ "$body" == *"$text"* ]]; then
            return 0
        fi
        sleep 0.2
    done
    fail "$url did not answer 200 with \"$text\" (last body: ${body:-none})"
}

docker run --rm "$CANDIDATE" nginx -t >/dev/null 2>&1 ||
    fail "nginx -t fails in the new image: $(docker run --rm "$CANDIDATE" nginx -t 2>&1 | tail -n 3)"

server=$(docker run -d --label "$TEST_LABEL" "$CANDIDATE")
address=$(container_ip "$server")
[[ -n "$address" ]] || fail "the test container has no IP address"
expect_page "http://$address/" 'Welcome to nginx'

# A graceful reload must pick up a changed conf.d, as hookdeploy's proxy switch relies on it.
docker exec "$server" sh -c \
    'sed "s|index  index.html index.htm;|index index.html; add_header X-Reloaded yes;|" \
        /etc/nginx/conf.d/default.conf > /tmp/default.conf &&
     mv /tmp/default.conf /etc/nginx/conf.d/default.conf'
docker exec "$server" nginx -t >/dev/null 2>&1 || fail "nginx -t fails on the changed config"
docker exec "$server" nginx -s reload 2>/dev/null || fail "nginx -s reload failed"
reloaded=0
for _ in $(seq 50); do
    headers=$(curl -fsSI --max-time 2 "http://$address/" 2>/dev/null || true)
    if [[ "${headers,,}" == *"x-reloaded: yes"* ]]; then
        reloaded=1
        break
    fi
    sleep 0.2
done
[[ $reloaded -eq 1 ]] || fail "nginx -s reload did not apply the new config"
[[ $(docker inspect --format '{{.State.Running}}' "$server") == true ]] || fail "nginx exited on reload"
docker rm -f "$server" >/dev/null

# An image built on top (RUN through /bin/sh, COPY) must work like one built FROM nginx.
context="$work/context"
mkdir -p "$context"
echo "hookdeploy build check" >"$context/index.html"
cat >"$context/Dockerfile" <<EOF
FROM $CANDIDATE
RUN mkdir -p /usr/share/nginx/html/run && echo "run step ok" > /usr/share/nginx/html/run/index.html
COPY index.html /usr/share/nginx/html/
EOF
docker build -q --label "$TEST_LABEL" -t hookdeploy-nginx:build-check "$context" >/dev/null 2>"$work/build.log" ||
    fail "docker build FROM the new image failed: $(tail -n 5 "$work/build.log")"
site=$(docker run -d --label "$TEST_LABEL" hookdeploy-nginx:build-check)
address=$(container_ip "$site")
expect_page "http://$address/" 'hookdeploy build check'      # from COPY
expect_page "http://$address/run/" 'run step ok'             # from RUN through /bin/sh

# --- 6. Tag ------------------------------------------------------------------------------------
previous=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
docker tag "$CANDIDATE" "$IMAGE"
docker rmi "$CANDIDATE" >/dev/null
current=$(docker image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n "$previous" && "$previous" != "$current" ]]; then
    docker rmi "$previous" >/dev/null 2>&1 || true   # still used by containers: keep it
fi
size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
echo "build-nginx-image: built and verified $IMAGE (nginx $nginx_version from Debian package $nginx_package, $((size / 1024 / 1024)) MiB)"
