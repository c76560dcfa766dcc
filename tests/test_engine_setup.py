"""The machine's Docker engine and the offline image hookdeploy-nginx:local work together.

scripts/ensure-docker.sh sets both up; these tests fail loudly when that setup breaks, before
the pipeline tests fail for a reason that is harder to see.
"""

import subprocess
import time
import urllib.request
import uuid

import pytest

from docker_helpers import unavailable

BASE_IMAGE = "hookdeploy-nginx:local"
LABEL = "hookdeploy.test=engine-setup"

pytestmark = pytest.mark.docker


def docker(*arguments, timeout=120):
    """Run the docker CLI and return its stdout; raise CalledProcessError on failure."""
    completed = subprocess.run(
        ["docker", *arguments],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return completed.stdout.strip()


def engine_problem():
    """Return why the Docker engine cannot be used here, or None when it answers."""
    try:
        docker("info", "--format", "{{.ServerVersion}}", timeout=20)
    except FileNotFoundError:
        return "the docker CLI is not installed"
    except subprocess.CalledProcessError as error:
        return f"docker info failed: {error.stderr.strip()}"
    except subprocess.TimeoutExpired:
        return "docker info did not answer within 20 s"
    return None


@pytest.fixture(scope="module")
def engine():
    """Skip (or fail, with HOOKDEPLOY_REQUIRE_DOCKER=1) when no Docker engine answers."""
    problem = engine_problem()
    if problem is not None:
        unavailable(f"{problem}; run scripts/ensure-docker.sh")


@pytest.fixture
def run_label(engine):
    """Label this test's containers and images, and remove them all afterwards."""
    # The second label keeps concurrent runs of this test from removing each other's objects.
    run = f"hookdeploy.test.run={uuid.uuid4().hex[:12]}"
    yield run
    filters = ["--filter", f"label={LABEL}", "--filter", f"label={run}"]
    containers = docker("ps", "-aq", *filters).split()
    if containers:
        docker("rm", "-f", *containers)
    images = docker("images", "-q", *filters).split()
    if images:
        docker("rmi", "-f", *sorted(set(images)))


def fetch(url, deadline=15.0):
    """Return the body of url once it answers, retrying until the deadline."""
    give_up_at = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                assert response.status == 200
                return response.read().decode()
        except OSError:
            if time.monotonic() > give_up_at:
                raise
            time.sleep(0.2)


def test_base_image_config_is_valid(engine):
    completed = subprocess.run(
        ["docker", "run", "--rm", BASE_IMAGE, "nginx", "-t"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "test is successful" in completed.stderr


def test_image_built_from_base_serves_its_page(run_label, tmp_path):
    marker = f"engine setup works {uuid.uuid4().hex}"
    (tmp_path / "index.html").write_text(f"<p>{marker}</p>\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\n"
        "COPY index.html /usr/share/nginx/html/\n"
    )
    tag = f"hookdeploy-test-engine-setup:{run_label.rsplit('=', 1)[1]}"
    docker("build", "--label", LABEL, "--label", run_label, "-t", tag, str(tmp_path), timeout=300)

    container = docker("run", "-d", "--label", LABEL, "--label", run_label, tag)
    address = docker(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
    )
    assert address, "the container has no IP address on its network"

    assert marker in fetch(f"http://{address}/")
