#!/usr/bin/env python3
"""Voice activity detectors compared on speech in noise and on noise alone.

    python scripts/make_test_clips.py --eval /tmp/vad_eval     # speech clips, espeak-ng + sox
    python benchmarks/audio_vad.py --clips /tmp/vad_eval [--detectors silero,energy,webrtc]

For each detector (with the endpointer's default thresholds):

- speech: the 13 evaluation clips (white, pink and brown noise at 20, 10, 5
  and 0 dB SNR, plus clean; 4 utterances each): utterances found, start and
  end errors against the truth, utterances split or merged, false starts;
- noise alone: 60 s of each noise in ``tests/audio/noise.py`` at -50, -35
  and -20 dBFS: speech starts (any is a false alarm);
- cost: CPU seconds per second of audio (``time.process_time``).

Writes a table to stdout and JSON to ``benchmarks/results/audio_vad.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeagent.dsp.endpoint import EndpointConfig, SpeechEnd, SpeechStart, VoiceActivity
from edgeagent.dsp.vad import make_detector
from edgeagent.errors import AudioError
from tests.audio.noise import NOISES, noise

RATE = 16_000
TOLERANCE_S = 0.15


def read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


def utterances(
    detector: str, pcm: np.ndarray, config: EndpointConfig, block: int = 320
) -> tuple[list[tuple[float, float]], float]:
    """Detected (start_s, end_s) and CPU seconds, feeding ``block``-sample blocks."""
    vad = VoiceActivity(make_detector(detector), config)
    found: list[tuple[float, float]] = []
    t0 = time.process_time()
    events = []
    for i in range(0, len(pcm), block):
        events += vad.push(pcm[i : i + block], i)
    events += vad.flush()
    cpu = time.process_time() - t0
    for e in events:
        if isinstance(e, SpeechEnd):
            found.append((e.start_s, e.end_s))
    starts = sum(isinstance(e, SpeechStart) for e in events)
    assert starts == len(found)
    return found, cpu


def score(truth: list[dict[str, Any]], found: list[tuple[float, float]]) -> dict[str, Any]:
    hits, start_err, end_err, split = 0, [], [], 0
    used = set()
    for u in truth:
        overlapping = [i for i, (s, e) in enumerate(found) if s < u["end_s"] and e > u["start_s"]]
        if not overlapping:
            continue
        hits += 1
        used.update(overlapping)
        split += len(overlapping) > 1
        s, e = found[overlapping[0]][0], found[overlapping[-1]][1]
        start_err.append(s - u["start_s"])
        end_err.append(e - u["end_s"])
    return {
        "utterances": len(truth),
        "found": hits,
        "split": split,
        "false_starts": len(found) - len(used),
        "start_err": start_err,
        "end_err": end_err,
        "within_150ms": sum(
            abs(a) <= TOLERANCE_S and abs(b) <= TOLERANCE_S
            for a, b in zip(start_err, end_err, strict=True)
        ),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clips", type=Path, required=True)
    p.add_argument("--detectors", default="silero,silero-ungated,energy,webrtc")
    p.add_argument("--noise-seconds", type=float, default=60.0)
    args = p.parse_args()
    config = EndpointConfig()
    results: dict[str, Any] = {}
    clips = sorted(args.clips.glob("eval_*.json"))
    for det in args.detectors.split(","):
        try:
            make_detector(det)
        except AudioError as exc:
            print(f"{det:8s} skipped: {exc}")
            continue
        speech_audio, speech_cpu = 0.0, 0.0
        per_clip = {}
        totals = {"utterances": 0, "found": 0, "split": 0, "false_starts": 0, "within_150ms": 0}
        errs: list[float] = []
        for meta_path in clips:
            meta = json.loads(meta_path.read_text())
            pcm = read(meta_path.with_suffix(".wav"))
            found, cpu = utterances(det, pcm, config)
            speech_audio += len(pcm) / RATE
            speech_cpu += cpu
            s = score(meta["utterances"], found)
            per_clip[meta_path.stem] = s
            for k in totals:
                totals[k] += s[k]
            errs += [abs(x) for x in s["start_err"] + s["end_err"]]
        noise_alarms = {}
        noise_cpu, noise_audio = 0.0, 0.0
        for kind in NOISES:
            for level in (-50.0, -35.0, -20.0):
                pcm = noise(kind, args.noise_seconds, level, seed=11)
                found, cpu = utterances(det, pcm, config)
                noise_alarms[f"{kind}@{level:g}dBFS"] = len(found)
                noise_cpu += cpu
                noise_audio += len(pcm) / RATE
        results[det] = {
            "speech": totals,
            "median_abs_err_ms": round(1000 * float(np.median(errs)), 1) if errs else None,
            "p90_abs_err_ms": round(1000 * float(np.percentile(errs, 90)), 1) if errs else None,
            "max_abs_err_ms": round(1000 * max(errs), 1) if errs else None,
            "noise_false_starts": noise_alarms,
            "cpu_per_audio_s": round((speech_cpu + noise_cpu) / (speech_audio + noise_audio), 5),
            "per_clip": per_clip,
        }
        r = results[det]
        print(
            f"{det:8s} found {totals['found']}/{totals['utterances']}  "
            f"within 150 ms {totals['within_150ms']}  split {totals['split']}  "
            f"false starts (speech clips) {totals['false_starts']}  "
            f"|err| median {r['median_abs_err_ms']} ms p90 {r['p90_abs_err_ms']} "
            f"max {r['max_abs_err_ms']}  noise false starts {sum(noise_alarms.values())}  "
            f"cpu {100 * r['cpu_per_audio_s']:.2f} % of a core"
        )
        bad = {k: v for k, v in noise_alarms.items() if v}
        if bad:
            print("          noise alarms:", bad)
        misses = {
            k: (v["found"], v["within_150ms"], v["false_starts"])
            for k, v in per_clip.items()
            if v["found"] < v["utterances"]
            or v["within_150ms"] < v["utterances"]
            or v["false_starts"]
        }
        if misses:
            print("          clips (found, within, false):", misses)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "audio_vad.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
