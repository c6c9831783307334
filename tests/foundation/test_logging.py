"""Log line formats: text with timestamps, journal without, JSON for machines."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from edgeagent.logsetup import configure_logging, resolve_format, under_journald

from .notify import NotifySocket

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[TextIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    with (tmp_path / "log").open("w+", encoding="utf-8") as stream:
        yield stream
    root.handlers[:], root.level = saved


def journal_stream_of(stream: TextIO) -> str:
    st = os.fstat(stream.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def emit(stream: TextIO, fmt: str) -> list[str]:
    used = configure_logging("DEBUG", fmt, stream)
    logging.getLogger("edgeagent.test").warning("disk %s is %d%% full", "sda", 93)
    stream.flush()
    stream.seek(0)
    return [used, *stream.read().splitlines()]


def test_text_has_timestamps(log_file: TextIO) -> None:
    used, line = emit(log_file, "auto")
    assert used == "text"
    assert TIMESTAMP.match(line)
    assert line.endswith("WARNING edgeagent.test: disk sda is 93% full")


def test_journal_when_stderr_is_the_journal_stream(
    log_file: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(log_file))
    assert under_journald(log_file)
    used, line = emit(log_file, "auto")
    assert used == "journal"
    assert line == "<4>edgeagent.test: disk sda is 93% full"


def test_inherited_journal_stream_of_another_file_is_ignored(
    log_file: TextIO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "other").open("w") as other:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(other))
    assert not under_journald(log_file)
    assert resolve_format("auto", log_file) == "text"
    monkeypatch.setenv("JOURNAL_STREAM", "garbage")
    assert resolve_format("auto", log_file) == "text"


def test_json_lines(log_file: TextIO) -> None:
    used, line = emit(log_file, "json")
    assert used == "json"
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "edgeagent.test"
    assert entry["msg"] == "disk sda is 93% full"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", entry["ts"])


def test_daemon_logs_plain_lines_under_journald(
    tmp_path: Path,
    notify_socket: NotifySocket,
    clean_env,  # type: ignore[no-untyped-def]
) -> None:
    """A real ``run`` whose stderr is a pipe announced in JOURNAL_STREAM, like systemd does."""
    config = tmp_path / "edgeagent.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[mqtt]\nenabled = false\n')
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    env = clean_env(
        {"NOTIFY_SOCKET": notify_socket.address, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    )
    with subprocess.Popen(
        [sys.executable, "-m", "edgeagent", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=write_end,
    ) as proc:
        os.close(write_end)
        try:
            notify_socket.expect("READY", "1", timeout=30)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        with os.fdopen(read_end, encoding="utf-8") as pipe:
            lines = pipe.read().splitlines()
    assert lines, "the daemon logged something"
    assert all(re.match(r"^<\d>edgeagent\.", line) for line in lines), lines
    assert any("log format journal" in line for line in lines)


def test_run_json_format(
    tmp_path: Path,
    notify_socket: NotifySocket,
    clean_env,  # type: ignore[no-untyped-def]
) -> None:
    config = tmp_path / "edgeagent.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[mqtt]\nenabled = false\n')
    with subprocess.Popen(
        [sys.executable, "-m", "edgeagent", "run", "--config", str(config), "--log-format", "json"],
        env=clean_env({"NOTIFY_SOCKET": notify_socket.address}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            notify_socket.expect("READY", "1", timeout=30)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0
    entries = [json.loads(line) for line in stderr.splitlines()]
    assert {"ts", "level", "logger", "msg"} <= set(entries[0])
    assert any(e["msg"] == "shutting down" for e in entries)
