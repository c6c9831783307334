"""sd_notify over a real Unix datagram socket, path and abstract."""

from __future__ import annotations

import os
import uuid

import pytest

from edgeagent.sdnotify import Notifier, watchdog_interval

from .notify import NotifySocket


def test_messages_arrive(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.address})
    assert notifier.enabled
    assert notifier.ready("up")
    assert notify_socket.expect("READY", "1", timeout=5) == {"READY": "1", "STATUS": "up"}
    notifier.watchdog()
    assert notify_socket.expect("WATCHDOG", timeout=5) == {"WATCHDOG": "1"}
    notifier.extend_timeout(90)
    assert notify_socket.expect("EXTEND_TIMEOUT_USEC", timeout=5)["EXTEND_TIMEOUT_USEC"] == str(
        90_000_000
    )
    notifier.status("two\nlines")
    assert notify_socket.expect("STATUS", timeout=5)["STATUS"] == "two lines"
    notifier.stopping()
    notify_socket.expect("STOPPING", "1", timeout=5)
    notifier.close()


def test_abstract_socket() -> None:
    sock = NotifySocket(abstract=f"edgeagent-test-{uuid.uuid4().hex}")
    try:
        with Notifier(sock.address) as notifier:
            assert sock.address.startswith("@")
            assert notifier.ready()
            sock.expect("READY", "1", timeout=5)
    finally:
        sock.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready()


def test_unreachable_socket_is_not_fatal(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    with Notifier(str(tmp_path / "gone")) as notifier:
        assert notifier.ready() is False
    assert "sd_notify READY failed" in caplog.text


def test_watchdog_interval() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    pid = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": pid}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
