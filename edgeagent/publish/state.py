"""The retained ``<base>/state`` message: what the device is doing now.

Stages change it with :class:`edgeagent.events.StateUpdate`; the publisher
keeps one :class:`DeviceState` for the life of the daemon (a restarted
publisher stage continues with it) and adds the outbox figures, the MQTT
version in use, the resident memory and a timestamp when it renders.
"""

from __future__ import annotations

import json
import time
from typing import Any

from edgeagent import __version__
from edgeagent.events import JsonObject
from edgeagent.publish.outbox import OutboxStats, rfc3339
from edgeagent.publish.topics import CONTRACT_VERSION

# Fields whose change is published at once; the others ride on the periodic refresh.
PROMPT_FIELDS = frozenset(
    {
        "tier",
        "tier_setting",
        "tiers",
        "listening",
        "muted",
        "task",
        "target_language",
        "model",
        "conversation_turns",
        "describing",
    }
)


class DeviceState:
    """The state message's fields; see docs/mqtt.md for each one."""

    def __init__(self, overflow_policy: str) -> None:
        self.values: dict[str, Any] = {
            "contract": CONTRACT_VERSION,
            "version": __version__,
            "model": None,
            "tier": None,
            "tier_setting": "auto",
            "tiers": ["auto"],
            "task": "assistant",
            "target_language": None,
            "listening": False,
            "muted": False,
            "battery_percent": None,
            "charging": None,
            "temperature_c": None,
            "decode_tokens_per_s": None,
            "describing": False,
        }
        self.overflow_policy = overflow_policy

    def apply(self, changes: JsonObject) -> bool:
        """Take new values; True if a field that is published at once changed."""
        prompt = False
        for key, value in changes.items():
            if self.values.get(key) != value:
                self.values[key] = value
                prompt = prompt or key in PROMPT_FIELDS
        return prompt

    def render(self, outbox: OutboxStats, protocol: str) -> bytes:
        message = {
            **self.values,
            "rss_mb": rss_mb(),
            "mqtt_protocol": protocol,
            "outbox": {
                "depth": outbox.depth,
                "bytes": outbox.bytes,
                "dropped": outbox.dropped,
                "overflow": self.overflow_policy,
            },
            "ts": rfc3339(time.time()),
        }
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def rss_mb() -> float | None:
    """Resident set size of this process, MB (VmRSS), or None where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None
