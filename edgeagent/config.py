"""Load settings from their five layers, and say which layer is wrong when one is.

Precedence, later wins::

    built-in defaults < hardware profile < config file < environment < CLI flags

The config file is ``--config`` or, when that is not given, ``/etc/edgeagent/
edgeagent.toml`` if it exists. Environment variables start with ``EDGEAGENT_``
and use ``__`` for nesting (``EDGEAGENT_MQTT__PORT=1884``). The profile is
chosen by the ``profile`` setting, which itself may come from the file, the
environment or ``--profile``.

Layers are validated cumulatively (defaults + profile, then + file, ...), so
an error is reported against the first layer that makes the settings invalid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource

from edgeagent.errors import ConfigError
from edgeagent.profiles import HardwareProfile, load_profile
from edgeagent.settings import ENV_NESTED_DELIMITER, ENV_PREFIX, Settings
from edgeagent.tomlfile import parse_value, read_toml, validation_messages

DEFAULT_CONFIG_PATH = Path("/etc/edgeagent/edgeagent.toml")


@dataclass(frozen=True)
class Layer:
    """One source of settings: where it came from and the partial mapping it supplies."""

    source: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Loaded:
    """The validated settings and what they were made of."""

    settings: Settings
    config_path: Path | None
    profile: HardwareProfile | None
    layers: tuple[Layer, ...]


def resolve_config_path(explicit: Path | None, default: Path = DEFAULT_CONFIG_PATH) -> Path | None:
    """``--config`` if given, else the default file if it exists, else no file."""
    if explicit is not None:
        return explicit
    return default if default.is_file() else None


def load_settings(
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    default_config_path: Path = DEFAULT_CONFIG_PATH,
) -> Settings:
    """Validated, immutable settings; :class:`ConfigError` names the file and field on error."""
    return load(config_path, overrides, default_config_path=default_config_path).settings


def load(
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    default_config_path: Path = DEFAULT_CONFIG_PATH,
) -> Loaded:
    """Like :func:`load_settings`, also returning the file, profile and layers used."""
    path = resolve_config_path(config_path, default_config_path)
    file_layer = Layer(str(path), read_toml(path)) if path else None
    env_layer = Layer("environment", _environment())
    cli_layer = Layer("command line", dict(overrides or {}))
    # An empty file still counts as a source; an empty environment or command line does not.
    upper = [
        layer
        for layer in (file_layer, env_layer, cli_layer)
        if layer is not None and (layer is file_layer or layer.values)
    ]

    profile_name = _profile_name(upper)
    profile = load_profile(profile_name) if profile_name else None
    layers = [Layer(f"profile {profile_name}", profile.settings_layer())] if profile else []
    layers += upper

    merged: dict[str, Any] = {}
    settings = Settings.model_validate({})
    for layer in layers:
        merged = deep_merge(merged, layer.values)
        settings = _validate(merged, layer)
    settings = _resolve_threads(settings, profile)
    return Loaded(settings, path, profile, tuple(layers))


def overrides_from_pairs(pairs: list[str]) -> dict[str, Any]:
    """``["mqtt.port=1884", ...]`` (``--set``) as a nested mapping; values parse as TOML."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"command line: --set {pair!r}: expected KEY=VALUE")
        result = deep_merge(result, nested(key.strip(), parse_value(text.strip())))
    return result


def nested(dotted: str, value: Any) -> dict[str, Any]:
    """``nested("mqtt.port", 1)`` is ``{"mqtt": {"port": 1}}``."""
    *parents, last = dotted.split(".")
    result: dict[str, Any] = {last: value}
    for part in reversed(parents):
        result = {part: result}
    return result


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; tables merge key by key, everything else is replaced."""
    result = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def _environment() -> dict[str, Any]:
    try:
        return dict(EnvSettingsSource(Settings)())
    except Exception as exc:  # pydantic-settings raises SettingsError for undecodable JSON
        raise ConfigError(f"environment: {exc}") from exc


def _profile_name(layers: list[Layer]) -> str | None:
    name: str | None = None
    for layer in layers:
        if "profile" in layer.values:
            value = layer.values["profile"]
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{layer.source}: profile: expected a name, got {value!r}")
            name = value
    return name or None


def _validate(merged: Mapping[str, Any], layer: Layer) -> Settings:
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        lines = [_attributed(layer, line) for line in validation_messages(exc)]
        raise ConfigError("\n".join(lines)) from exc


def _attributed(layer: Layer, line: str) -> str:
    if layer.source != "environment":
        return f"{layer.source}: {line}"
    dotted = line.split(": ", 1)[0]
    variable = ENV_PREFIX + dotted.upper().replace(".", ENV_NESTED_DELIMITER)
    return f"environment: {line} (from {variable})"


def _resolve_threads(settings: Settings, profile: HardwareProfile | None) -> Settings:
    if settings.model.threads:
        return settings
    threads = profile.cpu.threads if profile else (os.cpu_count() or 1)
    model = settings.model.model_copy(update={"threads": threads})
    return settings.model_copy(update={"model": model})
