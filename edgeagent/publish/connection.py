"""One connection to the broker: TLS, credentials, session, will, version negotiation.

The client id is fixed and the session persistent (MQTT 5: clean start off
and a session expiry; 3.1.1: clean session off), so the broker keeps the
command subscription and queues commands while the device is away. The will
is a retained ``offline`` on ``<base>/availability``.

MQTT 5 is asked for first (unless 3.1.1 is configured); a broker that answers
"unsupported protocol version" — the in-process amqtt broker, an old
mosquitto — is asked again with 3.1.1, and that choice sticks for the process.

aiomqtt's ``publish`` returns on any PUBACK; :meth:`Client.publish_acked`
also checks the MQTT 5 reason code, so a PUBACK that refuses a message (not
authorised, quota exceeded, …) keeps it in the outbox instead of losing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgeagent.errors import PublishError
from edgeagent.publish.topics import UNAVAILABLE, Topics
from edgeagent.settings import MqttSettings

_LOGGER = logging.getLogger(__name__)

V5, V311 = aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311
_UNSUPPORTED_VERSION = (1, 132)  # CONNACK: 3.1.1 return code, MQTT 5 reason code


class _Demote(logging.Filter):
    """paho logs a dropped connection as an error; the publisher reports it as a warning
    itself (naming the broker and the retry), so paho's own lines are debug detail."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return _PAHO_LOGGER.isEnabledFor(logging.DEBUG)


_PAHO_LOGGER = logging.getLogger("edgeagent.publish.paho")
_PAHO_LOGGER.addFilter(_Demote())


class PublishRefused(PublishError):
    """The broker answered a PUBLISH with a failing PUBACK reason code (MQTT 5)."""


