#!/usr/bin/env python3
"""CPU used by the audio path while only silence (or steady noise) arrives.

    python benchmarks/audio_silence.py [--seconds 60] [--chunk-ms 10]

A real ``command`` source — ``tests/audio/pcm_writer.py`` writing white noise
at the given level in real time, in ``--chunk-ms`` writes, like ``arecord`` — feeds
capture (decode, channel mix, resampling when the rate is not 16 kHz) and
voice activity (the default: Silero behind its energy gate). The encoder
runs only on speech, so here it never does. Reports this process's CPU time
(user + system) over the wall time, and the writer's own CPU separately.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeagent.capture import AudioCapture, CaptureOptions
from edgeagent.capture.command import CommandSource
from edgeagent.dsp.endpoint import SpeechStart, VoiceActivity
from edgeagent.settings import AudioSettings

WRITER = Path(__file__).resolve().parent.parent / "tests" / "audio" / "pcm_writer.py"


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


async def measure(
    seconds: float, rate: int, channels: int, level: float, chunk_ms: float = 10.0
) -> dict[str, object]:
    argv = [sys.executable, str(WRITER), "--rate", str(rate), "--channels", str(channels),
            "--seconds", str(seconds), "--paced", "--noise-dbfs", str(level),
            "--chunk-ms", str(chunk_ms)]  # fmt: skip
    block = rate // 50  # 20 ms reads, as audio.block_ms defaults to
    capture = AudioCapture(lambda: CommandSource(argv, rate, channels, block_frames=block),
                           CaptureOptions(backoff_initial_s=60))  # fmt: skip
    vad = VoiceActivity.from_settings(AudioSettings())
    starts = 0
    samples = 0
    children0 = cpu_children()
    t0, c0 = time.perf_counter(), None
    async for b in capture.blocks():
        if c0 is None:  # from the first block on: the writer's start-up is not the audio path
            t0, c0 = time.perf_counter(), cpu_self()
        starts += sum(isinstance(o, SpeechStart) for o in vad.push(b.pcm, b.start))
        samples += len(b.pcm)
        if samples >= (seconds - 0.1) * 16000:
            break
    wall, cpu = time.perf_counter() - t0, cpu_self() - (c0 or 0.0)
    await asyncio.sleep(0.5)  # let the writer exit and be reaped
    gate = vad.detector
    return {
        "rate": rate, "channels": channels, "noise_dbfs": level, "writer_chunk_ms": chunk_ms,
        "audio_s": samples / 16000,
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 3),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
        "writer_cpu_percent": round(100 * (cpu_children() - children0) / wall, 2),
        "speech_starts": starts,
        "silero_frames": getattr(gate, "inner_frames", None),
        "frames": getattr(gate, "frames", None),
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument(
        "--chunk-ms",
        type=float,
        default=10.0,
        help="the writer's write size: 10 (a pessimistic device), 125 (arecord's default period)",
    )
    args = p.parse_args()
    results = []
    for rate, channels, level in ((16000, 1, -70.0), (16000, 1, -45.0), (48000, 2, -45.0),
                                  (16000, 1, -30.0)):  # fmt: skip
        r = asyncio.run(measure(args.seconds, rate, channels, level, args.chunk_ms))
        results.append(r)
        print(json.dumps(r))
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    name = f"audio_silence_chunk{args.chunk_ms:g}ms.json"
    (out / name).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
