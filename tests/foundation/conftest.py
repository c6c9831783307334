"""Fixtures of the foundation tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .notify import NotifySocket


@pytest.fixture(autouse=True)
def _isolated(no_ambient_settings: None) -> None:
    """Every foundation test runs without ambient EDGEAGENT_* or systemd variables."""


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    """A Unix datagram socket standing in for systemd's NOTIFY_SOCKET.

    It lives in a short directory of its own: socket paths are limited to 107 bytes,
    which pytest's tmp_path can exceed.
    """
    with tempfile.TemporaryDirectory(prefix="ea-", dir="/tmp") as directory:
        sock = NotifySocket(path=Path(directory) / "notify")
        yield sock
        sock.close()


@pytest.fixture
def write_toml(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``write_toml(text, name="edgeagent.toml") -> Path`` in the test's tmp dir."""

    def write(text: str, name: str = "edgeagent.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
