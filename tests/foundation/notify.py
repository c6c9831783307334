"""A systemd stand-in for tests: a Unix datagram socket that collects sd_notify messages."""

from __future__ import annotations

import socket
import time
from pathlib import Path


class NotifySocket:
    """Bound to a path (or an abstract name); ``expect`` waits for a message with a key."""

    def __init__(self, path: Path | None = None, abstract: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract is not None:
            self.sock.bind(b"\0" + abstract.encode())
            self.address = "@" + abstract
        else:
            assert path is not None
            self.sock.bind(str(path))
            self.address = str(path)
        self.messages: list[dict[str, str]] = []

    def receive(self, timeout: float) -> dict[str, str] | None:
        """The next message as a dict, or None after ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        message = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append(message)
        return message

    def expect(self, key: str, value: str | None = None, timeout: float = 20) -> dict[str, str]:
        """Wait for a message carrying ``key`` (with ``value``, if given); fail on timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and key in message and value in (None, message[key]):
                return message
        seen = [sorted(m) for m in self.messages]
        raise AssertionError(f"no {key}={value or '*'} within {timeout}s; got {seen}")

    def collect(self, seconds: float) -> list[dict[str, str]]:
        """Every message that arrives within the next ``seconds``."""
        received = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if (message := self.receive(left)) is not None:
                received.append(message)
        return received

    def close(self) -> None:
        self.sock.close()
