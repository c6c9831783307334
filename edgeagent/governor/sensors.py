"""Battery and thermal sensors, read from sysfs-style files under a configurable root.

Battery: ``capacity`` (percent, 0-100) and ``status`` (Charging, Discharging,
Full, Not charging, Unknown) of a power supply. Thermal: zone ``temp`` files
(millidegrees Celsius; -40 to 150 degC accepted), the hottest counting; the
zone's ``type`` file beside it names it in logs.

A configured file that is missing, unreadable, garbage or out of range gives
no reading ("unknown") and one warning, repeated only after it has been read
successfully again. Nothing here raises for a sensor fault.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from edgeagent.governor.policy import Readings

_LOGGER = logging.getLogger(__name__)

MIN_C, MAX_C = -40.0, 150.0
_CHARGING = {"charging": True, "full": True, "discharging": False, "not charging": False}
_MAX_BYTES = 256

Opener = Callable[[Path], str]
_T = TypeVar("_T")


def read_sysfs(path: Path) -> str:
    """The text of a small sysfs file (the seam tests replace to inject faults)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, _MAX_BYTES).decode("ascii")
    finally:
        os.close(fd)


def rooted(root: Path, path: Path) -> Path:
    """``path`` (absolute, as the profile names it) under ``root``."""
    return root / path.relative_to(path.anchor) if path.is_absolute() else root / path


class SensorFault(ValueError):
    """A reading that cannot be used."""


class SensorReader:
    """Reads the configured sensors; ``read()`` never raises for a sensor fault."""

    def __init__(
        self,
        capacity_path: Path | None,
        status_path: Path | None,
        zone_paths: Sequence[Path],
        root: Path = Path("/"),
        opener: Opener = read_sysfs,
    ) -> None:
        self.capacity_path = rooted(root, capacity_path) if capacity_path else None
        self.status_path = rooted(root, status_path) if status_path else None
        self.zone_paths = tuple(rooted(root, p) for p in zone_paths)
        self._open = opener
        self._faulty: set[Path] = set()

    @property
    def has_battery(self) -> bool:
        return self.capacity_path is not None

    def read(self) -> Readings:
        percent = charging = None
        if self.capacity_path is not None:
            percent = self._value(self.capacity_path, _percent)
        if self.status_path is not None:
            charging = self._value(self.status_path, _charging)
        temps = [self._value(p, _millidegrees) for p in self.zone_paths]
        known = [t for t in temps if t is not None]
        return Readings(
            battery_percent=percent,
            charging=charging,
            temperature_c=max(known) if known else None,
            thermal_complete=len(known) == len(temps),
        )

    def zone_type(self, path: Path) -> str:
        """The ``type`` of the zone whose ``temp`` is ``path``, or "?"."""
        try:
            return self._open(path.with_name("type")).strip() or "?"
        except (OSError, UnicodeDecodeError):
            return "?"

    def _value(self, path: Path, parse: Callable[[str], _T]) -> _T | None:
        try:
            value = parse(self._open(path))
        except (OSError, UnicodeDecodeError, SensorFault) as exc:
            if path not in self._faulty:
                self._faulty.add(path)
                what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                _LOGGER.warning("governor: sensor %s gives no reading: %s", path, what)
            return None
        if path in self._faulty:
            self._faulty.discard(path)
            _LOGGER.info("governor: sensor %s reads again", path)
        return value


def _number(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise SensorFault(f"not a number: {text.strip()[:32]!r}") from None


def _percent(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 100:
        raise SensorFault(f"capacity {value}% is out of range 0-100")
    return float(value)


def _millidegrees(text: str) -> float:
    value = _number(text) / 1000
    if not MIN_C <= value <= MAX_C:
        raise SensorFault(f"temperature {value} degC is out of range {MIN_C}-{MAX_C}")
    return value


def _charging(text: str) -> bool | None:
    word = text.strip().lower()
    if word == "unknown":
        return None
    if word not in _CHARGING:
        raise SensorFault(f"unknown status {text.strip()[:32]!r}")
    return _CHARGING[word]
