"""What every container of an app runs with: the one place candidates, replicas, release commands,
tasks and one-off runs get their environment, network, volumes and limits from.

Rules:
- Every container hookdeploy starts for an app (any role) takes its options from `run_options`;
  nothing else builds them, so a key added to an app reaches all of them at once.
"""

from __future__ import annotations

from hookdeploy.core.config import AppConfig, Config


def run_options(config: Config, app: AppConfig) -> dict:
    """The docker SDK `containers.run`/`create` keyword arguments every container of `app` shares."""
    return {"network": config.server.name, "environment": app.container_env()}
