"""The governor's tests reuse the MQTT fixtures (mosquitto on loopback, the daemon in process)."""

from __future__ import annotations

from tests.publish.conftest import (  # noqa: F401 - fixtures, found by name
    _isolated,
    daemons,
    mosquitto,
    short_tmp,
    subscribers,
    tiny_model,
)
