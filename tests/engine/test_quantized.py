"""Quantized kernels: MatMulNBits numerics, accuracy against the reference, shared tier slabs.

Accuracy is measured on the heavy-tailed fixture (see ``heavy_tailed.py``)
over 320 positions: cosine of each position's logits with the reference's,
and the KL divergence of the quantized next-token distribution from the
reference one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edgeagent.engine import TextModel, TierPlan, load
from edgeagent.engine.checkpoint import open_checkpoint
from edgeagent.engine.ort_kernels import OrtGatedDown, OrtProjection, OrtProjections, SlabFFN
from edgeagent.engine.quantize import (
    dequantize_blockwise,
    open_store,
    quantize_blockwise,
    quantize_checkpoint,
    store_dir,
)
from edgeagent.errors import TierError

from .heavy_tailed import write_heavy_tailed

POSITIONS = 320


@pytest.fixture(scope="module")
def prompt() -> np.ndarray:
    return np.random.default_rng(1).integers(3, 1920, POSITIONS)


@pytest.fixture(scope="module")
def reference_logits(heavy: Path, prompt: np.ndarray) -> np.ndarray:
    return load(heavy, max_context=512).logits(prompt)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b``."""
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def agreement(logits: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(mean cosine over positions, mean KL(reference ‖ quantized) in nats)."""
    cos = cosine(logits, reference)
    lp, lq = log_softmax(reference), log_softmax(logits)
    kl = np.sum(np.exp(lp) * (lp - lq), axis=-1)
    return float(cos.mean()), float(kl.mean())


def test_fixture_is_confident(reference_logits: np.ndarray) -> None:
    top = np.exp(log_softmax(reference_logits)).max(axis=-1)
    assert len(top) >= 300
    assert np.mean(top >= 0.5) >= 0.6  # the top token usually has probability ≥ 0.5


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("block_size", [32, 64])
def test_matmulnbits_layout_round_trips(bits: int, block_size: int) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_t(5, (48, 200)).astype(np.float32)  # K not a multiple of the block
    packed, scales = quantize_blockwise(w, bits, block_size)
    assert packed.shape == (48, -(-200 // block_size), block_size * bits // 8)
    back = dequantize_blockwise(packed, scales, bits, block_size, 200)
    step = np.repeat(scales, block_size, axis=1)[:, :200]
    assert np.all(np.abs(back - w) <= step * 0.5 + 1e-6) or bits == 4  # 4-bit clips extremes
    rel = np.linalg.norm(back - w) / np.linalg.norm(w)
    assert rel < (0.15 if bits == 4 else 0.01)


@pytest.mark.parametrize("bits", [4, 8])
def test_kernels_compute_the_stored_weights(heavy: Path, bits: int) -> None:
    """Each MatMulNBits session equals ``x @ dequantized(W).T`` up to int8 activations."""
    model = load(heavy, max_context=64, kernels="quantized", bits=bits, block_size=32)
    store = open_store(model.checkpoint, bits, 32)
    assert store is not None
    x = np.random.default_rng(2).standard_normal((3, 256)).astype(np.float32)
    layer = model.kernels.layers[2]
    for key, projection in [
        ("layers.2.self_attn.o_proj", layer.o_proj),
        ("layers.2.self_attn.q_proj", lambda rows: layer.attn_in(rows)[0]),
        ("altup_projections.0", model.kernels.altup_projections[0]),
        ("lm_head", model.kernels.lm_head),
    ]:
        expected = x @ store.dequantize(key).T
        for rows in (x[:1], x):  # decode (bound buffers) and prefill shapes
            got = projection(rows)
            rel = np.linalg.norm(got - expected[: len(rows)]) / np.linalg.norm(
                expected[: len(rows)]
            )
            assert rel < 0.02, (key, rel)


@pytest.mark.parametrize(("bits", "block_size"), [(8, 32), (8, 64), (4, 32)])
def test_accuracy_against_the_reference(
    heavy: Path, prompt: np.ndarray, reference_logits: np.ndarray, bits: int, block_size: int
) -> None:
    model = load(heavy, max_context=512, kernels="quantized", bits=bits, block_size=block_size)
    cos, kl = agreement(model.logits(prompt), reference_logits)
    if bits == 8:
        assert cos >= 0.999, cos
    else:
        assert cos >= 0.99, cos
        assert kl <= 0.05, kl


def test_tier_accuracy_and_shared_slabs(heavy: Path, prompt: np.ndarray) -> None:
    reference = load(heavy, max_context=512)
    model = load(heavy, max_context=512, kernels="quantized", bits=8, block_size=32)
    cos, _ = agreement(model.logits(prompt, tier="half"), reference.logits(prompt, tier="half"))
    assert cos >= 0.999
    full, half = model.tier("full"), model.tier("half")
    for i in half.layers():
        ffn = model.kernels.layers[i].ffn
        assert isinstance(ffn, SlabFFN)
        small, large = ffn.slabs(half.ffn_dims[i]), ffn.slabs(full.ffn_dims[i])
        assert len(small) == 1 and len(large) == 2
        assert small[0] is large[0]  # one kernel per slab, shared by both tiers
        if model.config.activation_sparsity[i] > 0:  # two steps: the cutoff needs every gate
            assert isinstance(small[0].gate_up, OrtProjections)
            assert isinstance(small[0].down, OrtGatedDown)
        else:
            assert isinstance(small[0].fused, OrtProjection) and small[0].gate_up is None


def test_a_width_between_slabs_is_refused(heavy: Path) -> None:
    model = load(heavy, max_context=64, kernels="quantized", bits=8, block_size=32)
    with pytest.raises(TierError, match="cut at widths 512, 1024"):
        model.new_state(TierPlan([768] * 10))


def test_quantized_copy_is_reused_and_refreshed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt_dir = write_heavy_tailed(tmp_path / "ckpt", seed=3)
    with caplog.at_level(logging.WARNING):
        first = load(ckpt_dir, max_context=32, kernels="quantized", bits=8, block_size=64)
    assert "quantizing once" in caplog.text
    target = store_dir(ckpt_dir, 8, 64)
    assert (target / "weights.safetensors").is_file()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        second = load(ckpt_dir, max_context=32, kernels="quantized", bits=8, block_size=64)
    assert "quantizing" not in caplog.text  # reused
    ids = [5, 6, 7]
    assert np.array_equal(first.logits(ids), second.logits(ids))
    weights = ckpt_dir / "model.safetensors"
    weights.touch()  # the checkpoint changed: the copy is stale
    ckpt = open_checkpoint(ckpt_dir)
    assert open_store(ckpt, 8, 64) is None
    quantize_checkpoint(ckpt, 8, 64)
    assert open_store(ckpt, 8, 64) is not None


def test_reference_model_is_unchanged_by_the_seam(tiny_text: TextModel) -> None:
    assert tiny_text.kernels.name == "reference"


def test_quantize_command(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    ckpt_dir = write_heavy_tailed(tmp_path / "ckpt")
    result = run_cli(["model", "quantize", str(ckpt_dir), "--bits", "8", "--block-size", "32"])
    assert result.returncode == 0, result.stderr
    assert "wrote 8-bit copy (block 32" in result.stdout
    assert "100%" in result.stderr  # the progress bar
    assert open_store(open_checkpoint(ckpt_dir), 8, 32) is not None
