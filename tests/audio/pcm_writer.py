"""A stand-in for arecord in tests: writes a sine as raw interleaved PCM to stdout, then exits.

    python pcm_writer.py --rate 48000 --channels 2 --seconds 0.5 --freq 440 \
        [--noise-dbfs -50] [--format S16_LE] [--paced] [--exit-status 3 --message "device gone"]

Channel c carries the sine at amplitude (c + 1) / (channels + 1).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=int, default=16000)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--seconds", type=float, default=0.5)
    p.add_argument("--freq", type=float, default=440.0)
    p.add_argument("--noise-dbfs", type=float, help="white noise at this RMS level instead")
    p.add_argument("--format", default="S16_LE", choices=("S16_LE", "S32_LE", "FLOAT_LE"))
    p.add_argument("--paced", action="store_true", help="write in real time, in chunks")
    p.add_argument("--chunk-ms", type=float, default=10.0, help="size of each paced write")
    p.add_argument("--exit-status", type=int, default=0)
    p.add_argument("--message", default="")
    args = p.parse_args()
    n = round(args.rate * args.seconds)
    t = np.arange(n) / args.rate
    sine = np.sin(2 * np.pi * args.freq * t)
    if args.noise_dbfs is not None:
        rng = np.random.default_rng(0)
        sine = rng.standard_normal(n) * 10 ** (args.noise_dbfs / 20) * (args.channels + 1)
    frames = np.stack([sine * (c + 1) / (args.channels + 1) for c in range(args.channels)], axis=1)
    if args.format == "S16_LE":
        data = np.round(frames * 32767).astype("<i2")
    elif args.format == "S32_LE":
        data = np.round(frames * 2147483647).astype("<i4")
    else:
        data = frames.astype("<f4")
    raw = data.tobytes()
    chunk_frames = max(1, round(args.rate * args.chunk_ms / 1000))
    chunk = data[:chunk_frames].nbytes if args.paced else len(raw)
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(raw), chunk)):
        sys.stdout.buffer.write(raw[offset : offset + chunk])
        sys.stdout.buffer.flush()
        if args.paced:
            time.sleep(max(0.0, start + (i + 1) * args.chunk_ms / 1000 - time.monotonic()))
    if args.message:
        print(args.message, file=sys.stderr)
    return args.exit_status


if __name__ == "__main__":
    sys.exit(main())
