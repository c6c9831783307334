"""Home Assistant MQTT device discovery: one retained config for the whole device.

Published to ``<prefix>/device/<device_id>/config`` after every connection
and again whenever ``<prefix>/status`` says ``online`` (Home Assistant
restarted). Every entity reads the retained ``<base>/state`` message, except
the utterance ``event`` entity, which reads ``<base>/transcript``. Controls
send exactly the payloads :mod:`edgeagent.publish.commands` accepts as plain
words: the select its option, the switch ``ON``/``OFF``, the button ``PRESS``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from edgeagent import __version__
from edgeagent.publish.topics import AVAILABLE, UNAVAILABLE, Topics

SWITCH_ON, SWITCH_OFF, BUTTON_PRESS = "ON", "OFF", "PRESS"


def discovery_payload(topics: Topics, tiers: Sequence[str], model: str | None) -> dict[str, Any]:
    """The device discovery config; ``tiers`` are the select's options ("auto" first)."""
    uid = topics.device_id
    state = topics.state

    def sensor(key: str, template: str, **extra: Any) -> dict[str, Any]:
        return {
            "platform": "sensor",
            "unique_id": f"edgeagent_{uid}_{key}",
            "state_topic": state,
            "value_template": template,
            **extra,
        }

    components = {
        "battery": sensor(
            "battery",
            "{{ value_json.battery_percent }}",
            name="Battery",
            device_class="battery",
            unit_of_measurement="%",
            state_class="measurement",
        ),
        "temperature": sensor(
            "temperature",
            "{{ value_json.temperature_c }}",
            name="Temperature",
            device_class="temperature",
            unit_of_measurement="°C",
            state_class="measurement",
        ),
        "tier_running": sensor(
            "tier_running", "{{ value_json.tier }}", name="Tier running", icon="mdi:layers"
        ),
        "decode_speed": sensor(
            "decode_speed",
            "{{ value_json.decode_tokens_per_s }}",
            name="Decode speed",
            unit_of_measurement="tokens/s",
            state_class="measurement",
            icon="mdi:speedometer",
        ),
        "memory": sensor(
            "memory",
            "{{ value_json.rss_mb }}",
            name="Memory",
            device_class="data_size",
            unit_of_measurement="MB",
            state_class="measurement",
            entity_category="diagnostic",
        ),
        "outbox": sensor(
            "outbox",
            "{{ value_json.outbox.depth }}",
            name="Outbox",
            unit_of_measurement="results",
            state_class="measurement",
            entity_category="diagnostic",
            icon="mdi:tray-full",
        ),
        "utterance": {
            "platform": "event",
            "unique_id": f"edgeagent_{uid}_utterance",
            "name": "Utterance",
            "state_topic": topics.result("transcript"),
            "event_types": ["final", "partial"],
            "value_template": '{"event_type": "{{ "final" if value_json.final else "partial" }}",'
            ' "text": {{ value_json.text | tojson }},'
            ' "utterance_id": {{ value_json.utterance_id | tojson }}}',
            "icon": "mdi:account-voice",
        },
        "tier": {
            "platform": "select",
            "unique_id": f"edgeagent_{uid}_tier",
            "name": "Tier",
            "command_topic": topics.command("tier"),
            "state_topic": state,
            "value_template": "{{ value_json.tier_setting }}",
            "options": list(tiers),
            "icon": "mdi:layers-triple",
        },
        "mute": {
            "platform": "switch",
            "unique_id": f"edgeagent_{uid}_mute",
            "name": "Mute",
            "command_topic": topics.command("mute"),
            "payload_on": SWITCH_ON,
            "payload_off": SWITCH_OFF,
            "state_topic": state,
            "value_template": "{{ 'ON' if value_json.muted else 'OFF' }}",
            "state_on": SWITCH_ON,
            "state_off": SWITCH_OFF,
            "icon": "mdi:microphone-off",
        },
        "reset": {
            "platform": "button",
            "unique_id": f"edgeagent_{uid}_reset",
            "name": "Reset conversation",
            "command_topic": topics.command("reset"),
            "payload_press": BUTTON_PRESS,
            "icon": "mdi:restart",
        },
    }
    return {
        "device": {
            "identifiers": [f"edgeagent_{uid}"],
            "name": f"edgeagent {uid}",
            "manufacturer": "edgeagent",
            "model": f"Gemma 3n agent ({model})" if model else "Gemma 3n agent",
            "sw_version": __version__,
        },
        "origin": {"name": "edgeagent", "sw_version": __version__},
        "availability": [
            {
                "topic": topics.availability,
                "payload_available": AVAILABLE,
                "payload_not_available": UNAVAILABLE,
            }
        ],
        "qos": 1,
        "components": components,
    }


def render_discovery(topics: Topics, tiers: Sequence[str], model: str | None) -> bytes:
    return json.dumps(discovery_payload(topics, tiers, model), ensure_ascii=False).encode()
