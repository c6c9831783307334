"""The embedded broker when no broker is configured: mosquitto as a child, or amqtt in process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as paho

from edgeagent.publish.connection import V5, V311, Connector
from edgeagent.publish.topics import Topics
from edgeagent.settings import Settings

from .conftest import until
from .mqtt_helpers import Subscriber, free_port, wait_for

BASE = "edgeagent/bare"


def test_first_run_on_a_bare_machine_embeds_mosquitto(
    short_tmp: Path, subscribers: list[Subscriber], clean_env
) -> None:  # type: ignore[no-untyped-def]
    """No mqtt.host: `edgeagent run` starts mosquitto on loopback; a local client connects."""
    port = free_port()
    log = short_tmp / "daemon.log"
    config = short_tmp / "edgeagent.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{short_tmp / "state"}"\n'
        f'[mqtt]\nport = {port}\ndevice_id = "bare"\n'
    )
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edgeagent", "run", "--config", str(config)],
            env=clean_env(), stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip
    try:
        wait_for(lambda: "connected to 127.0.0.1" in log.read_text(), 60, "the connection")
        sub = Subscriber(port, [f"{BASE}/availability", f"{BASE}/state"])
        subscribers.append(sub)
        sub.wait(lambda s: bool(s.on(f"{BASE}/state")), 10, "the retained state")
        assert sub.payloads(f"{BASE}/availability") == ["online"]
        assert sub.payloads(f"{BASE}/state")[0]["mqtt_protocol"] == "5"
        assert "embedded mosquitto" in log.read_text()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    text = log.read_text()
    pid = int(text.split("embedded mosquitto (pid ")[1].split(")")[0])
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert (short_tmp / "state" / "broker" / "mosquitto.conf").read_text().count("127.0.0.1") == 1


AMQTT_ALONE = (
    "import asyncio, sys\n"
    "from edgeagent.publish.broker import AmqttBroker\n"
    "async def main():\n"
    "    await AmqttBroker(int(sys.argv[1])).start()\n"
    "    print('listening', flush=True)\n"
    "    await asyncio.Event().wait()\n"
    "asyncio.run(main())\n"
)


async def test_version_negotiation_with_a_311_only_broker(clean_env) -> None:  # type: ignore[no-untyped-def]
    """amqtt (in a process of its own) never answers an MQTT 5 CONNECT; 3.1.1 then sticks."""
    port = free_port()
    broker = subprocess.Popen(  # noqa: ASYNC220 - started here, never waited on in the loop
        [sys.executable, "-c", AMQTT_ALONE, str(port)],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert broker.stdout is not None
        assert (
            await asyncio.wait_for(asyncio.to_thread(broker.stdout.readline), 30) == b"listening\n"
        )
        settings = Settings.model_validate(
            {
                "mqtt": {
                    "host": "127.0.0.1",
                    "port": port,
                    "device_id": "bare",
                    "connect_timeout_s": 1,
                }
            }
        )
        connector = Connector(settings.mqtt, Topics.from_settings(settings.mqtt), "127.0.0.1", port)
        assert connector.protocol == V5
        async with connector.connect():
            pass
        assert connector.protocol == V311, "MQTT 5 unanswered, 3.1.1 accepted"
        async with connector.connect():  # and it sticks
            pass
    finally:
        broker.kill()
        broker.wait(timeout=10)
        if broker.stdout is not None:
            broker.stdout.close()


async def test_embedded_amqtt_daemon(
    short_tmp: Path, subscribers: list[Subscriber], daemons
) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    settings = Settings.model_validate(
        {
            "daemon": {"state_dir": str(short_tmp / "state")},
            "mqtt": {"port": port, "device_id": "bare", "embedded_broker": "amqtt"},
        }
    )
    daemon = daemons(settings)
    await daemon.start()
    # The broker runs on this event loop: the blocking test client works from a thread.
    sub = await asyncio.to_thread(
        Subscriber, port, [f"{BASE}/state", f"{BASE}/event"], protocol=paho.MQTTv311
    )
    subscribers.append(sub)
    await until(lambda: bool(sub.payloads(f"{BASE}/state")), 10, "the state")
    assert sub.payloads(f"{BASE}/state")[-1]["mqtt_protocol"] == "3.1.1"
    await asyncio.to_thread(sub.publish, f"{BASE}/cmd/mute", b'{"muted": true, "request_id": "m1"}')
    await until(lambda: bool(sub.payloads(f"{BASE}/event")), 10, "the mute event")
    event = sub.payloads(f"{BASE}/event")[0]
    assert (event["event_type"], event["muted"], event["request_id"]) == (
        "mute_changed",
        True,
        "m1",
    )
    assert await daemon.stop() == 0
