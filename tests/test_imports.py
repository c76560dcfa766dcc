"""Every module of hookdeploy imports: the CLI imports some only when their command runs (app-logs,
remove, ...), so a name moved from one module to another could break a command no fast test ran."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import hookdeploy

MODULES = sorted(module.name for module in pkgutil.walk_packages(hookdeploy.__path__, "hookdeploy."))


@pytest.mark.parametrize("name", MODULES)
def test_the_module_imports(name):
    importlib.import_module(name)
