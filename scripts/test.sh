#!/usr/bin/env bash
# Run hookdeploy's tests against the real things: a virtualenv with the package and its test
# extra, git and the load generators, and a running Docker engine with hookdeploy-nginx:local.
#
# Usage: scripts/test.sh [PYTEST ARGS...]     (default: -q)
# Tests that need Docker fail instead of skipping (HOOKDEPLOY_REQUIRE_DOCKER=1).
# Exits 1 when pytest collects no tests, so an empty run never passes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/ensure-tools.sh

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
    echo "test.sh: installing hookdeploy with its test extra into $venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install -q -e '.[test]'
    echo "$wanted" >"$stamp"
fi
exec 8>&-

bash scripts/ensure-docker.sh

if (($# == 0)); then
    set -- -q
fi
status=0
HOOKDEPLOY_REQUIRE_DOCKER=1 "$venv/bin/python" -m pytest "$@" || status=$?
if ((status == 5)); then
    echo "test.sh: pytest collected no tests; failing, an empty run proves nothing" >&2
    exit 1
fi
exit "$status"
