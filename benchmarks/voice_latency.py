#!/usr/bin/env python3
"""End of speech to the first answer on MQTT through the real voice pipeline (issue 8, must-show 3).

For each preset (``small``, ``e2b``; multimodal layout, quantized kernels) it
makes one clip — utterances of about 2, 5 and 10 s spoken by espeak-ng, each
length ``--reps`` times in rotating order after one warm-up utterance,
separated by ``--gap`` s of silence — and plays it through ``edgeagent run``
(a subprocess; the file source paced in real time) against a mosquitto it
starts on an ephemeral loopback port. A paho subscriber on the same machine
times, per utterance, the arrival of the ``speech_end`` event and of the
first answer message (the first partial, ``final: false``) of the same
``utterance_id``. Reported per length: p50 and p90 of that interval, the VAD
hang-over in front of it (``audio.vad_hangover_ms``: silence the endpointer
waits for before it decides), the ratio of the 10 s and 2 s medians, and the
daemon's own breakdown after the end of speech (its DEBUG line per
utterance, :func:`edgeagent.pipeline.utterance._log_timing`): the encoder
loop seeing the end, its last push, the flush, the last soft tokens
prefilled, the closing template tokens prefilled, the first token.

    .venv/bin/python benchmarks/voice_latency.py --presets small --reps 5 --gap 4
    .venv/bin/python benchmarks/voice_latency.py --presets e2b --reps 3 --gap 25
    .venv/bin/python benchmarks/voice_latency.py --presets e2b --prefill-min 1   # old scheduling

Where the daemon cannot keep up (e2b on a shared 2-core machine), a long
``--gap`` keeps each utterance from queueing behind the previous one's answer.

Checkpoints are made when missing (``edgeagent model init --preset P --layout
multimodal``) under ``--cache`` (default ``/tmp/edgeagent-bench``); the first
load writes their quantized copies beside them (minutes for e2b). Needs
espeak-ng, sox and mosquitto. Results: a table on stdout, JSON in
``--json`` (default ``benchmarks/results/voice_latency.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import make_test_clips as clips  # scripts/make_test_clips.py: espeak-ng + sox

from tests.publish.mqtt_helpers import Mosquitto, Subscriber

REPO = Path(__file__).resolve().parent.parent
RATE = 16_000
DEVICE = "bench"
BASE = f"edgeagent/{DEVICE}"
LENGTHS = (2.0, 5.0, 10.0)
# Run-on sentences (no punctuation: espeak-ng pauses at commas and full stops, and a pause
# longer than the hang-over would split the utterance); stretched to the exact length.
TEXTS = {
    2.0: "turn on the lights in the kitchen please",
    5.0: "what will the weather be like tomorrow morning in the city and do I need to take "
    "an umbrella with me",
    10.0: "remind me to call my sister at five this afternoon and then read me the headlines "
    "about the football match and the train strike and tell me whether the library is "
    "still open on saturday evening",
}
WARMUP_S = 2.0
MAX_PAUSE_S = 0.12  # pauses inside an utterance are cut to this
TIMING = re.compile(
    r"utterance (\w+) timing after the end of speech, ms: (.*) first_token=([\d.]+)"
    r"(?:; process CPU ms: (.*))?"
)
STEPS = ("seen", "pushed", "flushed", "prefilled", "closed", "first_token")


# -- speech --------------------------------------------------------------------------------


def utterance(text: str, seconds: float, tmp: Path) -> np.ndarray:
    """``text`` spoken by espeak-ng, inner pauses capped, stretched by sox to ``seconds``."""
    x = clips.speak(text, "en-us", 165, tmp)
    rms = clips.frame_rms(x)
    quiet = 20 * np.log10(rms / rms.max()) < -35
    keep = np.ones(len(quiet), dtype=bool)
    run = 0
    for i, q in enumerate(quiet):
        run = run + 1 if q else 0
        keep[i] = run * clips.FRAME <= MAX_PAUSE_S * RATE
    frames = x[: len(keep) * clips.FRAME].reshape(len(keep), clips.FRAME)[keep].reshape(-1)
    raw, stretched = tmp / "utt.wav", tmp / "utt_tempo.wav"
    clips.write_wav(raw, frames)
    factor = len(frames) / RATE / seconds
    clips.run(["sox", "-D", str(raw), str(stretched), "tempo", "-s", f"{factor:.5f}"])
    y = clips.read_wav(stretched)[: round(seconds * RATE)]
    return y * 10 ** (clips.SPEECH_DBFS / 20) / np.sqrt(np.mean(y**2))


def make_clip(
    path: Path, lengths: tuple[float, ...], reps: int, gap_s: float, lead_s: float = 1.5
) -> list[dict[str, Any]]:
    """Write the clip; return its utterances: ``{"length": s, "start_s", "end_s"}`` in order
    (the first, ``length`` 0, is the warm-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        spoken = {s: utterance(TEXTS[s], s, Path(tmp)) for s in lengths}
        warm = utterance(TEXTS[2.0], WARMUP_S, Path(tmp))
    order = [0.0] + [
        lengths[(i + r) % len(lengths)] for r in range(reps) for i in range(len(lengths))
    ]
    pieces, truth, t = [np.zeros(round(lead_s * RATE))], [], round(lead_s * RATE)
    for length in order:
        pcm = warm if length == 0.0 else spoken[length]
        truth.append({"length": length, "start_s": t / RATE, "end_s": (t + len(pcm)) / RATE})
        pieces += [pcm, np.zeros(round(gap_s * RATE))]
        t += len(pcm) + len(pieces[-1])
    clips.write_wav(path, np.concatenate(pieces))
    return truth


# -- the daemon ------------------------------------------------------------------------------


def ensure_checkpoint(cache: Path, preset: str) -> Path:
    """``<cache>/<preset>-mm``: the preset in the multimodal layout, made when missing."""
    out = cache / f"{preset}-mm"
    if not (out / "config.json").exists():
        print(f"making the {preset} multimodal checkpoint in {out} ...", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "edgeagent",
                "model",
                "init",
                "--preset",
                preset,
                "--layout",
                "multimodal",
                "--out",
                str(out),
            ],
            check=True,
        )
    return out


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def daemon_config(
    checkpoint: Path, clip: Path, port: int, state: Path, **overrides: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The daemon's settings: file source in real time, quantized kernels, no governor."""
    sections: dict[str, dict[str, Any]] = {
        "model": {"path": str(checkpoint), "kernels": "quantized", "max_context": 2048},
        "audio": {
            "source": "file",
            "file": str(clip),
            "file_realtime": True,
            "vad_hangover_ms": 300,
        },
        "voice": {
            "max_new_tokens": 8,
            "partial_interval_ms": 250,
            "transcript": False,
            "persist_history": False,
            "history_max_turns": 1,
        },
        "camera": {"enabled": False},
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "device_id": DEVICE,
            "homeassistant_discovery": False,
        },
        "governor": {"enabled": False},
        "daemon": {"state_dir": str(state), "shutdown_timeout_s": 20.0},
    }
    for name, values in overrides.items():
        sections[name] = {**sections.get(name, {}), **values}
    return sections


