"""A real mosquitto on loopback, a recording subscriber, and the payload schemas.

Nothing here fakes MQTT: the broker is Debian's mosquitto with persistence on,
the subscriber is paho-mqtt with a persistent QoS 1 session.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "docs" / "mqtt" / "v1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll ``predicate`` every 10 ms; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def nodelay(client: paho.Client) -> None:
    """TCP_NODELAY on a connected paho client's socket (small packets go out at once)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- the broker ----------------------------------------------------------------------------


class Mosquitto:
    """mosquitto on 127.0.0.1:port with persistence in ``directory``; restartable on the port."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        tls: dict[str, Path] | None = None,
        password_file: Path | None = None,
    ):
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
        assert binary, "mosquitto is not installed (scripts/test installs it with apt-get)"
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.tls = tls
        self.password_file = password_file
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def config(self) -> str:
        user = pwd.getpwuid(os.getuid()).pw_name
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
            "persistence true",
            f"persistence_location {self.directory}/",
            "autosave_interval 1",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            "max_inflight_messages 20",
            f"user {user}",
            f"log_dest file {self.directory}/mosquitto.log",
            "log_type all",
        ]
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.tls:
            lines += [
                f"cafile {self.tls['ca']}",
                f"certfile {self.tls['cert']}",
                f"keyfile {self.tls['key']}",
                "require_certificate true",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        conf = self.directory / "mosquitto.conf"
        conf.write_text(self.config(), encoding="utf-8")
        self.process = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while not self.listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise AssertionError(f"mosquitto did not start: {err}{self.log()[-2000:]}")
            time.sleep(0.02)

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file) and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


# -- schemas -------------------------------------------------------------------------------


def _load_schemas() -> dict[str, jsonschema.Draft202012Validator]:
    validators = {}
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[path.name.removesuffix(".schema.json")] = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
    return validators


VALIDATORS = _load_schemas()
RESULT_KINDS = ("transcript", "translation", "answer", "vision", "event")


def schema_for(topic: str, payload: Any) -> str | None:
    """Which schema a message on ``topic`` follows; None for plain-text topics."""
    parts = topic.split("/")
    if topic.endswith("/availability"):
        return None
    if len(parts) == 4 and parts[1] == "device" and parts[3] == "config":
        return "discovery"
    if parts[-1] == "state":
        return "state"
    if parts[-2:-1] == ["cmd"]:
        return None  # requests, not the daemon's output
    if parts[-1] in RESULT_KINDS:
        return parts[-1]
    # A response topic: an answer, or an event (errors and acknowledgements).
    return "event" if isinstance(payload, dict) and "event_type" in payload else "answer"


def validate(topic: str, raw: bytes) -> dict[str, Any] | str:
    """The decoded payload; AssertionError if it breaks the contract's schema."""
    if topic.endswith("/availability"):
        text = raw.decode()
        assert text in ("online", "offline"), (topic, raw)
        return text
    payload = json.loads(raw)
    name = schema_for(topic, payload)
    if name is not None:
        errors = sorted(VALIDATORS[name].iter_errors(payload), key=str)
        assert not errors, f"{topic} breaks {name}.schema.json: {errors[0].message}\n{payload}"
    return payload  # type: ignore[no-any-return]


# -- the subscriber ------------------------------------------------------------------------


@dataclass
class Received:
    topic: str
    raw: bytes
    payload: Any
    retain: bool
    correlation: bytes | None
    at: float = field(default_factory=time.monotonic)


class Subscriber:
    """A persistent QoS 1 subscriber (fixed id, session kept) that validates every message."""

    def __init__(
        self,
        port: int,
        topics: Iterable[str],
        client_id: str | None = None,
        protocol: int = paho.MQTTv5,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.topics = list(topics)
        self.protocol = protocol
        self.received: list[Received] = []
        self.invalid: list[str] = []
        self.connects = 0
        self._lock = threading.Lock()
        v5 = protocol == paho.MQTTv5
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-sub-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
            clean_session=None if v5 else False,
        )
        self.client.reconnect_delay_set(0.05, 0.5)
        if tls is not None:
            ca, cert, key = tls
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.subscribed = 0
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
        clean_start = False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY
        self.client.connect(
            "127.0.0.1", port, keepalive=10, clean_start=clean_start, properties=properties
        )
        self.client.loop_start()
        wait_for(lambda: self.subscribed > 0, 10, "the subscriber's SUBACK")

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if not rc.is_failure:
            nodelay(client)
            client.subscribe([(topic, 1) for topic in self.topics])
            with self._lock:
                self.connects += 1

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        assert not any(code.is_failure for code in codes), codes
        with self._lock:
            self.subscribed += 1

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        correlation = None
        props = getattr(message, "properties", None)
        if props is not None and hasattr(props, "CorrelationData"):
            correlation = props.CorrelationData
        try:
            payload = validate(message.topic, message.payload)
        except (AssertionError, ValueError) as exc:
            with self._lock:
                self.invalid.append(f"{message.topic}: {exc}")
            payload = None
        with self._lock:
            self.received.append(
                Received(message.topic, message.payload, payload, bool(message.retain), correlation)
            )

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.received if m.topic == topic]

    def payloads(self, topic: str) -> list[Any]:
        return [m.payload for m in self.on(topic)]

    def wait(self, predicate: Callable[[Subscriber], bool], timeout: float, what: str) -> None:
        wait_for(lambda: predicate(self), timeout, what)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
