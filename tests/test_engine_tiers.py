"""The engine's tiers, as its package docstring lists them (hookdeploy/engine/__init__.py), are true:
every engine module is listed once, and imports only engine modules of the tiers before its own."""

from __future__ import annotations

import re

import hookdeploy.engine
from test_layers import graph


def tiers() -> dict[str, int]:
    """Module -> tier number, read from the docstring's numbered list (`N. name (what), name (what)`)."""
    found: dict[str, int] = {}
    for number, text in re.findall(r"^(\d+)\. (.*?)(?=^\d+\. |^\s*$)", hookdeploy.engine.__doc__, re.M | re.S):
        flat = re.sub(r"\([^)]*\)", "", " ".join(text.split()))
        for name in re.findall(r"[a-z_]+", flat):
            assert name not in found, f"{name} is listed twice"
            found[name] = int(number)
    return found


def test_every_engine_module_is_in_one_tier_and_imports_only_earlier_ones():
    listed = tiers()
    modules = {name.removeprefix("hookdeploy.engine."): targets for name, targets in graph().items()
               if name.startswith("hookdeploy.engine.")}
    assert set(listed) == set(modules), set(listed) ^ set(modules)
    upward = [f"{module} (tier {listed[module]}) imports {target} (tier {listed[target]})"
              for module, targets in modules.items()
              for target in (name.removeprefix("hookdeploy.engine.") for name in targets)
              if target in listed and listed[target] >= listed[module]]
    assert upward == []
