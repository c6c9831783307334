#!/usr/bin/env python3
"""Always-on soak: looping speech and silence at real time for ``--minutes`` (issue 8, must-show 5).

``edgeagent run --config FILE`` runs as a child process (its memory is its
own) on the ``small`` multimodal preset with quantized kernels, the file
source looping a clip of four utterances (2-8 s, espeak-ng) and their
silences in real time, against a mosquitto on an ephemeral loopback port with
a paho subscriber on every ``<base>/…`` topic but ``cmd/``. The child is started through a few lines
of Python that install an event-loop policy remembering the daemon's loop and
a thread that asks that loop, every second, for its number of asyncio tasks
(``loop.call_soon_threadsafe``; the answer also times the loop's lag); then
they call ``edgeagent.cli.main(["run", ...])`` exactly as the console script
does.

Every ``--sample-s`` seconds: VmRSS, RssAnon, RssFile, VmHWM and Threads from
``/proc/PID/status``, the open file descriptors (``/proc/PID/fd``) and the
task count. At the end, ``cmd/mute`` (the utterance in progress is cut:
``speech_end`` reason ``muted``, no answer), and once every other utterance
has its results, SIGTERM. Then:

- memory: average VmRSS over the last window vs the window right after the
  warm-up (windows of 5 min in a 30-minute run, a sixth of shorter runs);
  target growth ≤ 2 %;
- leaks: file descriptors, threads and tasks, the same two windows (max);
- messages: every ``speech_start`` has one ``speech_end``, one final answer
  and one final transcript (``complete``) — but for answers cancelled by the
  next utterance's speech (``voice.barge_in = "cancel"``: no transcript, by
  design) and the one cut by the mute; ``seq`` of every result from 1 to the last without a gap
  (after de-duplication by ``msg_id``); schema-valid; ``state.outbox.dropped``
  0; no ERROR or traceback in the daemon's log.

    .venv/bin/python benchmarks/voice_soak.py --minutes 2      # a trial
    .venv/bin/python benchmarks/voice_soak.py                  # 30 minutes

Results: a table on stdout, JSON in ``--json`` (default
``benchmarks/results/voice_soak.json``), samples included.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from voice_latency import (
    REPO,
    TEXTS,
    clips,
    daemon_config,
    ensure_checkpoint,
    git_state,
    start_daemon,
    stop_daemon,
    utterance,
    write_config,
)

from tests.publish.mqtt_helpers import Mosquitto, Subscriber

RATE = 16_000
DEVICE = "bench"
BASE = f"edgeagent/{DEVICE}"
# (text, seconds, silence after, s): one pass of the loop, ~37 s
LOOP = (
    (TEXTS[2.0], 2.0, 4.0),
    (TEXTS[5.0], 5.0, 5.0),
    (TEXTS[2.0], 3.0, 4.0),
    (TEXTS[10.0], 8.0, 5.0),
)
LEAD_S = 1.0
NOISE_DBFS = -60.0  # a quiet room, so the clip is never digital silence

# Runs as the daemon process: remembers the loop, reports its task count once a second.
CHILD = """
import asyncio, json, os, sys, threading, time
config, stats = sys.argv[1], sys.argv[2]
loops = []

class Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        loop = super().new_event_loop()
        loops.append(loop)
        return loop

def report(asked):
    line = {"at": time.time(), "tasks": len(asyncio.all_tasks()),
            "lag_ms": round((time.perf_counter() - asked) * 1000, 2)}
    with open(stats + ".tmp", "w") as out:
        json.dump(line, out)
    os.replace(stats + ".tmp", stats)

def sampler():
    while True:
        time.sleep(1.0)
        if loops and loops[-1].is_running():
            try:
                loops[-1].call_soon_threadsafe(report, time.perf_counter())
            except RuntimeError:
                return  # the loop closed

def tracer(folder, first_s, every_s):
    import tracemalloc
    time.sleep(first_s)
    base = tracemalloc.take_snapshot()
    while True:
        time.sleep(every_s)
        snap = tracemalloc.take_snapshot()
        with open(os.path.join(folder, f"trace-{int(time.monotonic())}.txt"), "w") as out:
            out.write(f"traced now/peak: {tracemalloc.get_traced_memory()}\\n")
            for stat in snap.compare_to(base, "traceback")[:15]:
                out.write(f"{stat}\\n" + "\\n".join(stat.traceback.format()[-8:]) + "\\n\\n")

