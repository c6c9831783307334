#!/usr/bin/env python3
"""Results through the durable outbox to mosquitto on loopback: throughput and latency.

For each SQLite ``synchronous`` level (FULL is what edgeagent runs; NORMAL and
OFF show what the fsync costs) it runs the real publisher stage against a
mosquitto it starts on an ephemeral 127.0.0.1 port, and measures:

- throughput: ``--count`` results put as fast as the results queue takes them,
  until the last PUBACK: results per second;
- latency: ``--rate`` results per second for ``--count`` results, each timed
  from the moment it is queued to its PUBACK: p50, p99, max.

    python benchmarks/mqtt_outbox.py                  # defaults: 5000 results, 500/s
    python benchmarks/mqtt_outbox.py --count 20000 --json benchmarks/results/mqtt.json

Needs the ``mosquitto`` binary (Debian: apt-get install mosquitto).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeagent.daemon import build_supervisor
from edgeagent.events import Event
from edgeagent.publish.outbox import Outbox, Stored
from edgeagent.publish.service import PublishService
from edgeagent.sdnotify import Notifier
from edgeagent.settings import Settings

LEVELS = ("FULL", "NORMAL", "OFF")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_mosquitto(directory: Path, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if binary is None:
        raise SystemExit("mqtt_outbox: needs mosquitto (apt-get install mosquitto)")
    conf = directory / "mosquitto.conf"
    user = pwd.getpwuid(os.getuid()).pw_name  # mosquitto would otherwise switch users as root
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
        f"persistence false\nuser {user}\nlog_dest none\n"
    )
    process = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise SystemExit("mqtt_outbox: mosquitto did not start")


async def run_level(level: str, port: int, state: Path, count: int, rate: float) -> dict[str, Any]:
    settings = Settings.model_validate(
        {
            "daemon": {"state_dir": str(state)},
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "device_id": "bench",
                "homeassistant_discovery": False,
            },
        }
    )
    supervisor = build_supervisor(settings, Notifier(None))
    service = supervisor.services["publish"]
    assert isinstance(service, PublishService)
    old = service.outbox
    service.outbox = Outbox(old.path, old.max_messages, old.max_bytes, old.overflow, level)  # type: ignore[arg-type]
    acked: dict[int, float] = {}
    service.observer = lambda row, at: _record(acked, row, at)
    runner = asyncio.create_task(supervisor.run(install_signal_handlers=False), name="bench")
    await asyncio.wait_for(service.connected.wait(), 30)
    results = supervisor.context.channels.results

    # Throughput: as fast as the queue takes them.
    started = time.perf_counter()
    for i in range(count):
        await results.put(Event(event_type="bench", data={"i": i, "t0": time.time()}))
    await _until(lambda: len(acked) >= count)
    elapsed = time.perf_counter() - started
    acked.clear()

    # Latency at a steady rate.
    interval = 1 / rate
    next_at = time.perf_counter()
    for i in range(count, 2 * count):
        await results.put(Event(event_type="bench", data={"i": i, "t0": time.time()}))
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await _until(lambda: len(acked) >= count)
    latencies = sorted(acked.values())
    supervisor.request_stop()
    await asyncio.wait_for(runner, 60)
    return {
        "synchronous": level,
        "throughput_results_per_s": round(count / elapsed, 1),
        "latency_ms": {
            "rate_per_s": rate,
            "p50": round(statistics.median(latencies) * 1000, 2),
            "p99": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2),
            "max": round(latencies[-1] * 1000, 2),
        },
    }


async def _until(predicate: Callable[[], bool], limit_s: float = 300) -> None:
    async with asyncio.timeout(limit_s):
        while not predicate():  # noqa: ASYNC110 - a count filled by a callback
            await asyncio.sleep(0.005)


def _record(acked: dict[int, float], row: Stored, at: float) -> None:
    body = json.loads(row.payload)
    acked[body["i"]] = at - body["t0"]


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="ea-bench-", dir=args.dir) as directory:
        root = Path(directory)
        port = free_port()
        broker = start_mosquitto(root, port)
        try:
            for level in args.levels:
                rows.append(await run_level(level, port, root / level, args.count, args.rate))
        finally:
            broker.terminate()
            broker.wait(timeout=10)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="results per measurement")
    parser.add_argument("--rate", type=float, default=500.0, help="results/s for latency")
    parser.add_argument("--levels", nargs="+", default=list(LEVELS), choices=LEVELS)
    parser.add_argument("--dir", default=None, help="where the outbox lives (default: $TMPDIR)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    print(f"{'synchronous':<12}{'results/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for row in rows:
        lat = row["latency_ms"]
        print(
            f"{row['synchronous']:<12}{row['throughput_results_per_s']:>12}"
            f"{lat['p50']:>10}{lat['p99']:>10}{lat['max']:>10}"
        )
    print(
        f"({args.count} results each; latency at {args.rate}/s; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, outbox in {args.dir or tempfile.gettempdir()})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
