"""TOML in and out, and validation errors worded for the person editing the file.

Reading uses :mod:`tomllib`. Writing covers what settings and profiles hold
(tables, strings, numbers, booleans, arrays of those); ``None`` has no TOML
form and is written as a commented-out key.
"""

from __future__ import annotations

import math
import re
import textwrap
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeagent.errors import ConfigError

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_COMMENT_WIDTH = 88


def read_toml(path: Path, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Parse ``path``; a missing, unreadable or malformed file raises ``error`` naming it."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: invalid TOML: not UTF-8 ({exc.reason})") from exc


def parse_value(text: str) -> Any:
    """A TOML value (``1884``, ``true``, ``["a", "b"]``, ``"x"``); anything else is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def validation_messages(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[str]:
    """One ``dotted.field: what is wrong`` line per error in ``exc``."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in (*prefix, *err["loc"])) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        else:
            msg = err["msg"]
            if err["type"] not in {"missing", "value_error", "assertion_error"}:
                msg += f" (got {_short(err.get('input'))})"
        lines.append(f"{loc}: {msg}")
    return lines


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def dumps(
    data: Mapping[str, Any],
    *,
    descriptions: Mapping[str, str] | None = None,
    commented: bool = False,
) -> str:
    """Render ``data`` as TOML.

    ``descriptions`` maps dotted keys (``mqtt.port``) to comment text written
    above the key; ``commented`` writes every key commented out, for an example
    file that documents defaults without setting them.
    """
    out: list[str] = []
    _table(out, data, (), descriptions or {}, commented)
    return "\n".join(out).strip("\n") + "\n"


def _table(
    out: list[str],
    data: Mapping[str, Any],
    path: tuple[str, ...],
    descriptions: Mapping[str, str],
    commented: bool,
) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    for key, value in scalars.items():
        dotted = ".".join((*path, key))
        if dotted in descriptions:
            out.extend(_comment(descriptions[dotted]))
        if value is None:
            out.append(f"# {_key(key)}: not set")
        else:
            out.append(f"{'#' if commented else ''}{_key(key)} = {_value(value)}")
        if descriptions:
            out.append("")
    for key, value in tables.items():
        sub = (*path, key)
        out.append("")
        if ".".join(sub) in descriptions:
            out.extend(_comment(descriptions[".".join(sub)]))
        out.append(f"[{'.'.join(_key(k) for k in sub)}]")
        _table(out, value, sub, descriptions, commented)


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, _COMMENT_WIDTH - 2)]


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:  # noqa: PLR0911 (one return per TOML type)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Path):
        return _string(str(value))
    raise TypeError(f"no TOML form for {type(value).__name__}")