if os.environ.get("SOAK_TRACE"):  # --tracemalloc: where the Python heap grows
    import tracemalloc
    tracemalloc.start(8)
    threading.Thread(target=tracer, args=(os.environ["SOAK_TRACE"], 240, 120),
                     name="soak-tracer", daemon=True).start()
asyncio.set_event_loop_policy(Policy())
threading.Thread(target=sampler, name="soak-sampler", daemon=True).start()
from edgeagent.cli import main
sys.exit(main(["run", "--config", config, *sys.argv[3:]]))
"""


def make_loop_clip(path: Path) -> list[dict[str, float]]:
    """The clip the file source loops; returns its utterances (start_s, end_s)."""
    rng = np.random.default_rng(3)
    pieces, truth, t = [np.zeros(round(LEAD_S * RATE))], [], round(LEAD_S * RATE)
    with tempfile.TemporaryDirectory() as tmp:
        for text, seconds, gap in LOOP:
            pcm = utterance(text, seconds, Path(tmp))
            truth.append({"start_s": t / RATE, "end_s": (t + len(pcm)) / RATE})
            pieces += [pcm, np.zeros(round(gap * RATE))]
            t += len(pcm) + len(pieces[-1])
    x = np.concatenate(pieces)
    x += rng.standard_normal(len(x)) * 10 ** (NOISE_DBFS / 20)
    clips.write_wav(path, x)
    return truth


# -- sampling ------------------------------------------------------------------------------------


def proc_sample(pid: int, stats: Path, started: float) -> dict[str, Any] | None:
    """One sample of the daemon: memory (kB), threads, fds, asyncio tasks; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    sample: dict[str, Any] = {"t_s": round(time.monotonic() - started, 1), "fds": fds}
    for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
        sample[key] = int(fields[key].split()[0])
    sample["threads"] = int(fields["Threads"])
    try:
        loop = json.loads(stats.read_text())
        if time.time() - loop["at"] < 5:
            sample["tasks"], sample["lag_ms"] = loop["tasks"], loop["lag_ms"]
    except (OSError, ValueError):
        pass
    return sample


def window(samples: list[dict[str, Any]], start_s: float, end_s: float) -> list[dict[str, Any]]:
    return [s for s in samples if start_s <= s["t_s"] < end_s]


def summarize(samples: list[dict[str, Any]], ready_s: float, end_s: float) -> dict[str, Any]:
    """Growth between the window after the warm-up and the last window."""
    span = end_s - ready_s
    length = min(300.0, span / 6)
    first = window(samples, ready_s + length, ready_s + 2 * length)
    last = window(samples, end_s - length, end_s + 1)

    def avg(rows: list[dict[str, Any]], key: str) -> float | None:
        vals = [r[key] for r in rows if key in r]
        return float(np.mean(vals)) if vals else None

    def top(rows: list[dict[str, Any]], key: str) -> int | None:
        vals = [r[key] for r in rows if key in r]
        return max(vals) if vals else None

    out: dict[str, Any] = {
        "window_s": round(length, 1),
        "baseline_from_s": round(ready_s + length),
        "last_from_s": round(end_s - length),
    }
    for key in ("VmRSS", "RssAnon", "RssFile"):
        a, b = avg(first, key), avg(last, key)
        out[key] = {
            "baseline_mb": a and a / 1024,
            "last_mb": b and b / 1024,
            "growth_pct": None if not a or b is None else (b - a) / a * 100,
        }
    for key in ("fds", "threads", "tasks"):
        out[key] = {
            "baseline_max": top(first, key),
            "last_max": top(last, key),
            "min": min((r[key] for r in samples if key in r and r["t_s"] >= ready_s), default=None),
            "max": max((r[key] for r in samples if key in r and r["t_s"] >= ready_s), default=None),
        }
    lags = [r["lag_ms"] for r in samples if "lag_ms" in r and r["t_s"] >= ready_s]
    out["loop_lag_ms"] = {
        "p50": float(np.percentile(lags, 50)) if lags else None,
        "max": max(lags, default=None),
    }
    return out


# -- messages -----------------------------------------------------------------------------------


