"""deploy.toml as the rest of the code sees it: finding it, loading it into a Config, and the
secrets its features need that are missing now.

The schema (the frozen dataclasses, which hold every default) is config_schema.py's and the
validation is config_parse.py's; this module re-exports both, so callers import from here only.
Imports point one way: config → config_parse → config_schema.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Mapping

from hookdeploy.core.config_parse import parse
from hookdeploy.core.config_schema import (NOTIFY_EVENTS, NOTIFY_FORMATS, PROVIDERS, PROXY_HEADERS, AppConfig, Config,
                                           GuardConfig, HealthConfig, NotifyConfig, ProxyConfig, RegistryConfig, ServerConfig, TaskConfig,
                                           TlsConfig, TlsFiles, WebhookConfig, is_local_path, read_secret,
                                           ssh_host)
from hookdeploy.core.errors import ConfigError

# What callers import from here: the schema and parse re-exported, and this module's own.
__all__ = ["NOTIFY_EVENTS", "NOTIFY_FORMATS", "PROVIDERS", "PROXY_HEADERS", "AppConfig", "Config", "GuardConfig", "HealthConfig",
           "NotifyConfig", "ProxyConfig", "RegistryConfig", "ServerConfig", "TaskConfig", "TlsConfig", "TlsFiles", "WebhookConfig", "is_local_path", "read_secret", "ssh_host", "parse",
           "config_path", "load", "missing_secrets"]


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    """`--config PATH`, else $HOOKDEPLOY_CONFIG, else ./deploy.toml."""
    if explicit is not None and not os.fspath(explicit):
        raise ConfigError("--config: the path is empty (leave the option out to use $HOOKDEPLOY_CONFIG or ./deploy.toml)")
    chosen = explicit or os.environ.get("HOOKDEPLOY_CONFIG") or "deploy.toml"
    return Path(chosen).absolute()


def load(path: str | os.PathLike | None = None) -> Config:
    """Read and validate deploy.toml; ConfigError lists every problem found."""
    resolved = config_path(path)
    try:
        raw = tomllib.loads(resolved.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{resolved}: no such file (use --config PATH or $HOOKDEPLOY_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{resolved}: cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{resolved}: not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{resolved}: not valid TOML: arrays or inline tables nested too deeply") from None
    except ValueError as error:  # Python refuses to read an integer of more than 4300 digits
        raise ConfigError(f"{resolved}: not valid TOML: {str(error).split(':')[0]}") from None
    return parse(raw, resolved)


def missing_secrets(config: Config, *, tokens: bool = False, webhooks: bool = False, app_env: bool = False) -> list[str]:
    """Problems with secrets and `from_env` variables the named features need, read now (the
    registry password with app_env: the worker, which pushes and pulls, needs it)."""
    problems = []
    registry = config.registry
    if app_env and registry is not None and registry.username and registry.password() is None:
        problems.append(_secret_problem("registry", registry.password_env, registry.password_file,
                                        "pushes and pulls", prefix="password"))
    if tokens and config.server.secret() is None:
        problems.append(_secret_problem("server", config.server.secret_env, config.server.secret_file, "API tokens"))
    for app in config.apps.values():
        if webhooks and app.webhook is not None and app.webhook.secret() is None:
            problems.append(_secret_problem(f"apps.{app.name}.webhook", app.webhook.secret_env,
                                            app.webhook.secret_file, "its webhooks"))
        if app_env and app.repo_token_env and not os.environ.get(app.repo_token_env):
            problems.append(f"apps.{app.name}.repo_token_env: environment variable {app.repo_token_env} is not set "
                            "(fetching its repo needs the token)")
        if app_env:
            for name, value in app.env.items():
                if isinstance(value, Mapping) and value["from_env"] not in os.environ:
                    problems.append(f"apps.{app.name}.env.{name}: environment variable {value['from_env']} is not set")
    return problems


def _secret_problem(key: str, env_name: str | None, file_name: str | None, feature: str, prefix: str = "secret") -> str:
    if file_name:
        return f"{key}.{prefix}_file: {file_name} is missing, unreadable or empty ({feature} need it)"
    if env_name:
        return f"{key}.{prefix}_env: environment variable {env_name} is not set ({feature} need it)"
    return f"{key}: no secret_env or secret_file ({feature} need a secret)"
