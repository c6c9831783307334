#!/usr/bin/env python3
"""Governor tier switches on the ``small`` preset: latency to the first token, and memory.

Runs the real governor and assistant stages in one event loop (no MQTT: the
results queue is drained here) over a fake sysfs tree. The battery is moved
across ``governor.battery_low_percent`` (with hysteresis) to switch
``full`` <-> ``e2b``, and every switch is followed by an ``ask`` of
``--max-new-tokens 1`` so the answer's arrival is its first token. Measured:

- ``crossing_to_first_token_s``: from writing the crossing value to the
  answer's arrival, the ask sent the moment ``tier_changed`` is seen (worst
  case: the answer queues behind the background rebuild);
- ``rebuild_s``: the background rebuild alone (the whole history re-prefilled);
- ``idle_first_token_s``: an ask sent once the rebuild is done (the usual case:
  the next utterance comes later than the rebuild takes);
- ``detect_s``: crossing to ``tier_changed`` (bounded by ``--poll-s``);
- resident memory (VmRSS, RssAnon, RssFile) after each of ``--switches``
  switches, and its growth from the first to the last.

    python benchmarks/governor_switch.py --json benchmarks/results/governor_switch.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeagent.events import Answer, Ask, Event, Result, StateUpdate
from edgeagent.governor.stage import Governor, GovernorService
from edgeagent.pipeline.assistant import Assistant
from edgeagent.pipeline.service import AssistantService
from edgeagent.sdnotify import Notifier
from edgeagent.settings import Settings
from edgeagent.stages import StageContext

CAPACITY = Path("/sys/class/power_supply/BAT0/capacity")
STATUS = Path("/sys/class/power_supply/BAT0/status")


def memory() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile of this process, MiB."""
    values: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                values[key] = int(line.split()[1]) / 1024
    return values


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path, model: Path) -> None:
        self.root = root
        self.args = args
        self.settings = Settings.model_validate(
            {
                "model": {"path": str(model), "max_context": args.max_context},
                "governor": {
                    "sysfs_root": str(root),
                    "poll_s": args.poll_s,
                    "min_dwell_s": 0.0,
                    "battery_capacity_path": str(CAPACITY),
                    "battery_status_path": str(STATUS),
                    "battery_low_percent": 30,
                    "battery_critical_percent": 10,
                    "hysteresis_percent": 5,
                },
            }
        )
        self.ctx = StageContext(self.settings, Notifier(None))
        self.governor = GovernorService(self.settings)
        self.assistant = AssistantService(self.settings, self.governor)
        self.results: asyncio.Queue[Result] = asyncio.Queue()

    def battery(self, percent: int) -> None:
        for path, text in ((CAPACITY, str(percent)), (STATUS, "Discharging")):
            target = self.root / path.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(text + "\n")
            tmp.replace(target)

    async def drain(self) -> None:
        while True:
            item = await self.ctx.channels.results.get()
            if not isinstance(item, StateUpdate):
                await self.results.put(item)

    async def wait_for(self, kind: type[Result], event_type: str | None = None) -> Result:
        while True:
            item = await self.results.get()
            if isinstance(item, kind) and (
                event_type is None or getattr(item, "event_type", None) == event_type
            ):
                return item

    async def ask(self, text: str) -> Answer:
        await self.ctx.channels.commands.put(Ask(text=text, max_new_tokens=1))
        answer = await self.wait_for(Answer)
        assert isinstance(answer, Answer)
        return answer

    async def run(self) -> dict[str, Any]:
        self.battery(80)
        await self.assistant.load_model(self.ctx)
        tasks = [
            asyncio.create_task(self.drain(), name="bench:drain"),
            asyncio.create_task(Assistant(self.ctx, self.assistant).run(), name="bench:assistant"),
            asyncio.create_task(Governor(self.ctx, self.governor).run(), name="bench:governor"),
        ]
        # a conversation of a few hundred tokens first
        conversation = self.assistant.conversation
        assert conversation is not None
        while conversation.length < self.args.history_tokens:
            await self.ask(
                " ".join(f"word{n}" for n in range(conversation.length, conversation.length + 40))
            )
        baseline = []
        for _ in range(3):
            started = time.perf_counter()
            await self.ask("baseline")
            baseline.append(time.perf_counter() - started)
        rows = []
        for i in range(self.args.switches):
            target, percent = ("e2b", 20) if i % 2 == 0 else ("full", 80)
            crossed = time.perf_counter()
            self.battery(percent)
            event = await self.wait_for(Event, "tier_changed")
            assert isinstance(event, Event) and event.data["tier"] == target, event
            detected = time.perf_counter()
            rebuilding = self.assistant.rebuilding
            assert rebuilding is not None
            rebuilt: list[float] = []
            rebuilding.add_done_callback(lambda _f, out=rebuilt: out.append(time.perf_counter()))
            answer = await self.ask(f"switch {i}")
            first_token = time.perf_counter()
            assert answer.tier == target and rebuilding.done()
            # the usual case: the rebuild finished before the next utterance
            await asyncio.sleep(0)
            started = time.perf_counter()
            await self.ask(f"later {i}")
            idle = time.perf_counter() - started
            rows.append(
                {
                    "switch": i + 1,
                    "to": target,
                    "history_tokens": conversation.length,
                    "detect_s": round(detected - crossed, 4),
                    "rebuild_s": round(rebuilt[0] - detected, 4),
                    "crossing_to_first_token_s": round(first_token - crossed, 4),
                    "idle_first_token_s": round(idle, 4),
                    "memory_mib": {k: round(v, 1) for k, v in memory().items()},
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.assistant.close()
        growth = {
            key: max(_growth(rows, tier, key) for tier in ("full", "e2b"))
            for key in ("VmRSS", "RssAnon", "RssFile")
        }
        return {
            "preset": "small",
            "kernels": "reference",
            "max_context": self.args.max_context,
            "poll_s": self.args.poll_s,
            "switches": self.args.switches,
            "baseline_first_token_s": round(statistics.median(baseline), 4),
            "crossing_to_first_token_s": _summary([r["crossing_to_first_token_s"] for r in rows]),
            "idle_first_token_s": _summary([r["idle_first_token_s"] for r in rows]),
            "detect_s": _summary([r["detect_s"] for r in rows]),
            "rebuild_s": _summary([r["rebuild_s"] for r in rows]),
            "memory_growth_percent": growth,
            "vm_hwm_mib": rows[-1]["memory_mib"]["VmHWM"],
            "rows": rows,
            "machine": f"{platform.machine()}, {platform.python_version()}",
        }


def _growth(rows: list[dict[str, Any]], tier: str, key: str) -> float:
    """Growth of ``key`` from the first to the last switch to ``tier``, percent."""
    same = [r["memory_mib"][key] for r in rows if r["to"] == tier]
    return round(100 * (same[-1] - same[0]) / same[0], 2) if len(same) > 1 else 0.0


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: a fresh small preset)")
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--history-tokens", type=int, default=300)
    parser.add_argument("--max-context", type=int, default=2048)
    parser.add_argument("--poll-s", type=float, default=0.1)
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ea-gov-") as directory:
        work = Path(directory)
        model = args.model
        if model is None:
            model = work / "small"
            subprocess.run(
                [sys.executable, "-m", "edgeagent", "model", "init", "--preset", "small",
                 "--out", str(model)],
                check=True, capture_output=True,
            )  # fmt: skip
        result = asyncio.run(Bench(args, work / "sysfs", model).run())
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