def check_messages(sub: Subscriber) -> dict[str, Any]:
    """Completeness of the utterances and of ``seq``."""
    seen: set[str] = set()
    seqs: list[int] = []
    duplicates = 0
    dropped = None
    for m in list(sub.received):
        body = m.payload
        if m.topic.endswith("/state") and isinstance(body, dict):
            dropped = body.get("outbox", {}).get("dropped")
        if not isinstance(body, dict) or "msg_id" not in body:
            continue
        if body["msg_id"] in seen:
            duplicates += 1
            continue
        seen.add(body["msg_id"])
        seqs.append(body["seq"])
    gaps = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
    per = outcomes(sub)
    kinds = Counter(outcome(o) for o in per.values())
    return {
        "results": len(seqs),
        "utterances": len(per),
        "outcomes": dict(kinds),
        "answers_final": sum(o["answer:final"] for o in per.values()),
        "transcripts_final": sum(o["transcript:final"] for o in per.values()),
        "partials": sum(o["answer:partial"] + o["transcript:partial"] for o in per.values()),
        "lost": {u: o for u, o in per.items() if outcome(o) in ("lost", "pending")},
        "seq_first": min(seqs, default=None),
        "seq_last": max(seqs, default=None),
        "seq_gaps": gaps[:50],
        "seq_out_of_order": sum(1 for a, b in itertools.pairwise(seqs) if b < a),
        "duplicates": duplicates,
        "invalid": sub.invalid[:10],
        "outbox_dropped": dropped,
    }


def outcomes(sub: Subscriber) -> dict[str, dict[str, Any]]:
    """Per utterance (de-duplicated by ``msg_id``): message counts, the end reason, and the final
    answer's stop reason."""
    per: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for m in list(sub.received):
        body = m.payload
        if not isinstance(body, dict) or body.get("msg_id") in seen or "utterance_id" not in body:
            continue
        seen.add(body["msg_id"])
        leaf = m.topic.rsplit("/", 1)[-1]
        o = per.setdefault(body["utterance_id"], Counter())
        if leaf == "event":
            o[body["event_type"]] += 1
            if body["event_type"] == "speech_end":
                o["end_reason"] = body["reason"]
        elif leaf in ("answer", "transcript"):
            o[f"{leaf}:{'final' if body['final'] else 'partial'}"] += 1
            if leaf == "answer" and body["final"]:
                o["stop_reason"] = body["stop_reason"]
    return {u: dict(Counter(o)) | {"answer:final": o["answer:final"],
                                   "transcript:final": o["transcript:final"],
                                   "answer:partial": o["answer:partial"],
                                   "transcript:partial": o["transcript:partial"]}
            for u, o in per.items()}  # fmt: skip


def outcome(o: dict[str, Any]) -> str:
    """``complete`` (speech_start, speech_end, final answer, final transcript, once each);
    ``barge_in`` (the answer cancelled by the next speech: no transcript, by design); ``muted``
    (cut by the final ``cmd/mute``: no answer, by design); ``pending``; else ``lost``."""
    if o.get("speech_start") != 1 or o.get("speech_end", 0) > 1:
        return "lost"
    if o.get("end_reason") == "muted" and o["answer:final"] == 0:
        return "muted"
    if o.get("speech_end") != 1 or o["answer:final"] == 0:
        return "pending"
    if o["answer:final"] == 1 and o["transcript:final"] == 1:
        return "complete"
    if o["answer:final"] == 1 and o["transcript:final"] == 0:
        return "barge_in" if o.get("stop_reason") == "cancelled" else "pending"
    return "lost"


def settled(sub: Subscriber) -> tuple[int, bool]:
    """(utterances started, none of them is still waiting for a result)."""
    per = outcomes(sub)
    return len(per), bool(per) and all(outcome(o) != "pending" for o in per.values())