class Client(aiomqtt.Client):
    """aiomqtt's client plus :meth:`publish_acked`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused: dict[int, ReasonCode] = {}

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        if reason_code.is_failure:
            self._refused[mid] = reason_code
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_acked(
        self, topic: str, payload: bytes, properties: Properties | None = None
    ) -> None:
        """Publish with QoS 1 and return once the broker has acknowledged it.

        Raises :class:`aiomqtt.MqttError` when the connection fails or the PUBACK
        does not come in time, :class:`PublishRefused` when the PUBACK refuses.
        """
        info = self._client.publish(topic, payload, 1, False, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if not info.is_published():
            confirmation = asyncio.Event()
            with self._pending_call(info.mid, confirmation, self._pending_publishes):
                await self._wait_for(confirmation.wait(), timeout=None)
        if (reason := self._refused.pop(info.mid, None)) is not None:
            raise PublishRefused(f"broker refused a message on {topic}: {reason}")


class Backoff:
    """Capped exponential delays with up to 25% jitter, reset after a success."""

    def __init__(self, initial_s: float, max_s: float, jitter: float = 0.25) -> None:
        self.initial_s, self.max_s, self.jitter = initial_s, max_s, jitter
        self.attempts = 0

    def next(self) -> float:
        delay = min(self.max_s, self.initial_s * 2.0**self.attempts)
        self.attempts += 1
        return delay * (1 - self.jitter * random.random())

    def reset(self) -> None:
        self.attempts = 0


class Connector:
    """Makes connected clients; remembers the protocol version the broker accepted."""

    def __init__(self, settings: MqttSettings, topics: Topics, host: str, port: int) -> None:
        self.settings = settings
        self.topics = topics
        self.host, self.port = host, port
        self.protocol = V5 if settings.protocol == "5" else V311
        self._tls = tls_context(settings) if settings.tls else None
        self._spoke_v5 = False  # once a broker accepted MQTT 5, a timeout is just a timeout

    @property
    def protocol_name(self) -> str:
        return "5" if self.protocol == V5 else "3.1.1"

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Client]:
        """A connected client, disconnected (gracefully, so without the will) at the end."""
        client = await self._open()
        try:
            yield client
        finally:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    async def _open(self) -> Client:
        """Connect; under MQTT 5, a broker that refuses version 5 (or never answers a
        version 5 CONNECT, as amqtt does) is tried with 3.1.1, which then sticks."""
        client = self._client()
        try:
            await client.__aenter__()
        except MqttConnectError as exc:
            if self.protocol != V5 or _code(exc) not in _UNSUPPORTED_VERSION:
                raise PublishError(self.describe(exc)) from exc
            reason = "refuses MQTT 5"
        except aiomqtt.MqttError as exc:
            if "SSL" in str(exc):
                _reap_leaked_socket(exc)
            if self.protocol != V5 or self._spoke_v5 or "timed out" not in str(exc):
                raise PublishError(self.describe(exc)) from exc
            reason = "does not answer an MQTT 5 CONNECT"
        else:
            self._spoke_v5 = self._spoke_v5 or self.protocol == V5
            return client
        self.protocol = V311
        client = self._client()
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            self.protocol = V5  # 3.1.1 did not work either: no conclusion about the broker
            raise PublishError(self.describe(exc)) from exc
        _LOGGER.warning(
            "broker %s:%d %s; using MQTT 3.1.1 (no response topics, no session expiry)",
            self.host,
            self.port,
            reason,
        )
        return client

    def describe(self, exc: Exception) -> str:
        """A one-line explanation of a connection failure, naming the setting to look at."""
        where = f"MQTT broker {self.host}:{self.port}"
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            ca = self.settings.ca_file or "the system trust store"
            return f"{where}: TLS certificate not trusted (mqtt.ca_file: {ca}): {text}"
        if "SSL" in text or "TLS" in text:
            return f"{where}: TLS handshake failed: {text}"
        if isinstance(exc, MqttConnectError):
            return f"{where} refused the connection: {text}"
        return f"{where}: {text or type(exc).__name__}"

    def _client(self) -> Client:
        settings = self.settings
        v5 = self.protocol == V5
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = settings.session_expiry_s
        password = settings.password.get_secret_value() if settings.password else None
        client = Client(
            self.host,
            self.port,
            username=settings.username,
            password=password,
            identifier=settings.client_id or self.topics.client_id,
            protocol=self.protocol,
            will=aiomqtt.Will(self.topics.availability, UNAVAILABLE, qos=1, retain=True),
            clean_session=None if v5 else False,
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,  # 3.1.1: not applicable
            timeout=settings.connect_timeout_s,
            keepalive=settings.keepalive_s,
            max_inflight_messages=settings.max_inflight,
            properties=properties,
            tls_context=self._tls,
            # Small QoS 1 packets and their PUBACKs: Nagle's algorithm would hold each ~40 ms.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=_PAHO_LOGGER,
        )
        client.pending_calls_threshold = settings.max_inflight + 16
        return client


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """A client TLS context from the CA file and client certificate; errors name the setting."""
    try:
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise PublishError(f"mqtt.ca_file {settings.ca_file}: cannot load: {exc}") from exc
    if settings.client_cert_file is not None:
        try:
            context.load_cert_chain(settings.client_cert_file, settings.client_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise PublishError(
                f"mqtt.client_cert_file {settings.client_cert_file}: cannot load: {exc}"
            ) from exc
    return context


def _reap_leaked_socket(exc: BaseException) -> None:
    """Close the socket of a failed TLS handshake, which paho leaves open.

    paho wraps the TCP socket, the handshake raises, and the wrapped socket is
    then referenced only by the frames of the original error (aiomqtt's
    ``MqttError`` keeps it as ``__context__``); it would be closed by some later
    garbage collection, with a ResourceWarning.
    """
    original = exc.__context__
    tb = original.__traceback__ if original is not None else None
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, ssl.SSLSocket):
                value.close()
        tb = tb.tb_next


def _code(exc: aiomqtt.MqttCodeError) -> int | None:
    rc = exc.rc
    if isinstance(rc, ReasonCode):
        return int(rc.value)
    return rc
