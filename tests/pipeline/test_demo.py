"""``edgeagent demo`` on a clean copy of the repository, through the README's setup command
(issue 8, must-show 1): no microphone, no broker configured, no downloaded model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def clean_copy(dest: Path) -> Path:
    """The files git tracks (committed or staged) plus new files not ignored: a fresh clone of
    the working tree, without .venv, caches or build output."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def test_demo_runs_on_a_clean_copy_through_scripts_demo(tmp_path: Path) -> None:
    repo = clean_copy(tmp_path / "edgeagent")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["PYTHON"] = sys.executable  # the interpreter running the tests (>= 3.11)
    first = subprocess.run(
        ["./scripts/demo"], cwd=repo, env=env, capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "creating the tiny demo checkpoint" in out
    assert "RANDOM" in out and "model.path" in out  # says the weights are random, and the way out
    lines = [line.split(maxsplit=1) for line in out.splitlines() if line.strip()]
    topics = [parts[0] for parts in lines if len(parts) == 2]
    assert topics.count("answer") >= 2 and topics.count("transcript") >= 2
    events = [parts[1] for parts in lines if len(parts) == 2 and parts[0] == "event"]
    assert sum('"speech_start"' in e for e in events) == 2
    assert sum('"speech_end"' in e for e in events) == 2
    assert (tmp_path / "cache" / "edgeagent" / "demo").is_dir()

    # the second run reuses the checkpoint and the environment
    again = subprocess.run(
        ["./scripts/demo", "--task", "translate"], cwd=repo, env=env, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "creating the tiny demo checkpoint" not in again.stdout
    assert again.stdout.count("translation ") >= 2
