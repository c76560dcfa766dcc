"""`scripts/demo.sh --stop` finishes, or says what it could not remove (issue 23, item 6).

It used to end at the first removal that failed (`set -e`), with exit status 1 and nothing said:
`docker rmi -f` refuses an image a container still uses, as on a Swarm node whose task is still
stopping. Here the image of the demo's instance is held by a container the demo did not make
(another label), so its removal fails for real; the demo's own folder and containers go all the same.
Run against this machine's engine, with no cluster (HOOKDEPLOY_CLUSTER_STATE points at an empty folder).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from docker_helpers import BASE_IMAGE

DEMO = Path(__file__).parent.parent / "scripts" / "demo.sh"
INSTANCE = "hookdeploy-demo"  # demo.sh's own instance name


def docker(*arguments: str, stdin: str | None = None) -> str:
    return subprocess.run(["docker", *arguments], input=stdin, capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()


def stop(tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEMO_DIR": str(tmp_path / "demo"), "HOOKDEPLOY_CLUSTER_STATE": str(tmp_path / "no-cluster")}
    return subprocess.run(["bash", str(DEMO), "--stop"], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.docker
def test_stop_says_what_it_could_not_remove_and_finishes_the_rest(docker_engine, tmp_path):
    tag = f"hookdeploy-demo-test-{secrets.token_hex(4)}:1"
    docker("build", "-q", "-t", tag, "--label", f"hookdeploy.instance={INSTANCE}", "-", stdin=f"FROM {BASE_IMAGE}\n")
    image = docker("image", "inspect", "--format", "{{.Id}}", tag)
    mine = docker("run", "-d", "--label", f"hookdeploy.instance={INSTANCE}", tag)  # the demo's: removed
    holder = docker("run", "-d", "--label", "hookdeploy.instance=not-the-demo", tag)  # holds the image
    (tmp_path / "demo").mkdir()
    try:
        first = stop(tmp_path)
        assert first.returncode == 1, first
        assert first.stdout == ""
        lines = first.stderr.splitlines()
        assert lines[:1] == ["demo.sh: could not remove:"], first
        assert lines[1].startswith("  the demo's images: ") and "is being used by running container" in lines[1], lines
        assert lines[-1] == "demo.sh: the demo is stopped; run scripts/demo.sh --stop again to remove what is left"
        assert not (tmp_path / "demo").exists(), "the demo's folder went all the same"
        assert docker("ps", "-aq", "--no-trunc", "--filter", f"id={mine}") == "", "the demo's container went"

        docker("rm", "-f", holder)
        second = stop(tmp_path)
        assert (second.returncode, second.stdout, second.stderr) == (0, "demo stopped and removed\n", "")
        assert docker("images", "-q", "--no-trunc", "--filter", f"label=hookdeploy.instance={INSTANCE}") == ""
        assert subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0
    finally:
        subprocess.run(["docker", "rm", "-f", mine, holder], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
