"""TLS against mosquitto with a test CA and client certificates made here with openssl."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeagent.errors import PublishError
from edgeagent.publish.connection import Connector
from edgeagent.publish.topics import Topics

from .conftest import daemon_settings, until
from .mqtt_helpers import Mosquitto, Subscriber


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=edgeagent test {name}",
        cwd=directory,
    )  # fmt: skip


def make_cert(directory: Path, name: str, ca: str, san: str | None = None) -> None:
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/CN={name}", cwd=directory,
    )  # fmt: skip
    extra: list[str] = []
    if san:
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", f"{name}.ext"]
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *extra, cwd=directory,
    )  # fmt: skip


@pytest.fixture
def pki(short_tmp: Path) -> Path:
    directory = short_tmp / "pki"
    directory.mkdir()
    make_ca(directory, "ca")
    make_ca(directory, "wrong-ca")
    make_cert(directory, "server", "ca", san="IP:127.0.0.1,DNS:localhost")
    make_cert(directory, "client", "ca")
    return directory


@pytest.fixture
def tls_broker(short_tmp: Path, pki: Path):  # type: ignore[no-untyped-def]
    files = {"ca": pki / "ca.pem", "cert": pki / "server.pem", "key": pki / "server.key"}
    broker = Mosquitto(short_tmp / "tls-broker", tls=files)
    broker.start()
    yield broker
    broker.stop()


def tls_settings(short_tmp: Path, port: int, pki: Path, ca: str = "ca", client: bool = True):  # type: ignore[no-untyped-def]
    mqtt: dict[str, object] = {"tls": True, "ca_file": str(pki / f"{ca}.pem")}
    if client:
        mqtt |= {
            "client_cert_file": str(pki / "client.pem"),
            "client_key_file": str(pki / "client.key"),
        }
    return daemon_settings(short_tmp / "state", port, mqtt=mqtt)


async def test_tls_with_client_certificate_connects(
    short_tmp: Path, tls_broker: Mosquitto, pki: Path, subscribers: list[Subscriber], daemons
) -> None:  # type: ignore[no-untyped-def]
    daemon = daemons(tls_settings(short_tmp, tls_broker.port, pki))
    await daemon.start()  # connected, subscribed, online
    sub = Subscriber(
        tls_broker.port,
        ["edgeagent/testdev/availability"],
        tls=(pki / "ca.pem", pki / "client.pem", pki / "client.key"),
    )
    subscribers.append(sub)
    await until(lambda: sub.payloads("edgeagent/testdev/availability") == ["online"], 10, "online")
    assert await daemon.stop() == 0


async def test_wrong_ca_is_refused_with_a_clear_error(
    short_tmp: Path, tls_broker: Mosquitto, pki: Path, daemons, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    settings = tls_settings(short_tmp, tls_broker.port, pki, ca="wrong-ca")
    connector = Connector(
        settings.mqtt, Topics.from_settings(settings.mqtt), "127.0.0.1", tls_broker.port
    )
    with pytest.raises(PublishError) as refused:
        async with connector.connect():
            pass
    message = str(refused.value)
    assert f"MQTT broker 127.0.0.1:{tls_broker.port}: TLS certificate not trusted" in message
    assert f"mqtt.ca_file: {pki / 'wrong-ca.pem'}" in message
    assert "certificate verify failed" in message

    # The daemon keeps running, says why in its log, and keeps results in the outbox.
    caplog.set_level(logging.WARNING, logger="edgeagent.publish")
    daemon = daemons(settings)
    await daemon.start(connected=False)
    await until(lambda: "TLS certificate not trusted" in caplog.text, 10, "the TLS warning")
    assert not daemon.publish.connected.is_set()
    assert await daemon.stop() == 0


async def test_missing_client_certificate_is_refused(
    short_tmp: Path, tls_broker: Mosquitto, pki: Path
) -> None:
    settings = tls_settings(short_tmp, tls_broker.port, pki, client=False)
    connector = Connector(
        settings.mqtt, Topics.from_settings(settings.mqtt), "127.0.0.1", tls_broker.port
    )
    with pytest.raises(PublishError, match=f"MQTT broker 127.0.0.1:{tls_broker.port}"):
        async with connector.connect():
            pass


def test_unreadable_ca_file_names_the_setting(short_tmp: Path) -> None:
    settings = daemon_settings(
        short_tmp / "state", 1883, mqtt={"tls": True, "ca_file": str(short_tmp / "nope.pem")}
    )
    with pytest.raises(PublishError, match=r"mqtt.ca_file .*nope.pem: cannot load"):
        Connector(settings.mqtt, Topics.from_settings(settings.mqtt), "127.0.0.1", 1883)


async def test_username_and_password(short_tmp: Path, daemons) -> None:  # type: ignore[no-untyped-def]
    passwords = short_tmp / "passwords"
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    command = [passwd, "-b", "-c", str(passwords), "edge", "s3cret"]
    await asyncio.to_thread(subprocess.run, command, check=True, timeout=30)
    passwords.chmod(0o600)
    broker = Mosquitto(short_tmp / "auth-broker", password_file=passwords)
    broker.start()
    try:
        wrong = daemon_settings(
            short_tmp / "state", broker.port, mqtt={"username": "edge", "password": "nope"}
        )
        connector = Connector(
            wrong.mqtt, Topics.from_settings(wrong.mqtt), "127.0.0.1", broker.port
        )
        with pytest.raises(PublishError, match="refused the connection"):
            async with connector.connect():
                pass
        right = daemon_settings(
            short_tmp / "state", broker.port, mqtt={"username": "edge", "password": "s3cret"}
        )
        daemon = daemons(right)
        await daemon.start()  # connected, subscribed, online
        assert await daemon.stop() == 0
    finally:
        broker.stop()