# -- the run --------------------------------------------------------------------------------------


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    model = ensure_checkpoint(args.cache, args.preset)
    clip = work / "loop.wav"
    truth = make_loop_clip(clip)
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    topics = ("availability", "state", "event", "answer", "transcript", "translation", "vision")
    sub = Subscriber(broker.port, [f"{BASE}/{t}" for t in topics])  # not cmd/: ours
    config = work / "soak.toml"
    sections = daemon_config(
        model,
        clip,
        broker.port,
        work / "state",
        audio={"file_loop": True},
        voice={
            "max_new_tokens": args.max_new_tokens,
            "transcript": True,
            "persist_history": True,
            "history_max_turns": 20,
        },
    )
    write_config(config, sections)
    stats, log = work / "loop-stats.json", work / "daemon.log"
    argv = [sys.executable, "-c", CHILD, str(config), str(stats)]
    started = time.monotonic()
    daemon = start_daemon(config, log, argv, log_level="INFO")
    print(f"soak: daemon pid {daemon.pid}, {args.minutes} min, log {log}", file=sys.stderr)
    samples: list[dict[str, Any]] = []
    ready_s: float | None = None
    end_s = None
    try:
        next_at = time.monotonic()
        while daemon.poll() is None:
            sample = proc_sample(daemon.pid, stats, started)
            if sample is not None:
                samples.append(sample)
            if ready_s is None and any(
                m.payload.get("event_type") == "speech_start"
                for m in list(sub.received)
                if isinstance(m.payload, dict)
            ):
                ready_s = samples[-1]["t_s"] if samples else 0.0
                print(f"soak: first speech at {ready_s:.0f} s (model loaded)", file=sys.stderr)
            if ready_s is not None and time.monotonic() - started - ready_s >= args.minutes * 60:
                if end_s is None:  # the end: mute (cuts the utterance in progress), then drain
                    end_s = time.monotonic() - started
                    sub.publish(f"{BASE}/cmd/mute", "ON")
                    print(f"soak: muted at {end_s:.0f} s; waiting for the results", file=sys.stderr)
                if settled(sub)[1] or time.monotonic() - started - end_s > 300:
                    break
            if len(samples) % 60 == 1 and samples:
                s = samples[-1]
                print(
                    f"  t={s['t_s']:.0f}s rss={s['VmRSS'] / 1024:.1f}MB fds={s['fds']} "
                    f"tasks={s.get('tasks')} utterances={settled(sub)[0]}",
                    file=sys.stderr,
                )
            next_at += args.sample_s
            time.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        status = stop_daemon(daemon)
        time.sleep(1.0)  # the last messages reach the subscriber
        sub.close()
        broker.stop()
    text = log.read_text(errors="replace")
    errors = [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]
    end = end_s if end_s is not None else time.monotonic() - started
    return {
        "preset": args.preset,
        "model": str(model),
        "minutes": args.minutes,
        "loop_s": len(clips.read_wav(clip)) / RATE,
        "loop_utterances": len(truth),
        "daemon_exit": status,
        "ready_s": ready_s,
        "end_s": round(end, 1),
        "config": sections,
        "summary": summarize(samples, ready_s or 0.0, end) if samples else {},
        "messages": check_messages(sub),
        "log_errors": errors[:20],
        "samples": samples,
    }


def table(res: dict[str, Any]) -> str:
    s, m = res["summary"], res["messages"]

    def mb(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    rows = ["| figure | after warm-up | last window | change |", "|---|---|---|---|"]
    for key in ("VmRSS", "RssAnon", "RssFile"):
        g = s[key]["growth_pct"]
        rows.append(
            f"| {key} MB (avg) | {mb(s[key]['baseline_mb'])} | {mb(s[key]['last_mb'])} "
            f"| {'-' if g is None else f'{g:+.2f} %'} |"
        )
    for key in ("fds", "threads", "tasks"):
        rows.append(
            f"| {key} (max; min-max overall) | {s[key]['baseline_max']} | "
            f"{s[key]['last_max']} | {s[key]['min']}-{s[key]['max']} |"
        )
    rows += [
        f"| utterances / final answers / final transcripts | {m['utterances']} | "
        f"{m['answers_final']} | {m['transcripts_final']} |",
        f"| outcomes | {m['outcomes']} | lost or pending: {len(m['lost'])} | |",
        f"| results (seq {m['seq_first']}-{m['seq_last']}) / gaps / duplicates | {m['results']} "
        f"| {len(m['seq_gaps'])} | {m['duplicates']} |",
        f"| invalid / outbox dropped | {len(m['invalid'])} | {m['outbox_dropped']} | |",
        f"| event-loop lag p50 / max ms | {mb(s['loop_lag_ms']['p50'])} "
        f"| {mb(s['loop_lag_ms']['max'])} | |",
        f"| log ERROR lines / daemon exit | {len(res['log_errors'])} | {res['daemon_exit']} | |",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="speech time, after loading")
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edgeagent-bench"))
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="diagnosis: the daemon traces its Python allocations and writes "
        "the top growth since minute 4 to WORK/trace-*.txt every 2 min",
    )
    parser.add_argument("--work", type=Path, help="keep the clip, config and log here")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks/results/voice_soak.json")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="voice-soak-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.tracemalloc:
            os.environ["SOAK_TRACE"] = str(work)  # the daemon inherits it
        res = soak(args, work)
    print(table(res))
    out = {
        "started": started,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "git": git_state(),
        **res,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