def start_daemon(
    config: Path, log: Path, argv: list[str] | None = None, log_level: str = "DEBUG"
) -> subprocess.Popen[bytes]:
    """``edgeagent run --config FILE`` (or ``argv``) as a child process, logging to ``log``."""
    cmd = argv or [sys.executable, "-m", "edgeagent", "run", "--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [*cmd, "--log-level", log_level, "--log-format", "text"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stop_daemon(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far, s (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Runs as the daemon with utterance.PREFILL_MIN_TOKENS set (--prefill-min), else as the CLI.
CHILD = """
import sys
from edgeagent.pipeline import utterance
utterance.PREFILL_MIN_TOKENS = {n}
from edgeagent.cli import main
sys.exit(main(["run", *sys.argv[1:]]))
"""


# -- what the subscriber saw ----------------------------------------------------------------


@dataclass
class Heard:
    """One utterance as the subscriber saw it; times: the subscriber's ``time.monotonic()``."""

    utterance_id: str
    start_s: float
    end_s: float | None = None
    speech_end_at: float | None = None
    first_answer_at: float | None = None
    final_at: float | None = None
    ttft_ms: float | None = None
    hangover_ms: int | None = None

    @property
    def latency_ms(self) -> float | None:
        if self.speech_end_at is None or self.first_answer_at is None:
            return None
        return (self.first_answer_at - self.speech_end_at) * 1000


def collect(sub: Subscriber) -> dict[str, Heard]:
    """Utterances by id, from the subscriber's messages (de-duplicated by ``msg_id``)."""
    heard: dict[str, Heard] = {}
    seen: set[str] = set()
    for m in list(sub.received):
        body = m.payload
        if not isinstance(body, dict) or body.get("msg_id") in seen:
            continue
        seen.add(body.get("msg_id", ""))
        leaf = m.topic.rsplit("/", 1)[-1]
        if leaf == "event" and body.get("event_type") == "speech_start":
            heard[body["utterance_id"]] = Heard(body["utterance_id"], body["start_s"])
        elif leaf == "event" and body.get("event_type") == "speech_end":
            h = heard.get(body["utterance_id"])
            if h is not None:
                h.end_s, h.speech_end_at, h.hangover_ms = body["end_s"], m.at, body["hangover_ms"]
        elif leaf == "answer" and (h := heard.get(body.get("utterance_id", ""))) is not None:
            if h.first_answer_at is None:
                h.first_answer_at = m.at
            if body["final"]:
                h.final_at, h.ttft_ms = m.at, body["ttft_ms"]
    return heard


def timings(log: Path) -> dict[str, dict[str, float]]:
    """The daemon's per-utterance breakdown (DEBUG lines), ms after the end of speech."""
    out: dict[str, dict[str, float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if (m := TIMING.search(line)) is not None:
            steps = dict(part.split("=") for part in m.group(2).split())
            out[m.group(1)] = {k: float(v) for k, v in steps.items()}
            out[m.group(1)]["first_token"] = float(m.group(3))
            for part in (m.group(4) or "").split():
                k, v = part.split("=")
                out[m.group(1)][f"cpu_{k}"] = float(v)
    return out


def label(h: Heard, truth: list[dict[str, Any]]) -> float | None:
    """The clip utterance ``h`` overlaps most (its ``length``), or None."""
    end = h.end_s if h.end_s is not None else h.start_s
    best, overlap = None, 0.0
    for t in truth:
        o = min(end, t["end_s"]) - max(h.start_s, t["start_s"])
        if o > overlap:
            best, overlap = t["length"], o
    return best


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q))


# -- one preset -------------------------------------------------------------------------------


def run_preset(preset: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    model = ensure_checkpoint(args.cache, preset)
    clip = work / f"{preset}.wav"
    truth = make_clip(clip, tuple(args.lengths), args.reps, args.gap)
    duration = len(clips.read_wav(clip)) / RATE
    broker = Mosquitto(work / f"mosquitto-{preset}")
    broker.start()
    sub = Subscriber(broker.port, [f"{BASE}/event", f"{BASE}/answer"])
    config = work / f"{preset}.toml"
    write_config(
        config,
        daemon_config(
            model,
            clip,
            broker.port,
            work / f"state-{preset}",
            model={"threads": args.threads},
            audio={"vad_hangover_ms": args.hangover_ms},
            voice={"max_new_tokens": args.max_new_tokens},
        ),
    )
    log = work / f"{preset}.log"
    started = time.monotonic()
    argv = None
    if args.prefill_min is not None:  # the scheduling knob of utterance.py, for an A/B run
        argv = [sys.executable, "-c", CHILD.format(n=args.prefill_min), "--config", str(config)]
    daemon = start_daemon(config, log, argv)
    print(
        f"{preset}: daemon pid {daemon.pid}, clip {duration:.0f} s, {len(truth)} utterances; "
        f"log {log}",
        file=sys.stderr,
    )
    cpu: list[tuple[float, float]] = []  # (wall, CPU s) of the daemon: at its first speech, end
    try:
        deadline = started + args.load_timeout + duration * 1.5 + 60
        while time.monotonic() < deadline and daemon.poll() is None:
            heard = collect(sub)
            if heard and not cpu:
                cpu.append((time.monotonic(), cpu_seconds(daemon.pid)))
            finals = sum(1 for h in heard.values() if h.final_at is not None)
            if finals >= len(truth) and len(heard) >= len(truth):
                break
            time.sleep(1.0)
        time.sleep(1.0)
        cpu.append((time.monotonic(), cpu_seconds(daemon.pid)))
    finally:
        status = stop_daemon(daemon)
        sub.close()
        broker.stop()
    elapsed = time.monotonic() - started
    heard, steps = collect(sub), timings(log)
    rows: list[dict[str, Any]] = []
    for h in sorted(heard.values(), key=lambda h: h.start_s):
        rows.append(
            {
                "utterance_id": h.utterance_id,
                "length_s": label(h, truth),
                "start_s": h.start_s,
                "end_s": h.end_s,
                "latency_ms": h.latency_ms,
                "ttft_ms": h.ttft_ms,
                "hangover_ms": h.hangover_ms,
                "steps_ms": steps.get(h.utterance_id, {}),
            }
        )
    measured = [r for r in rows[1:] if r["latency_ms"] is not None]  # the first is the warm-up
    summary = {}
    for length in args.lengths:
        mine = [r for r in measured if r["length_s"] == length]
        lat = [r["latency_ms"] for r in mine]
        summary[str(length)] = {
            "n": len(lat),
            "p50_ms": pct(lat, 50),
            "p90_ms": pct(lat, 90),
            "ttft_p50_ms": pct([r["ttft_ms"] for r in mine if r["ttft_ms"] is not None], 50),
            "cpu_steps_p50_ms": {
                s: pct([r["steps_ms"][f"cpu_{s}"] for r in mine if f"cpu_{s}" in r["steps_ms"]], 50)
                for s in STEPS[:-1]
            },
            "steps_p50_ms": {
                s: pct([r["steps_ms"][s] for r in mine if s in r["steps_ms"]], 50) for s in STEPS
            },
        }
    short, long = summary.get(str(min(args.lengths))), summary.get(str(max(args.lengths)))
    ratio = None
    if short and long and short["p50_ms"] and long["p50_ms"] is not None:
        ratio = long["p50_ms"] / short["p50_ms"]
    return {
        "preset": preset,
        "model": str(model),
        "hangover_ms": args.hangover_ms,
        "expected_utterances": len(truth),
        "heard_utterances": len(heard),
        "unmatched": [r["utterance_id"] for r in rows if r["length_s"] is None],
        "daemon_exit": status,
        "wall_s": round(elapsed, 1),
        "prefill_min_tokens": args.prefill_min,
        "cpu_cores_busy": None
        if len(cpu) < 2
        else (cpu[1][1] - cpu[0][1]) / (cpu[1][0] - cpu[0][0]),
        "load_avg_end": os.getloadavg(),
        "summary": summary,
        "ratio_long_short_p50": ratio,
        "utterances": rows,
    }


# -- output ------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| preset | utterance | n | hang-over ms | speech_end → first answer p50 / p90 ms "
        "| seen | pushed | flushed | prefilled | closed | first token (daemon) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for length, s in res["summary"].items():
            st = s["steps_p50_ms"]
            lines.append(
                f"| {res['preset']} | {float(length):g} s | {s['n']} | {res['hangover_ms']} "
                f"| {fmt(s['p50_ms'])} / {fmt(s['p90_ms'])} | "
                + " | ".join(fmt(st[k]) for k in STEPS)
                + " |"
            )
            cpu = s.get("cpu_steps_p50_ms", {})
            if any(v is not None for v in cpu.values()):
                lines.append(
                    f"| | {float(length):g} s: process CPU ms | | | | "
                    + " | ".join(fmt(cpu.get(k)) for k in STEPS[:-1])
                    + " | |"
                )
        cores = res.get("cpu_cores_busy")
        lines.append(
            f"| {res['preset']} | ratio 10 s / 2 s p50 | | | "
            f"{fmt(res['ratio_long_short_p50'], 2)} | daemon CPU {fmt(cores, 2)} cores; "
            f"load avg {fmt(res['load_avg_end'][0], 1)} | | | | | |"
        )
    return "\n".join(lines)


def git_state() -> dict[str, Any]:
    def git(*a: str) -> str:
        return subprocess.run(
            ["git", *a], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": git("status", "--porcelain", "--untracked-files=no").splitlines(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["small", "e2b"])
    parser.add_argument("--lengths", nargs="+", type=float, default=list(LENGTHS))
    parser.add_argument("--reps", type=int, default=5, help="utterances of each length")
    parser.add_argument("--gap", type=float, default=4.0, help="silence after each, s")
    parser.add_argument("--hangover-ms", type=int, default=300)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument(
        "--load-timeout",
        type=float,
        default=1800,
        help="allowance for the first load (quantization), s",
    )
    parser.add_argument("--threads", type=int, default=0, help="model.threads (0: every core)")
    parser.add_argument(
        "--prefill-min",
        type=int,
        help="override utterance.PREFILL_MIN_TOKENS (soft tokens per prefill)",
    )
    parser.add_argument("--work", type=Path, help="keep clips, configs and logs here")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edgeagent-bench"))
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks/results/voice_latency.json")
    args = parser.parse_args(argv)
    for length in args.lengths:
        if length not in TEXTS:
            parser.error(f"--lengths: one of {', '.join(f'{s:g}' for s in TEXTS)}")
    results = []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="voice-latency-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for preset in args.presets:
            res = run_preset(preset, args, work)
            results.append(res)
            print(table([res]), flush=True)
            if res["heard_utterances"] != res["expected_utterances"] or res["unmatched"]:
                print(
                    f"{preset}: heard {res['heard_utterances']} utterances of "
                    f"{res['expected_utterances']}; unmatched {res['unmatched']}",
                    file=sys.stderr,
                )
    print(table(results))
    out = {
        "started": started,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "git": git_state(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
