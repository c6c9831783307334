"""Helpers shared by every test folder, as fixtures: a clean environment, the CLI as a subprocess.

def test_version(run_cli):
    assert run_cli(["--version"]).returncode == 0
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Variables that would change how edgeagent behaves if inherited from the developer's shell.
_AMBIENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")

CleanEnv = Callable[..., dict[str, str]]
RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


def _clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT_") and k not in _AMBIENT
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _run_cli(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeagent", *args],
        env=_clean_environ(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        check=False,
    )


@pytest.fixture
def clean_env() -> CleanEnv:
    """``clean_env(extra=None)``: os.environ without EDGEAGENT_* and systemd variables."""
    return _clean_environ


@pytest.fixture
def run_cli() -> RunCli:
    """``run_cli(args, env=None, timeout=60)``: ``python -m edgeagent ARGS``, output as text."""
    return _run_cli


@pytest.fixture
def no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the developer's EDGEAGENT_* and systemd variables from an in-process test."""
    for key in list(os.environ):
        if key.startswith("EDGEAGENT_") or key in _AMBIENT:
            monkeypatch.delenv(key)
