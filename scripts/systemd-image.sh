#!/usr/bin/env bash
# The image tests/test_systemd.py runs the units in systemd/ in, under a real systemd: Debian 12 from
# debootstrap (as the cluster's nodes are made: offline but for Debian's apt mirror) with systemd as
# its init, python3 (the version of this machine's venv, which the test mounts), git and procps. The test
# machine's own PID 1 is not systemd, so `systemctl reload` can only be shown working in there.
#
# Usage: scripts/systemd-image.sh    build hookdeploy-systemd:local unless it is current (about a minute)
set -euo pipefail

readonly IMAGE=hookdeploy-systemd:local
readonly PACKAGES=systemd,systemd-sysv,dbus,python3,git,ca-certificates,procps  # procps: /bin/kill, which ExecReload runs
readonly RECIPE="bookworm-minbase-1:$PACKAGES"  # a change here builds the image anew

say() { echo "systemd-image: $*" >&2; }
fail() { echo "systemd-image: $*" >&2; exit 1; }

made_by=$(docker image inspect --format '{{index .Config.Labels "hookdeploy.recipe"}}' "$IMAGE" 2>/dev/null || true)
[[ "$made_by" == "$RECIPE" ]] && exit 0
[[ $EUID -eq 0 ]] || fail "run as root (debootstrap builds the image's root file system)"
command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >/dev/null 2>&1 || {
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >/dev/null
    }
}
root=$(mktemp -d /tmp/hookdeploy-systemd.XXXXXX)
trap 'rm -rf "$root"' EXIT
log=/tmp/hookdeploy-systemd-debootstrap.log
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
started=$SECONDS
say "building $IMAGE with debootstrap from $mirror (log: $log)"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$mirror" >"$log" 2>&1 ||
    fail "debootstrap failed; the end of $log: $(tail -n 5 "$log")"
# What a container has no use for, and what would wait for hardware it does not have.
for unit in getty.target systemd-logind.service systemd-udevd.service systemd-udev-trigger.service \
            systemd-remount-fs.service sys-kernel-config.mount sys-kernel-debug.mount apt-daily.timer \
            apt-daily-upgrade.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar --numeric-owner -C "$root" -c . | docker import -c "LABEL hookdeploy.recipe=$RECIPE" \
    -c 'CMD ["/lib/systemd/systemd"]' - "$IMAGE" >/dev/null
say "built $IMAGE in $((SECONDS - started)) s"
