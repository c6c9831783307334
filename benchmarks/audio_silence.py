#!/usr/bin/env python3
"""CPU used by the audio path while only silence (or steady noise) arrives.

    python benchmarks/audio_silence.py [--seconds 60] [--chunk-ms 10] [--baseline]

A real ``command`` source — ``tests/audio/pcm_writer.py`` writing white noise
at the given level in real time, in ``--chunk-ms`` writes, like ``arecord`` — feeds
capture (decode, channel mix, resampling when the rate is not 16 kHz) and
voice activity (the default: Silero behind its energy gate). The encoder
runs only on speech, so here it never does. Reports this process's CPU time
(user + system) over the wall time, and the writer's own CPU separately.

``--baseline``: each configuration also runs, in turn, as the audio path did
before (the command read through asyncio's ``StreamReader.readexactly``,
which wakes the reader on every write; 48 kHz decimated through a
``[n, taps]`` window matrix), so the ratio of the two is measured under the
same machine load. Also prints the cost of each signal
processing step per 20 ms block, measured alone.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

import edgeagent.capture.audio
from edgeagent.capture import AudioCapture, CaptureOptions
from edgeagent.capture.base import SourceEnded
from edgeagent.capture.command import CommandSource
from edgeagent.dsp.endpoint import SpeechStart, VoiceActivity
from edgeagent.dsp.pcm import decode, to_mono
from edgeagent.dsp.resample import Resampler
from edgeagent.settings import AudioSettings

WRITER = Path(__file__).resolve().parent.parent / "tests" / "audio" / "pcm_writer.py"


class StreamReaderSource(CommandSource):
    """The baseline: the same program read with ``StreamReader.readexactly`` (a task
    wake-up per write of the program, not per block)."""

    proc: asyncio.subprocess.Process | None = None

    async def open(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
        )

    async def read(self) -> np.ndarray | None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            raw = await self.proc.stdout.readexactly(self.block_bytes)
        except asyncio.IncompleteReadError:
            raise SourceEnded("ended") from None
        return decode(raw, self.sample_format, self.channels)

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


class WindowMatrixResampler(Resampler):
    """The baseline's decimation: a strided ``[n, 2·half]`` window view times the filter
    (numpy copies the view first)."""

    def _decimate(self, first: int, n: int) -> np.ndarray:
        step = self._buffer.strides[0]
        windows = np.lib.stride_tricks.as_strided(
            self._buffer[first:], (n, 2 * self.half), (step * self.down, step), writeable=False
        )
        out: np.ndarray = windows @ np.concatenate(self._phases_in_order())
        return out

    def _phases_in_order(self) -> list[np.ndarray]:
        taps = np.empty(2 * self.half, np.float32)
        for p, phase in enumerate(self._phases):
            taps[p :: self.down] = phase
        return [taps]


def dsp_costs(repeat: int = 2000) -> dict[str, float]:
    """Microseconds per 20 ms block of each step, 48 kHz stereo S16 in, measured alone."""
    rng = np.random.default_rng(0)
    raw = (rng.standard_normal(960 * 2) * 100).astype("<i2").tobytes()
    resampler = Resampler(48000)
    vad = VoiceActivity.from_settings(AudioSettings())
    frames = decode(raw, "S16_LE", 2)
    mono = to_mono(frames, None)
    pcm = resampler.process(mono)
    before = WindowMatrixResampler(48000)
    position = itertools.count(0, len(pcm))  # consecutive blocks on the timeline
    steps = {
        "decode": lambda: decode(raw, "S16_LE", 2),
        "mix_to_mono": lambda: to_mono(frames, None),
        "resample_48k_to_16k": lambda: resampler.process(mono),
        "resample_48k_to_16k_baseline": lambda: before.process(mono),
        "voice_activity": lambda: vad.push(pcm, next(position)),
    }
    costs = {}
    for name, step in steps.items():
        t0 = time.perf_counter()
        for _ in range(repeat):
            step()
        costs[name] = round((time.perf_counter() - t0) / repeat * 1e6, 1)
    return costs


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


async def measure(
    seconds: float, rate: int, channels: int, level: float, chunk_ms: float = 10.0,
    source: type[CommandSource] = CommandSource, block_ms: int = 20,
) -> dict[str, object]:  # fmt: skip
    argv = [sys.executable, str(WRITER), "--rate", str(rate), "--channels", str(channels),
            "--seconds", str(seconds), "--paced", "--noise-dbfs", str(level),
            "--chunk-ms", str(chunk_ms)]  # fmt: skip
    block = rate * block_ms // 1000  # audio.block_ms: 20 by default
    baseline = source is StreamReaderSource
    edgeagent.capture.audio.Resampler = WindowMatrixResampler if baseline else Resampler  # type: ignore[misc]
    capture = AudioCapture(lambda: source(argv, rate, channels, block_frames=block),
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
        "source": source.__name__, "block_ms": block_ms,
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
    p.add_argument("--baseline", action="store_true",
                   help="also run each configuration with the StreamReader baseline")  # fmt: skip
    p.add_argument("--block-ms", type=int, default=20, help="capture block (audio.block_ms)")
    args = p.parse_args()
    sources: tuple[type[CommandSource], ...] = (CommandSource,)
    if args.baseline:
        sources += (StreamReaderSource,)
    results = []
    rows = ["| source | writes every | noise | CPU, % of a core | writer | ratio to baseline |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for rate, channels, level in ((16000, 1, -70.0), (16000, 1, -45.0), (48000, 2, -45.0),
                                  (16000, 1, -30.0)):  # fmt: skip
        pair = []
        for source in sources:
            r = asyncio.run(
                measure(args.seconds, rate, channels, level, args.chunk_ms, source, args.block_ms)
            )
            pair.append(r)
            results.append(r)
            print(json.dumps(r), flush=True)
        cpu = [float(r["cpu_percent_of_one_core"]) for r in pair]  # type: ignore[arg-type]
        ratio = f"{cpu[0] / cpu[1]:.2f}" if len(cpu) == 2 else ""
        rows.append(
            f"| {rate // 1000} kHz {'mono' if channels == 1 else 'stereo'} | {args.chunk_ms:g} ms "
            f"| {level:g} dBFS | {cpu[0]:.2f}" + (f" (baseline {cpu[1]:.2f})" if ratio else "")
            + f" | {pair[0]['writer_cpu_percent']} | {ratio} |"
        )  # fmt: skip
    costs = dsp_costs()
    print("\n".join(rows))
    print("signal processing alone, µs per 20 ms block:", costs)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    name = f"audio_silence_chunk{args.chunk_ms:g}ms_block{args.block_ms}ms.json"
    payload = {"runs": results, "dsp_us_per_20ms_block": costs,
               "load_average_1min": round(os.getloadavg()[0], 2)}  # fmt: skip
    (out / name).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
