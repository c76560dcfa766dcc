"""Time from `hookdeploy deploy APP --image TAG` to the new release answering through the proxy,
against the raw floor, for an image built elsewhere and pulled from a private registry.

Both sides use one real registry (Debian's docker-registry with htpasswd auth on a free 127.0.0.1
port, as tests/registry_helpers.py runs it) and the same kind of image: the test site (nginx serving
a page and /health) plus a layer of its own, with a random file of --payload-kb kB. Before every
measured round "CI" builds a fresh such image, pushes it and removes it here, so that layer really
is pulled; the base image's layers are on the host already (the proxy runs them), as on a server
that deploys often.

The floor: `docker pull` by digest (docker SDK, auth_config), `docker run` detached on a network,
polling /health at the container's address until the first healthy answer. What any deployer of a
pushed image must at least spend.
hookdeploy: an image app on an instance of its own with a worker already running; from starting the
CLI `hookdeploy deploy api --image TAG` (which asks the registry for the tag's digest and queues a
job pinned to it) until the proxy answers with that release — the user's "push -> live" once CI
has pushed. The first deploy (network and proxy made) and one floor round are warm-up, not measured.

    .venv/bin/python bench/image_to_live.py [--rounds 5] [--payload-kb 256]

Needs the engine and base image (scripts/ensure-docker.sh) and docker-registry + htpasswd
(scripts/ensure-tools.sh).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import BASE_IMAGE, HOOKDEPLOY, free_port, remove_by_label, run, served_release  # noqa: E402
from docker_helpers import site_files  # noqa: E402
from registry_helpers import Registry, push_error, registry_problem  # noqa: E402

import docker  # noqa: E402
import docker.errors  # noqa: E402

REPOSITORY = "team/api"  # in the registry: both sides pull from it
PASSWORD_ENV = "HOOKDEPLOY_BENCH_REGISTRY_PASSWORD"


class Elsewhere:
    """What CI does: build a fresh version of the site, push it as team/api:TAG, remove it here."""

    def __init__(self, client: docker.DockerClient, registry: Registry, root: Path, label: dict[str, str],
                 payload_kb: int):
        self.client, self.registry, self.root, self.label = client, registry, root, label
        self.payload_kb = payload_kb

    def publish(self, tag: str) -> tuple[str, str]:
        """Build, push and forget a new version tagged TAG; return (its page text, its digest)."""
        version = f"{tag} {secrets.token_hex(4)}"
        context = self.root / f"ci-{tag}"
        files = site_files(version)
        files["Dockerfile"] = f"FROM {BASE_IMAGE}\n" + files["Dockerfile"].split("\n", 1)[1]
        for name, text in files.items():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            (context / name).write_text(text)
        (context / "site" / "payload.bin").write_bytes(os.urandom(self.payload_kb * 1024))
        name = f"{self.registry.url}/{REPOSITORY}"
        image, _ = self.client.images.build(path=str(context), tag=f"{name}:{tag}", labels=self.label, rm=True)
        lines = list(self.client.images.push(name, tag, auth_config=self.registry.auth_config,
                                             stream=True, decode=True))
        problem = push_error(lines)
        if problem:
            raise RuntimeError(f"push of {name}:{tag} failed: {problem}")
        digest = self.registry.manifest_digest(REPOSITORY, tag)
        self.client.images.remove(image.id, force=True)  # every local name: the pull must fetch the layer
        try:
            self.client.images.get(f"{name}@{digest}")
            raise RuntimeError(f"{name}@{digest} is still on the host after removing it")
        except docker.errors.ImageNotFound:
            pass
        shutil.rmtree(context)
        return version, digest


class ImageInstance:
    """A hookdeploy instance in a temp folder serving one image app, `api`, from the registry."""

    def __init__(self, registry: Registry, root: Path, drain_seconds: float = 0.2):
        self.name = "benchimg" + secrets.token_hex(3)
        self.port = free_port()
        self.root = root
        self.config = root / "deploy.toml"
        self.config.write_text(f"""
