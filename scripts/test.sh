#!/usr/bin/env bash
# Run hookdeploy's tests against the real things: a virtualenv with the package and its test
# extra, git and the load generators, and a running Docker engine with hookdeploy-nginx:local.
#
# Usage: scripts/test.sh [PYTEST ARGS...]     (default: -q)
# Fast feedback (no Docker, no slow servers): .venv/bin/python -m pytest -q -m "not docker and not slow"
# Tests that need Docker fail instead of skipping (HOOKDEPLOY_REQUIRE_DOCKER=1).
# Exits 1 when pytest collects no tests, so an empty run never passes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/ensure-tools.sh

bash scripts/ensure-venv.sh
venv=.venv

bash scripts/ensure-docker.sh

if (($# == 0)); then
    set -- -q
fi
status=0
# The slowest tests close the report: what to share or speed up when the suite nears its 30 minutes.
HOOKDEPLOY_REQUIRE_DOCKER=1 "$venv/bin/python" -m pytest --durations=25 "$@" || status=$?
if ((status == 5)); then
    echo "test.sh: pytest collected no tests; failing, an empty run proves nothing" >&2
    exit 1
fi
exit "$status"
