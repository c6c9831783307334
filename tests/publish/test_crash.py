"""SIGKILL in the middle of a stream: nothing accepted into the outbox is lost."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from .mqtt_helpers import Mosquitto, Subscriber, wait_for
from .producer import BOOTSTRAP

TESTS_DIR = str(Path(__file__).resolve().parents[1])
TRANSCRIPTS = "edgeagent/crashdev/transcript"


def start_daemon(
    config: Path, clean_env, producer_count: int, log: Path
) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    env = clean_env({"PRODUCER_COUNT": str(producer_count), "PRODUCER_INTERVAL_MS": "1"})
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", BOOTSTRAP.format(tests_dir=TESTS_DIR), "run",
             "--config", str(config), "--log-format", "text"],
            env=env, stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip


def accepted(outbox: Path) -> tuple[int, set[int]]:
    """(last seq accepted, seqs still pending), read from the database the daemon left."""
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        next_seq = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]
        pending = {seq for (seq,) in db.execute("SELECT seq FROM outbox")}
        dropped = db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()[0]
    finally:
        db.close()
    assert dropped == 0
    return next_seq - 1, pending


def test_sigkill_mid_stream_loses_nothing_accepted(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], clean_env
) -> None:  # type: ignore[no-untyped-def]
    sub = Subscriber(mosquitto.port, [TRANSCRIPTS])
    subscribers.append(sub)
    state = short_tmp / "state"
    config = short_tmp / "edgeagent.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{state}"\nstages = ["test-producer"]\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\ndevice_id = "crashdev"\n'
        "reconnect_initial_s = 0.05\nreconnect_max_s = 0.5\n"
    )
    log = short_tmp / "daemon.log"
    first = start_daemon(config, clean_env, 3000, log)
    try:
        wait_for(lambda: len(sub.on(TRANSCRIPTS)) >= 300, 60, "the stream to be under way")
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    last_seq, pending = accepted(state / "outbox.sqlite3")
    received_before = {m.payload["seq"] for m in sub.on(TRANSCRIPTS)}
    assert 300 <= last_seq < 3000, "killed in the middle of the stream"
    assert pending, "some accepted results had not been acknowledged when the daemon died"

    second = start_daemon(config, clean_env, 0, log)
    try:
        wait_for(
            lambda: {m.payload["seq"] for m in sub.on(TRANSCRIPTS)} >= set(range(1, last_seq + 1)),
            60,
            f"every accepted seq 1..{last_seq}",
        )
        wait_for(lambda: log.read_text().count("ready:") == 2, 30, "the second daemon's READY")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        if second.poll() is None:
            second.kill()
    messages = sub.on(TRANSCRIPTS)
    seen: dict[str, int] = {}
    for message in messages:
        seen.setdefault(message.payload["msg_id"], message.payload["seq"])
    order = list(seen.values())
    assert order == sorted(order), "after de-duplication by msg_id, order follows seq"
    assert set(order) == set(range(1, last_seq + 1))
    assert pending <= set(order) - received_before | (pending & received_before)
    assert accepted(state / "outbox.sqlite3") == (last_seq, set()), "the outbox drained"
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
