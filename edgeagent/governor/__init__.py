"""Power and thermal governor: sensors, the tier ladder, and a pure policy over both.

- :mod:`.sensors` reads battery and thermal files (sysfs, rooted anywhere).
- :mod:`.ladder` turns the profile's tier names into rungs checked against the
  loaded checkpoint.
- :mod:`.policy` decides the next rung from readings: a pure function.
"""

from __future__ import annotations

from edgeagent.governor.ladder import Ladder, Rung, build_ladder
from edgeagent.governor.policy import Decision, PolicyConfig, PolicyState, Readings, decide
from edgeagent.governor.sensors import SensorReader

__all__ = [
    "Decision",
    "Ladder",
    "PolicyConfig",
    "PolicyState",
    "Readings",
    "Rung",
    "SensorReader",
    "build_ladder",
    "decide",
]
