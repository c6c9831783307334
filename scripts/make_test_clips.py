#!/usr/bin/env python3
"""Make speech test clips: espeak-ng speaks, sox mixes in noise at a known SNR.

Every clip is 16 kHz mono 16-bit WAV with a ``.json`` beside it holding the
truth: the start and end of every utterance in seconds, the noise type and
the SNR. Needs ``espeak-ng`` and ``sox`` (Debian packages of those names).

    python scripts/make_test_clips.py             # short clips: tests/fixtures/audio/clips
    python scripts/make_test_clips.py --eval DIR  # a larger set for VAD measurements

How a clip is made:

1. Each sentence is spoken by ``espeak-ng`` (22.05 kHz) and resampled to
   16 kHz by ``sox``; the utterance is trimmed to its active part: the 10 ms
   frames whose RMS is within 40 dB of the loudest frame. Those bounds are
   the truth.
2. Utterances are laid out with silent gaps and scaled to a speech level of
   -23 dBFS RMS (over the active frames).
3. ``sox`` synthesises the noise (white, pink or brown; ``-R`` makes it
   repeatable) and mixes it in (``sox -m -v 1 speech -v g noise``) with the
   gain ``g`` that puts the noise RMS ``snr_db`` below the speech RMS.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 16_000
FRAME = 160  # 10 ms
ACTIVE_DB = 40.0  # a frame is active within this many dB of the loudest frame
SPEECH_DBFS = -23.0
REPO = Path(__file__).resolve().parent.parent
CLIP_DIR = REPO / "tests" / "fixtures" / "audio" / "clips"


@dataclass(frozen=True)
class ClipSpec:
    """One clip: sentences with the silence before each, the tail, the noise and its SNR."""

    name: str
    sentences: tuple[str, ...]
    gaps_s: tuple[float, ...]  # silence before each sentence
    tail_s: float
    noise: str | None  # "whitenoise" | "pinknoise" | "brownnoise" | None (clean)
    snr_db: float | None
    voice: str = "en-us"
    speed_wpm: int = 165


# Committed: short, so the repository stays small (~32 kB per second of audio).
SHORT_CLIPS = (
    ClipSpec("two_clean", ("Turn on the lights.", "What time is it?"), (0.4, 1.0), 0.9, None, None),
    ClipSpec(
        "two_pink_10db",
        ("Set a timer.", "Play some music."),
        (0.4, 1.0),
        0.9,
        "pinknoise",
        10.0,
        voice="en-gb",
    ),
    ClipSpec("one_white_5db", ("How is the weather today?",), (0.5,), 0.9, "whitenoise", 5.0),
)
# Shipped inside the package for `edgeagent demo` (its .json tells the demo what was said).
DEMO_DIR = REPO / "edgeagent" / "demo"
DEMO_CLIP = ClipSpec(
    "speech",
    ("What is the weather like today?", "Set a timer for ten minutes."),
    (0.5, 1.0),
    0.9,
    "pinknoise",
    20.0,
)

_EVAL_SENTENCES = (
    "Turn on the lights in the kitchen.",
    "What is the weather like tomorrow?",
    "Remind me to call my sister at five.",
    "Translate good morning into French.",
    "How far is the nearest train station?",
    "Stop.",
    "Yes, please.",
    "Open the garage door and switch off the heating.",
)


def eval_clips() -> list[ClipSpec]:
    """Longer clips for VAD measurements: every noise type at 20, 10, 5 and 0 dB SNR."""
    specs = []
    rng = np.random.default_rng(7)
    for noise in ("whitenoise", "pinknoise", "brownnoise"):
        for snr in (20.0, 10.0, 5.0, 0.0):
            order = rng.permutation(len(_EVAL_SENTENCES))[:4]
            gaps = tuple(float(g) for g in rng.uniform(0.8, 2.5, size=4))
            specs.append(
                ClipSpec(
                    f"eval_{noise}_{int(snr)}db",
                    tuple(_EVAL_SENTENCES[i] for i in order),
                    gaps,
                    1.5,
                    noise,
                    snr,
                    voice=("en-us", "en-gb", "en-us+f3")[len(specs) % 3],
                )
            )
    specs.append(ClipSpec("eval_clean", _EVAL_SENTENCES[:4], (1.0, 1.2, 0.9, 1.5), 1.5, None, None))
    return specs


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def read_wav(path: Path) -> np.ndarray:
    """16-bit mono WAV -> float64 in [-1, 1)."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.astype(np.float64) / 32768.0