[server]
name = "{self.name}"
state_dir = "state"
[registry]
url = "{registry.url}"
username = "{registry.username}"
password_env = "{PASSWORD_ENV}"
insecure = true
[proxy]
image = "{BASE_IMAGE}"
publish = "127.0.0.1:{self.port}"
[apps.api]
image = "{registry.url}/{REPOSITORY}"
drain_seconds = {drain_seconds}
[apps.api.health]
path = "/health"
contains = "healthy"
interval = 0.05
""")
        self.env = {**os.environ, "HOOKDEPLOY_CONFIG": str(self.config), PASSWORD_ENV: registry.password}
        self.worker: subprocess.Popen | None = None
        self.worker_log = root / "worker.log"

    def start_worker(self) -> None:
        with open(self.worker_log, "w") as log:
            self.worker = subprocess.Popen([HOOKDEPLOY, "worker"], env=self.env, stdout=subprocess.DEVNULL,
                                           stderr=log, stdin=subprocess.DEVNULL)
        time.sleep(0.5)
        if self.worker.poll() is not None:
            raise RuntimeError(f"the worker exited ({self.worker.returncode}):\n{self.worker_log.read_text()[-3000:]}")

    def deploy(self, image: str) -> dict:
        """`hookdeploy deploy api --image IMAGE --json`; return the queued job."""
        return json.loads(run(HOOKDEPLOY, "deploy", "api", "--image", image, "--json", env=self.env).stdout)

    def wait_for_release(self, digest: str, timeout: float = 120.0) -> float:
        """Poll the proxy every 5 ms until release digest[7:19] answers; return when (monotonic)."""
        release = digest.removeprefix("sha256:")[:12]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if served_release("127.0.0.1", self.port) == release:
                return time.monotonic()
            if self.worker is not None and self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({self.worker.returncode})")
            time.sleep(0.005)
        raise TimeoutError(f"release {release} never answered through the proxy")

    def page(self) -> str:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/")
            return connection.getresponse().read().decode(errors="replace")
        finally:
            connection.close()

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait(10)

    def remove_docker_objects(self) -> None:
        """Containers, images and network labelled hookdeploy.instance=NAME, and images named NAME/..."""
        remove_by_label(f"hookdeploy.instance={self.name}")
        pulled = sorted(set(run("docker", "images", "-q", "--filter", f"reference={self.name}/*").stdout.split()))
        if pulled:
            subprocess.run(["docker", "rmi", "-f", *pulled], capture_output=True)
        subprocess.run(["docker", "network", "rm", self.name], capture_output=True)


def health_answer(ip: str) -> bool:
    """True once GET /health at the container answers 200 with "healthy"."""
    connection = http.client.HTTPConnection(ip, 80, timeout=1)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        return response.status == 200 and "healthy" in response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def floor(client: docker.DockerClient, registry: Registry, elsewhere: Elsewhere, network: str,
          label: dict[str, str], tag: str) -> float:
    """pull by digest + run + first healthy /health, for a fresh image just pushed."""
    _, digest = elsewhere.publish(tag)
    started = time.monotonic()
    image = client.images.pull(f"{registry.url}/{REPOSITORY}", tag=digest, auth_config=registry.auth_config)
    container = client.containers.run(image.id, detach=True, network=network, labels=label)
    container.reload()
    ip = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    deadline = started + 60
    while not health_answer(ip):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the floor's container at {ip} never answered /health")
        time.sleep(0.005)
    took = time.monotonic() - started
    container.remove(force=True)
    client.images.remove(image.id, force=True)
    return took


def image_to_live(instance: ImageInstance, elsewhere: Elsewhere, tag: str) -> tuple[float, float]:
    """(deploy command -> live, deploy command -> returned) for a fresh image pushed as TAG."""
    version, digest = elsewhere.publish(tag)
    started = time.monotonic()
    job = instance.deploy(tag)
    queued = time.monotonic()
    if job.get("digest") != digest:
        raise RuntimeError(f"deploy --image {tag} queued {job.get('digest')}, the registry has {digest}")
    live = instance.wait_for_release(digest)
    if version not in instance.page():
        raise RuntimeError(f"release {digest[7:19]} is live but does not serve {version!r}")
    return live - started, queued - started


def leftovers(client: docker.DockerClient, labels: list[str], network_names: list[str], prefix: str) -> list[str]:
    found = []
    for label in labels:
        found += [f"container {c.name}" for c in client.containers.list(all=True, filters={"label": label})]
        found += [f"image {i.short_id}" for i in client.images.list(filters={"label": label})]
    found += [f"network {n.name}" for n in client.networks.list(names=network_names)]
    found += [f"image {tag}" for i in client.images.list() for tag in i.tags if tag.startswith(prefix)]
    return found


def environment(client: docker.DockerClient, registry: Registry, payload_kb: int) -> list[str]:
    version, info = client.version(), client.info()
    registry_version = run("docker-registry", "--version").stdout.split()[-1]
    base = client.images.get(BASE_IMAGE)
    return [
        f"engine: Docker {version['Version']} (API {version['ApiVersion']}, {info.get('Driver')} storage, "
        f"{info.get('NCPU')} CPUs, {info.get('MemTotal', 0) / 2**30:.1f} GiB), docker SDK {docker.__version__}, "
        f"Python {sys.version.split()[0]}",
        f"registry: docker-registry {registry_version} on {registry.url} (htpasswd basic auth, filesystem storage, "
        f"plain HTTP)",
        f"image: {BASE_IMAGE} ({base.attrs['Size'] / 1e6:.1f} MB, already on the host) + a fresh layer each round "
        f"(page, /health, {payload_kb} kB random payload), built, pushed and removed here before each measure",
    ]


def interrupted(*_) -> None:
    """SIGTERM: clean up as on Ctrl-C."""
    raise KeyboardInterrupt


def describe(name: str, values: list[float]) -> str:
    return f"{name:<40}{statistics.median(values):>9.2f}{min(values):>8.2f}{max(values):>8.2f}{len(values):>4}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--payload-kb", type=int, default=256, help="random bytes in each image's own layer")
    options = parser.parse_args()
    problem = registry_problem()
    if problem:
        sys.exit(problem)
    signal.signal(signal.SIGTERM, interrupted)

    began = time.monotonic()
    client = docker.from_env(timeout=120)
    root = Path(tempfile.mkdtemp(prefix="hookdeploy-bench-image-"))
    registry = Registry(root / "registry", username="bench")
    (root / "instance").mkdir()
    instance = ImageInstance(registry, root / "instance")
    bench_label = {"hookdeploy.bench": instance.name}
    floor_network = f"{instance.name}-floor"
    elsewhere = Elsewhere(client, registry, root, bench_label, options.payload_kb)
    floors: list[float] = []
    ours: list[float] = []
    queued: list[float] = []
    failed = True
    try:
        registry.start()
        for line in environment(client, registry, options.payload_kb):
            print(line, flush=True)
        client.networks.create(floor_network, driver="bridge", labels=bench_label)
        instance.start_worker()
        # Warm-up, not measured: the first deploy makes the network and the proxy; one floor round.
        ours_first, _ = image_to_live(instance, elsewhere, "warmup")
        floor(client, registry, elsewhere, floor_network, bench_label, "floor-warmup")
        time.sleep(0.5)
        for round_number in range(1, options.rounds + 1):
            floors.append(floor(client, registry, elsewhere, floor_network, bench_label, f"floor-{round_number}"))
            live, returned = image_to_live(instance, elsewhere, f"r{round_number}")
            ours.append(live)
            queued.append(returned)
            print(f"round {round_number}: floor {floors[-1]:.2f} s, hookdeploy {live:.2f} s", flush=True)
            time.sleep(0.5)  # let the drain of the previous release end
        failed = False
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if failed and instance.worker_log.exists():
            print("worker log (tail):\n" + instance.worker_log.read_text(errors="replace")[-3000:], file=sys.stderr)
        steps = [instance.stop_worker, instance.remove_docker_objects,
                 lambda: remove_by_label(f"hookdeploy.bench={instance.name}"),
                 lambda: subprocess.run(["docker", "network", "rm", floor_network], capture_output=True),
                 lambda: registry.remove_local_tags(client), registry.stop]
        for step in steps:
            try:
                step()
            except Exception as error:  # noqa: BLE001 - every other step must still run
                print(f"cleanup: {error}", file=sys.stderr)
        left = leftovers(client, [f"hookdeploy.instance={instance.name}", f"hookdeploy.bench={instance.name}"],
                         [instance.name, floor_network], f"{registry.url}/")
        if failed and left:
            print(f"left behind: {', '.join(left)}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    floor_median, ours_median = statistics.median(floors), statistics.median(ours)
    print(f"{'measure':<40}{'median s':>9}{'min s':>8}{'max s':>8}{'n':>4}")
    print(describe("floor: pull by digest + run + healthy", floors))
    print(describe("hookdeploy: deploy --image TAG -> live", ours))
    print(describe("  of which: deploy command returned", queued))
    print(f"first deploy (network + proxy made, not in the table): {ours_first:.2f} s")
    print(f"deploy-to-live / floor = {ours_median / floor_median:.2f}x; overhead {ours_median - floor_median:.2f} s "
          f"(medians of {options.rounds} rounds)")
    print(f"left behind: {', '.join(left) if left else 'nothing'}; run took {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
