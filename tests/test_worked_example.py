"""The handbook's worked example (notes in SQLite on a volume, a migration, a nightly cleanup), taken
from docs/guides/data-and-schedules.md as it is: its deploy.toml table loads with the keys it says, and its three scripts
run as the release command, the app and the task would, against one database file: the migration
twice, a note kept through a real HTTP request and listed, a month-old one removed by the cleanup.
Only the database's folder and the app's port are moved for the test."""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hookdeploy.core.config import load

PAGE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "data-and-schedules.md"
SECTION = "## A worked example: notes kept in SQLite"


def example_blocks() -> dict[str, str]:
    """The example's fenced blocks by name: dockerfile, toml, and each script by its file name."""
    text = PAGE.read_text(encoding="utf-8")
    assert SECTION in text, f"{PAGE} lost its worked example"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, str] = {}
    for before, kind, body in re.findall(r"([^\n]*)\n+```(\w+)\n(.*?)```", section, re.DOTALL):
        named = re.search(r"`(\w+\.py)`", before)
        blocks[named.group(1) if kind == "python" and named else kind] = body
    assert set(blocks) == {"dockerfile", "migrate.py", "app.py", "cleanup.py", "toml"}, set(blocks)
    return blocks


def test_the_example_config_loads_with_its_volume_release_command_and_task(write_config):
    config = load(write_config(example_blocks()["toml"]))
    notes = config.app("notes")
    assert list(notes.release_command) == ["python", "migrate.py"]
    assert [(mount.source, mount.target, mount.read_only) for mount in notes.volumes] == [("data", "/var/lib/notes", False)]
    assert [task.name for task in notes.tasks] == ["cleanup"] and notes.tasks[0].schedule == "@daily"
    assert notes.port == 8000
    dockerfile = example_blocks()["dockerfile"]
    assert all(f"{script}" in dockerfile for script in ("migrate.py", "app.py", "cleanup.py"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_example_scripts_migrate_serve_and_clean_one_database(tmp_path):
    blocks, port = example_blocks(), free_port()
    for name in ("migrate.py", "app.py", "cleanup.py"):
        script = blocks[name].replace("/var/lib/notes", str(tmp_path)).replace('("", 8000)', f'("127.0.0.1", {port})')
        (tmp_path / name).write_text(script)

    def run(name: str) -> str:
        done = subprocess.run([sys.executable, name], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run("migrate.py") == "notes: schema ready, 0 notes kept\n"
    app = subprocess.Popen([sys.executable, "app.py"], cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                time.sleep(0.05)
        posted = urllib.request.urlopen(urllib.request.Request(url, data=b"kept through a deploy"), timeout=5)
        assert posted.status == 201
        assert urllib.request.urlopen(url, timeout=5).read() == b"kept through a deploy\n"
    finally:
        app.terminate()
        app.wait(timeout=10)
    assert run("migrate.py") == "notes: schema ready, 1 notes kept\n", "a second migration keeps the data"
    with sqlite3.connect(tmp_path / "notes.db") as db:
        db.execute("INSERT INTO notes (text, created) VALUES ('a month old', ?)", (time.time() - 31 * 86400,))
    assert run("cleanup.py") == "cleanup: 1 notes removed\n"
    with sqlite3.connect(tmp_path / "notes.db") as db:
        assert db.execute("SELECT text FROM notes").fetchall() == [("kept through a deploy",)]
