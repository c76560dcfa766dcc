"""The Docker engine, through the docker SDK: the one place hookdeploy talks to it."""

from __future__ import annotations

import docker
import docker.errors

from hookdeploy.errors import DockerUnavailable


def engine(timeout: int = 60) -> docker.DockerClient:
    """A client for the local engine ($DOCKER_HOST or the default socket); DockerUnavailable if it does not answer."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except docker.errors.DockerException as error:
        raise DockerUnavailable(f"the Docker engine does not answer: {error}") from None


def image_exists(client: docker.DockerClient, name: str) -> bool:
    """True if the engine has an image of that name locally."""
    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False
