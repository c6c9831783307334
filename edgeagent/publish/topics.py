"""Names on the wire: device id, client id and every topic of the MQTT contract (docs/mqtt.md)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from edgeagent.settings import MqttSettings

CONTRACT_VERSION = 1
"""Version of the MQTT contract; it changes only when a field or topic changes meaning."""

COMMANDS = ("ask", "listen", "tier", "mute", "reset", "task")
AVAILABLE, UNAVAILABLE = "online", "offline"


def default_device_id(hostname: str | None = None) -> str:
    """The host name, lower-cased, every character but ``a-z 0-9 _ -`` replaced by ``-``."""
    name = (hostname if hostname is not None else socket.gethostname()).split(".")[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", name).strip("-_")[:64]
    return name or "edgeagent"


@dataclass(frozen=True)
class Topics:
    """The topics of one device."""

    device_id: str
    base: str  # <base_topic>/<device_id>
    discovery_prefix: str

    @classmethod
    def from_settings(cls, mqtt: MqttSettings) -> Topics:
        device = mqtt.device_id or default_device_id()
        return cls(device, f"{mqtt.base_topic}/{device}", mqtt.discovery_prefix)

    @property
    def client_id(self) -> str:
        return f"edgeagent-{self.device_id}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    def result(self, name: str) -> str:
        """``<base>/answer``, ``<base>/event``, ..."""
        return f"{self.base}/{name}"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    @property
    def command_filter(self) -> str:
        return f"{self.base}/cmd/+"

    def command_name(self, topic: str) -> str | None:
        """``ask`` for ``<base>/cmd/ask``; None for a topic that is not this device's command."""
        prefix = f"{self.base}/cmd/"
        if not topic.startswith(prefix):
            return None
        name = topic[len(prefix) :]
        return name if name and "/" not in name else None

    @property
    def discovery(self) -> str:
        return f"{self.discovery_prefix}/device/{self.device_id}/config"

    @property
    def homeassistant_status(self) -> str:
        return f"{self.discovery_prefix}/status"
