#!/usr/bin/env bash
# Install, with apt and only when missing, the programs hookdeploy's tests and benches use
# besides Python: git, curl, the load generators wrk and hey (both packaged in bookworm), and Debian's
# chromium, which the dashboard's browser test drives through Playwright (never a downloaded browser).
# tests/test_systemd.py runs systemd-analyze (package systemd) on the units in systemd/.
# tests/registry_helpers.py runs a real Distribution registry (docker-registry, v2.8 in bookworm) with
# htpasswd auth, its password file made by htpasswd (apache2-utils). The package's own service (:5000,
# /etc/docker/registry) is not used by the tests: Docker's policy-rc.d (as on these machines) keeps it
# from starting, and where it does start, the tests' registries listen on free ports of their own.
# tests/buildhost_helpers.py reaches its build host over ssh (openssh-client), with a key made by ssh-keygen,
# and over tcp with TLS, its certificates made by openssl.
# tests/test_signatures.py signs commits with keys made by ssh-keygen and gpg (gnupg), and gpg verifies them.
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# command -> Debian package that provides it
declare -A package_of=(
    [git]=git
    [curl]=curl
    [wrk]=wrk
    [hey]=hey
    [flock]=util-linux
    [chromium]=chromium
    [systemd-analyze]=systemd
    [docker-registry]=docker-registry
    [htpasswd]=apache2-utils
    [pebble]=pebble
    [ssh]=openssh-client
    [ssh-keygen]=openssh-client
    [openssl]=openssl
    [gpg]=gnupg
)

missing=()
for command_name in "${!package_of[@]}"; do
    if ! command -v "$command_name" >/dev/null; then
        missing+=("${package_of[$command_name]}")
    fi
done
# scripts/ensure-venv.sh makes the virtualenv from Debian's /usr/bin/python3, which needs
# python3-venv (ensurepip) for that.
if [[ -x /usr/bin/python3 ]] && ! /usr/bin/python3 -c 'import ensurepip' 2>/dev/null; then
    missing+=(python3-venv)
fi

# Playwright's bundled node (the driver of the dashboard's browser test) links libatomic.so.1,
# which a minimal Debian does not have.
if ! ldconfig -p 2>/dev/null | grep -q 'libatomic\.so\.1 '; then
    missing+=(libatomic1)
fi

if ((${#missing[@]} == 0)); then
    exit 0
fi
if [[ $EUID -ne 0 ]]; then
    echo "ensure-tools: missing ${missing[*]}; run this script as root to install them" >&2
    exit 1
fi
echo "ensure-tools: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