def write_wav(path: Path, x: np.ndarray) -> None:
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())


def frame_rms(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME
    return np.sqrt(np.mean(x[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-20)


def speak(text: str, voice: str, wpm: int, tmp: Path) -> np.ndarray:
    """espeak-ng at 22.05 kHz -> sox to 16 kHz -> trimmed to the active frames."""
    raw, resampled = tmp / "espeak.wav", tmp / "espeak16.wav"
    run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text])
    run(["sox", "-R", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(resampled)])
    x = read_wav(resampled)
    rms = frame_rms(x)
    active = np.flatnonzero(20 * np.log10(rms / rms.max()) > -ACTIVE_DB)
    return x[active[0] * FRAME : (active[-1] + 1) * FRAME]


def make_clip(spec: ClipSpec, out_dir: Path, tmp: Path) -> dict[str, object]:
    pieces: list[np.ndarray] = []
    truth: list[dict[str, object]] = []
    t = 0
    for text, gap in zip(spec.sentences, spec.gaps_s, strict=True):
        pieces.append(np.zeros(round(gap * RATE)))
        t += len(pieces[-1])
        utt = speak(text, spec.voice, spec.speed_wpm, tmp)
        pieces.append(utt)
        truth.append({"text": text, "start_s": t / RATE, "end_s": (t + len(utt)) / RATE})
        t += len(utt)
    pieces.append(np.zeros(round(spec.tail_s * RATE)))
    speech = np.concatenate(pieces)
    active = np.zeros(len(speech), dtype=bool)
    for u in truth:
        active[round(float(u["start_s"]) * RATE) : round(float(u["end_s"]) * RATE)] = True  # type: ignore[arg-type]
    speech *= 10 ** (SPEECH_DBFS / 20) / math.sqrt(np.mean(speech[active] ** 2))
    wav = out_dir / f"{spec.name}.wav"
    if spec.noise is None:
        write_wav(wav, speech)
        noise_gain = 0.0
    else:
        assert spec.snr_db is not None
        speech_wav, noise_wav = tmp / "speech.wav", tmp / "noise.wav"
        write_wav(speech_wav, speech)
        duration = f"{len(speech) / RATE:.6f}"
        run(["sox", "-R", "-D", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(noise_wav),
             "synth", duration, spec.noise, "vol", "0.25"])  # fmt: skip
        noise = read_wav(noise_wav)
        speech_power = np.mean(read_wav(speech_wav)[active] ** 2)
        noise_gain = math.sqrt(speech_power / (np.mean(noise**2) * 10 ** (spec.snr_db / 10)))
        run(["sox", "-R", "-D", "-m", "-v", "1", str(speech_wav), "-v", f"{noise_gain:.6f}",
             str(noise_wav), "-b", "16", str(wav)])  # fmt: skip
    meta = {
        "file": wav.name,
        "sample_rate_hz": RATE,
        "duration_s": len(speech) / RATE,
        "utterances": truth,
        "noise": spec.noise,
        "snr_db": spec.snr_db,
        "noise_gain": round(noise_gain, 6),
        "speech_dbfs": SPEECH_DBFS,
        "voice": spec.voice,
        "truth_rule": f"10 ms frames within {ACTIVE_DB:g} dB of the utterance's loudest frame",
    }
    (out_dir / f"{spec.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--eval", type=Path, metavar="DIR", help="write the larger evaluation set here"
    )
    args = parser.parse_args(argv)
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"make_test_clips: {tool} not found (apt-get install {tool})", file=sys.stderr)
            return 1
    jobs = (
        [(spec, args.eval) for spec in eval_clips()]
        if args.eval
        else [*((spec, CLIP_DIR) for spec in SHORT_CLIPS), (DEMO_CLIP, DEMO_DIR)]
    )
    with tempfile.TemporaryDirectory() as tmp:
        for spec, out_dir in jobs:
            out_dir.mkdir(parents=True, exist_ok=True)
            meta = make_clip(spec, out_dir, Path(tmp))
            print(f"{out_dir / spec.name}.wav: {meta['duration_s']:.2f} s, "
                  f"{len(meta['utterances'])} utterance(s), noise {spec.noise} {spec.snr_db} dB")  # type: ignore[arg-type]  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
