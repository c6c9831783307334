"""The settings as commented TOML: ``edgeagent config show`` and the example config."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from edgeagent.config import Loaded
from edgeagent.settings import Settings
from edgeagent.tomlfile import dumps


def render(loaded: Loaded, *, comments: bool = False, commented: bool = False) -> str:
    """The settings as TOML, headed by where they came from."""
    header = f"# edgeagent effective settings: {origin(loaded)}\n"
    if loaded.settings.mqtt.password is not None:
        header += "# mqtt.password is masked; keep the real one in EDGEAGENT_MQTT__PASSWORD\n"
    header += "\n"
    data = loaded.settings.model_dump(mode="json")
    return header + dumps(
        data, descriptions=descriptions() if comments else None, commented=commented
    )


def descriptions(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, str]:
    """Dotted setting name -> its description (sections: their docstring's first line)."""
    result: dict[str, str] = {}
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            result[dotted] = (annotation.__doc__ or "").strip().splitlines()[0]
            result |= descriptions(annotation, f"{dotted}.")
        elif field.description:
            result[dotted] = field.description
    return result


def origin(loaded: Loaded) -> str:
    """Where the settings came from, lowest layer first."""
    return "defaults < " + " < ".join([layer.source for layer in loaded.layers] or ["nothing else"])
