"""The mkdocs hook (mkdocs.yml `hooks:`): lists every docs/guides/*.md in the nav, and fills the
reference pages' `<!-- generated: NAME -->` markers from the code at each build, so the reference
cannot drift from the schema or the click commands."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # mkdocs loads this file by path

from docsgen import reference_cli, reference_config  # noqa: E402

GENERATED = {"deploy-toml": reference_config.markdown, "cli": reference_cli.markdown}
MARKER = re.compile(r"<!--\s*generated:\s*([\w-]+)\s*-->")


def on_config(config):
    """Guides not named in the nav (a guide another branch added) join the Guides section, by file name."""
    guides = next((entry["Guides"] for entry in config.nav or () if isinstance(entry, dict) and "Guides" in entry), None)
    if guides is None:
        return config
    listed = {item if isinstance(item, str) else next(iter(item.values())) for item in guides}
    for page in sorted(Path(config.docs_dir, "guides").glob("*.md")):
        name = f"guides/{page.name}"
        if name not in listed:
            guides.append(name)
    return config


def on_page_markdown(markdown, page, config, files):
    """A marker replaced by what its generator makes now."""
    def generated(found: re.Match) -> str:
        if found[1] not in GENERATED:
            raise ValueError(f"{page.file.src_path}: no generator called {found[1]!r} (known: {', '.join(GENERATED)})")
        return GENERATED[found[1]]()
    return MARKER.sub(generated, markdown)
