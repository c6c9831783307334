"""``edgeagent run`` as a real process under a stand-in for systemd's notify socket."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_stages import BOOTSTRAP
from .notify import NotifySocket

TESTS_DIR = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by a test; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def start(
    procs: list[subprocess.Popen[str]],
    clean_env,  # type: ignore[no-untyped-def]
    args: list[str],
    env: dict[str, str],
    with_fake_stages: bool = False,
) -> subprocess.Popen[str]:
    prefix = (
        ["-c", BOOTSTRAP.format(tests_dir=TESTS_DIR)] if with_fake_stages else ["-m", "edgeagent"]
    )
    proc = subprocess.Popen(
        [sys.executable, *prefix, *args],
        env=clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    return proc


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    config = tmp_path / "edgeagent.toml"
    # Without the MQTT stages (tests/publish runs those): only the heartbeat and test stages.
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[mqtt]\nenabled = false\n')
    return ["run", "--config", str(config), "--log-format", "text", *extra]


def test_ready_watchdog_sigterm_stopping_exit_0(
    tmp_path: Path,
    notify_socket: NotifySocket,
    procs,
    clean_env,  # type: ignore[no-untyped-def]
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "400000"}
    proc = start(procs, clean_env, run_args(tmp_path), env)

    ready = notify_socket.expect("READY", "1", timeout=30)
    assert ready["STATUS"].startswith("running; 1/1 stages up")
    first = time.monotonic()
    notify_socket.expect("WATCHDOG", "1", timeout=5)
    notify_socket.expect("WATCHDOG", "1", timeout=5)
    assert time.monotonic() - first < 2, "WATCHDOG=1 comes every 0.2 s (half of 0.4 s)"
    assert (tmp_path / "state").is_dir()

    proc.send_signal(signal.SIGTERM)
    stopping = notify_socket.expect("STOPPING", "1", timeout=10)
    assert stopping["STATUS"].startswith("stopping")
    assert proc.wait(timeout=15) == 0
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "shutting down" in stderr and "stopped;" in stderr


def test_abstract_notify_socket_and_sigint(
    tmp_path: Path,
    procs,
    clean_env,  # type: ignore[no-untyped-def]
) -> None:
    sock = NotifySocket(abstract=f"edgeagent-test-{uuid.uuid4().hex}")
    try:
        proc = start(procs, clean_env, run_args(tmp_path), {"NOTIFY_SOCKET": sock.address})
        sock.expect("READY", "1", timeout=30)
        proc.send_signal(signal.SIGINT)
        sock.expect("STOPPING", "1", timeout=10)
        assert proc.wait(timeout=15) == 0
    finally:
        sock.close()


def test_no_watchdog_for_another_pid(
    tmp_path: Path,
    notify_socket: NotifySocket,
    procs,
    clean_env,  # type: ignore[no-untyped-def]
) -> None:
    env = {
        "NOTIFY_SOCKET": notify_socket.address,
        "WATCHDOG_USEC": "200000",
        "WATCHDOG_PID": "1",  # the watchdog is meant for another process
    }
    proc = start(procs, clean_env, run_args(tmp_path, "--set", "daemon.heartbeat_s=0.1"), env)
    notify_socket.expect("READY", "1", timeout=30)
    received = notify_socket.collect(0.5)
    assert received and all("WATCHDOG" not in m for m in received)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def test_crashing_stage_keeps_daemon_up(
    tmp_path: Path,
    notify_socket: NotifySocket,
    procs,
    clean_env,  # type: ignore[no-untyped-def]
) -> None:
    args = run_args(
        tmp_path,
        "--set", 'daemon.stages=["test-crash"]',
        "--set", "daemon.heartbeat_s=0.05",
        "--set", "daemon.restart_backoff_initial_s=0.05",
        "--set", "daemon.restart_backoff_max_s=0.4",
    )  # fmt: skip
    proc = start(procs, clean_env, args, {"NOTIFY_SOCKET": notify_socket.address}, True)
    notify_socket.expect("READY", "1", timeout=30)
    counts: list[int] = []
    deadline = time.monotonic() + 20
    while (not counts or counts[-1] < 5) and time.monotonic() < deadline:
        status = notify_socket.expect("STATUS", timeout=5)["STATUS"]
        if match := re.search(r"test-crash=(\d+)", status):
            counts.append(int(match.group(1)))
    assert counts and counts[-1] >= 5, counts
    assert counts == sorted(counts)
    assert proc.poll() is None, "the daemon is still running"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    stderr = proc.stderr.read() if proc.stderr else ""
    delays = [
        float(d)
        for d in re.findall(r"stage test-crash failed \(restart \d+ in ([\d.]+)s\)", stderr)
    ]
    assert delays[:5] == [0.05, 0.1, 0.2, 0.4, 0.4], stderr[-2000:]


def test_second_signal_forces_exit(
    tmp_path: Path,
    notify_socket: NotifySocket,
    procs,
    clean_env,  # type: ignore[no-untyped-def]
) -> None:
    args = run_args(
        tmp_path,
        "--set", 'daemon.stages=["test-slow-drain"]',
        "--set", "daemon.shutdown_timeout_s=600",
    )  # fmt: skip
    proc = start(procs, clean_env, args, {"NOTIFY_SOCKET": notify_socket.address}, True)
    notify_socket.expect("READY", "1", timeout=30)
    proc.send_signal(signal.SIGTERM)
    notify_socket.expect("STOPPING", "1", timeout=10)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)  # draining, and would for 600 s
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 128 + signal.SIGTERM
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "second signal: forcing exit" in stderr


def test_run_without_notify_socket(tmp_path: Path, procs, clean_env) -> None:  # type: ignore[no-untyped-def]
    proc = start(procs, clean_env, run_args(tmp_path), {})
    deadline = time.monotonic() + 30
    while not (tmp_path / "state").is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
