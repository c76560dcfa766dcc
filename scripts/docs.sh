#!/usr/bin/env bash
# The handbook (docs/, mkdocs.yml): `scripts/docs.sh build` writes site/ (strict: a broken link or
# anchor, or a reference page that cannot be generated, fails), `scripts/docs.sh serve` serves it on
# 127.0.0.1:8000 and rebuilds as you edit. Makes .venv with the docs extra first (scripts/ensure-venv.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
    build) action=(build --strict --site-dir "${2:-site}") ;;
    serve) action=(serve --strict --dev-addr "${2:-127.0.0.1:8000}") ;;
    *) echo "usage: scripts/docs.sh build [SITE_DIR] | serve [HOST:PORT]" >&2; exit 2 ;;
esac
bash scripts/ensure-venv.sh
# NO_MKDOCS_2_WARNING: Material prints a banner about MkDocs 2.0 at each build otherwise.
NO_MKDOCS_2_WARNING=1 exec .venv/bin/python -m mkdocs "${action[@]}"
