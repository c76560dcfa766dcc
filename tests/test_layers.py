"""The package's folders are its layers, and imports only point down:

    core  ←  engine  ←  actions  ←  web  ←  cli       (__main__ on top)

core knows nothing of Docker, git, click or Flask; the engine knows nothing of the service
layer; web never imports the CLI (the CLI may start the web server). No import circle, not even
through an import inside a function. The post-receive hook's modules stay free of click, Flask,
git and Docker, which is what keeps `git push` fast.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hookdeploy"
LAYERS = {"core": 0, "engine": 1, "actions": 2, "web": 3, "cli": 4, "__main__": 5, "__init__": 0}
HEAVY = ("click", "flask", "werkzeug", "git", "docker", "waitress")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else LAYERS["__init__"]


def imports(path: Path) -> set[str]:
    """Every hookdeploy module `path` imports, at the top or inside a function."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    known = {module_name(source) for source in PACKAGE.rglob("*.py")}
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) - {module_name(path)} for path in PACKAGE.rglob("*.py")}


def test_every_module_sits_in_a_known_layer():
    for module in graph():
        layer(module)  # a KeyError names a module outside core/engine/actions/web/cli


def test_imports_only_point_down():
    upward = [f"{module} imports {target}" for module, targets in graph().items() for target in sorted(targets)
              if layer(target) > layer(module) and not target == "hookdeploy"]
    assert upward == []


def test_no_import_circle():
    edges = graph()
    # A package's __init__ is imported by each of its modules; only circles through real modules count.
    edges = {module: {target for target in targets if not module.startswith(target + ".")}
             for module, targets in edges.items()}
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                circles.append(" → ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_core_and_the_hook_path_import_nothing_heavy():
    # In a fresh interpreter: what importing the hook's modules drags in.
    code = ("import sys, hookdeploy.cli.hook, hookdeploy.core.config, hookdeploy.core.store, hookdeploy.actions;"
            f"print(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    # The rule is only worth something if it fails: an engine module importing the CLI is found.
    fake = tmp_path / "hookdeploy"
    for source in PACKAGE.rglob("*.py"):
        target = fake / source.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text())
    (fake / "engine" / "sneaky.py").write_text("from hookdeploy.cli import main\n")
    (fake / "core" / "loop_a.py").write_text("from hookdeploy.core import loop_b\n")
    (fake / "core" / "loop_b.py").write_text("def f():\n    from hookdeploy.core import loop_a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert "hookdeploy.engine.sneaky imports hookdeploy.cli.main" in [
        f"{module} imports {target}" for module, targets in graph().items() for target in targets
        if layer(target) > layer(module)]
    try:
        test_no_import_circle()
    except AssertionError as error:
        assert "loop_a" in str(error) and "loop_b" in str(error)
    else:
        raise AssertionError("the circle loop_a → loop_b → loop_a went unnoticed")
