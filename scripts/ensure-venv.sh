#!/usr/bin/env bash
# Make .venv with hookdeploy and its test and docs extras installed (editable), reinstalling only when
# pyproject.toml or the interpreter changed since the last install. Run from anywhere.
#
# The venv is built from the distribution's /usr/bin/python3 where it exists: that is the
# interpreter the README, the services set-up and the systemd units send users to (Debian 12:
# 3.11.2), so the tests run on what a newcomer runs, not on a newer python3 that happens to be
# first on PATH. HOOKDEPLOY_PYTHON names another interpreter on purpose.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv
stamp="$venv/.hookdeploy-installed"
if [[ -n "${HOOKDEPLOY_PYTHON:-}" ]]; then
    python=$HOOKDEPLOY_PYTHON
elif [[ -x /usr/bin/python3 ]]; then
    python=/usr/bin/python3
else
    python=$(command -v python3) || { echo "ensure-venv: no python3 found" >&2; exit 1; }
fi
base=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')

# Two runs in one checkout at once must not both create or fill the virtualenv.
exec 8>"/tmp/hookdeploy-venv-$(pwd | sha256sum | cut -c1-12).lock"
flock -w 600 8
current_base=""
if [[ -x "$venv/bin/python" ]]; then
    current_base=$("$venv/bin/python" -c 'import os, sys; print(os.path.realpath(sys._base_executable))' 2>/dev/null || true)
fi
if [[ "$current_base" != "$base" ]]; then
    [[ -z "$current_base" ]] || echo "ensure-venv: $venv was made from $current_base; remaking it from $base"
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
# Reinstall only when pyproject.toml (or the interpreter) changed since the last install.
wanted=$({ sha256sum pyproject.toml; "$venv/bin/python" -VV; echo "$base"; } | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
    echo "ensure-venv: installing hookdeploy with its test and docs extras into $venv ($("$venv/bin/python" -V) from $base)"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install -q -e '.[test,docs]'
    echo "$wanted" >"$stamp"
fi
exec 8>&-
