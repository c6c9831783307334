"""``edgeagent bench``: one configuration per process, results on stdout, progress on stderr."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import TINY


def test_bench_reference_json(run_cli) -> None:  # type: ignore[no-untyped-def]
    args = ["bench", "--model", str(TINY / "text"), "--kernels", "reference"]
    done = run_cli([*args, "--prompt-tokens", "12", "--decode-tokens", "3", "--json"])
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["kernels"] == "reference" and out["prompt_tokens"] == 12
    assert out["decode_tok_s"] > 0 and out["prefill_tok_s"] > 0
    assert out["peak_rss"] >= out["rss_anon"] > 0
    assert "bench: decode" in done.stderr  # progress goes to stderr


def test_bench_quantized_with_ceilings(heavy: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    args = ["bench", "--model", str(heavy), "--kernels", "quantized", "--bits", "8"]
    args += ["--prompt-tokens", "16", "--decode-tokens", "4", "--kv", "int8", "--ceilings"]
    args += ["--bandwidth", "10"]  # skip the 1 GB streaming probe
    done = run_cli(args, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert lines["kernels"].strip() == "quantized" and lines["kv"].strip() == "int8"
    for key in ("decode_overhead", "roofline_fraction", "prefill_fraction_of_gemm"):
        assert float(lines[key]) > 0
