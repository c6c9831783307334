"""Property-based: over a thousand malformed commands to one running daemon (a real process).

Each payload is malformed by construction — invalid UTF-8, JSON that is not an
object, wrong types, missing or unknown fields, oversized, unknown command
names, stray words — and sent with an MQTT 5 response topic and correlation
data, so its ``error`` answer can be matched exactly. Afterwards the daemon is
still running and its state is what it was; commands to another device id are
ignored.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeagent.publish.topics import COMMANDS

from .mqtt_helpers import Mosquitto, Subscriber, nodelay, wait_for

BASE = "edgeagent/fuzzdev"
CONTROL_FIELDS = (
    "model", "tier", "tier_setting", "tiers", "task", "target_language", "listening", "muted",
    "conversation_turns",
)  # fmt: skip
VALID_TIER_WORDS = {"auto", "full", "e2b"}
PLAIN_WORDS = {"start", "stop", "ON", "OFF", "PRESS"}
MAX_COMMAND_BYTES = 4096

# -- strategies: malformed by construction ---------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner)
)
not_a_string = st.none() | st.booleans() | st.integers() | st.lists(st.integers(), max_size=3)
not_a_bool = st.none() | st.integers() | st.text() | st.lists(st.booleans(), max_size=2)


def _obj(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


not_listen_action = st.text().filter(lambda s: s not in ("start", "stop"))
not_a_tier = st.text().filter(lambda s: s not in VALID_TIER_WORDS)
not_a_task = st.text().filter(lambda s: s not in ("assistant", "transcribe", "translate"))
wrong_types = st.one_of(
    st.tuples(st.just("ask"), not_a_string.map(lambda v: _obj(text=v))),
    st.tuples(
        st.just("ask"), st.integers(max_value=0).map(lambda n: _obj(text="hi", max_new_tokens=n))
    ),
    st.tuples(st.just("listen"), not_listen_action.map(lambda v: _obj(action=v))),
    st.tuples(st.just("tier"), not_a_string.map(lambda v: _obj(tier=v))),
    st.tuples(st.just("tier"), not_a_tier.map(lambda v: _obj(tier=v))),
    st.tuples(st.just("mute"), not_a_bool.map(lambda v: _obj(muted=v))),
    st.tuples(st.just("task"), not_a_task.map(lambda v: _obj(task=v))),
    st.tuples(st.just("task"), st.just(_obj(task="translate"))),
    st.tuples(st.just("task"), st.just(_obj(task="assistant", target_language="de"))),
    st.tuples(st.just("reset"), json_values.map(lambda v: _obj(unexpected=v))),
    st.tuples(st.sampled_from(COMMANDS), st.just(b"{}")).filter(lambda c: c[0] != "reset"),
)
missing_or_extra = st.tuples(
    st.sampled_from(COMMANDS), st.text(min_size=1).filter(lambda k: k != "request_id")
).map(lambda c: (c[0], _obj(**{c[1] + "_x": 1})))
invalid_utf8 = st.tuples(
    st.sampled_from(COMMANDS), st.binary(max_size=256).map(lambda b: b"\xff" + b)
)
not_an_object = st.tuples(
    st.sampled_from(COMMANDS),
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
).filter(lambda c: not (c[0] == "tier" and c[1].strip().decode() in VALID_TIER_WORDS))
stray_words = st.tuples(
    st.sampled_from(COMMANDS),
    st.text(max_size=64)
    .filter(
        lambda s: s.strip() not in PLAIN_WORDS | VALID_TIER_WORDS and not s.strip().startswith("{")
    )
    .map(str.encode),
)
huge = st.tuples(
    st.sampled_from(COMMANDS),
    st.integers(MAX_COMMAND_BYTES + 1, 200_000).map(lambda n: b'{"text": "' + b"x" * n + b'"}'),
)
unknown_name = st.tuples(
    st.text("abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=24).filter(
        lambda n: n not in COMMANDS
    ),
    st.binary(max_size=64),
)
malformed = st.one_of(
    wrong_types, missing_or_extra, invalid_utf8, not_an_object, stray_words, huge, unknown_name
)


# -- the daemon and a requester ----------------------------------------------------------------


@dataclass
class Running:
    broker: Mosquitto
    daemon: subprocess.Popen[bytes]
    log: Path


class Requester:
    """An MQTT 5 client that sends requests with a response topic and waits for the answer."""

    def __init__(self, port: int) -> None:
        self.responses: dict[bytes, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        nodelay(self.client)
        self.client.loop_start()
        info = self.client.subscribe("test/responses/#", qos=1)
        assert info[0] == paho.MQTT_ERR_SUCCESS

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        with self.cond:
            self.responses[correlation] = json.loads(message.payload)
            self.cond.notify_all()

    def request(self, topic: str, payload: bytes, correlation: bytes, timeout: float) -> Any:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"test/responses/{correlation.decode()}"
        props.CorrelationData = correlation
        self.client.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)
        with self.cond:
            self.cond.wait_for(lambda: correlation in self.responses, timeout)
            return self.responses.get(correlation)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Running]:
    import tempfile  # noqa: PLC0415

    from tests.conftest import _clean_environ  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="ea-fz-", dir="/tmp") as directory:
        root = Path(directory)
        broker = Mosquitto(root / "broker")
        broker.start()
        config = root / "edgeagent.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{root / "state"}"\n[model]\npath = "{tiny_model}"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ndevice_id = "fuzzdev"\n'
            f"max_command_bytes = {MAX_COMMAND_BYTES}\n"
        )
        log = root / "daemon.log"
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "edgeagent", "run", "--config", str(config)],
                env=_clean_environ(),
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        try:
            wait_for(lambda: "connected to" in log.read_text(), 60, "the daemon to connect")
            yield Running(broker, daemon, log)
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=30)
            broker.stop()


def control_state(sub: Subscriber) -> dict[str, Any]:
    state = sub.payloads(f"{BASE}/state")[-1]
    return {k: state[k] for k in CONTROL_FIELDS}


def test_malformed_commands_get_errors_and_change_nothing(
    running: Running, subscribers: list[Subscriber]
) -> None:
    sub = Subscriber(running.broker.port, [f"{BASE}/state", f"{BASE}/event"])
    subscribers.append(sub)
    sub.wait(lambda s: bool(s.on(f"{BASE}/state")), 10, "the retained state")
    before = control_state(sub)
    assert before["tiers"] == ["auto", "full", "e2b"] and before["model"] == "model"
    requester = Requester(running.broker.port)
    sent: list[tuple[str, bytes]] = []

    @settings(
        max_examples=1100,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(malformed)
    def one(case: tuple[str, bytes]) -> None:
        name, payload = case
        correlation = str(len(sent)).encode()
        sent.append(case)
        answer = requester.request(f"{BASE}/cmd/{name}", payload, correlation, timeout=10)
        assert answer is not None, f"no answer to {name} {payload[:80]!r}"
        assert answer["event_type"] == "error", answer
        assert answer["command"] in (name if name in COMMANDS else None,)
        assert running.daemon.poll() is None, "the daemon is still running"

    try:
        one()
    finally:
        requester.close()
    assert len(sent) >= 1000
    errors = lambda s: [e for e in s.payloads(f"{BASE}/event") if e["event_type"] == "error"]  # noqa: E731
    sub.wait(lambda s: len(errors(s)) >= len(sent), 30, "an error event per malformed command")
    codes = {e["code"] for e in errors(sub)}
    assert {"invalid_payload", "payload_too_large", "unknown_command"} <= codes, codes

    # Valid commands addressed to another device are not this daemon's business.
    other = Subscriber(running.broker.port, ["test/other/#"])
    subscribers.append(other)
    for name, payload in [("mute", b"ON"), ("tier", b"e2b"), ("reset", b"PRESS")]:
        other.publish(f"edgeagent/otherdev/cmd/{name}", payload)
    count = len(sub.on(f"{BASE}/event"))
    import time  # noqa: PLC0415

    time.sleep(1.0)
    assert len(sub.on(f"{BASE}/event")) == count, "no event for another device's commands"

    # Unchanged: a fresh look at the retained state.
    fresh = Subscriber(running.broker.port, [f"{BASE}/state"])
    subscribers.append(fresh)
    fresh.wait(lambda s: bool(s.on(f"{BASE}/state")), 10, "the retained state")
    assert control_state(fresh) == before
    assert running.daemon.poll() is None
    assert "Traceback" not in running.log.read_text()
