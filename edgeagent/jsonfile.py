"""Reading the JSON files a checkpoint carries (config, preprocessor config, shard index)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeagent.errors import EdgeAgentError


def read_json_object(path: Path, error: type[EdgeAgentError], what: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``error`` naming the file and ``what`` it is when it cannot
    be read, is not JSON, or is not an object."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from exc
    if not isinstance(raw, dict):
        raise error(f"{path}: {what} must be a JSON object, got {type(raw).__name__}")
    return raw
