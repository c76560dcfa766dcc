#!/usr/bin/env bash
# Make .venv with hookdeploy and its test extra installed (editable), reinstalling only when
# pyproject.toml or the interpreter changed since the last install. Run from anywhere.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv
stamp="$venv/.hookdeploy-installed"
# Two runs in one checkout at once must not both create or fill the virtualenv.
exec 8>"/tmp/hookdeploy-venv-$(pwd | sha256sum | cut -c1-12).lock"
flock -w 600 8
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
fi
# Reinstall only when pyproject.toml (or the interpreter) changed since the last install.
wanted=$({ sha256sum pyproject.toml; "$venv/bin/python" -VV; } | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
    echo "ensure-venv: installing hookdeploy with its test extra into $venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install -q -e '.[test]'
    echo "$wanted" >"$stamp"
fi
exec 8>&-
