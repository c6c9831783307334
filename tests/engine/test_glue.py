"""The compiled work between a decoded token's kernels (``_glue``) equals the numpy definition."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from edgeagent.engine import TextModel, _glue, load
from edgeagent.engine.config import TextConfig
from edgeagent.engine.decode import DecodeScratch, decode_layer
from edgeagent.engine.layers import Step, altup_correct, altup_predict
from edgeagent.engine.reference import (
    attention,
    rms_norm,
    rope_inv_freq,
    rope_tables,
    rotate,
    sparsity_cutoff,
)
from edgeagent.engine.weights import AltUpWeights

EPS = 1e-6
H = 2048
RNG = np.random.default_rng(7)


def randn(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def close(got: np.ndarray, want: np.ndarray, tol: float = 2e-5) -> None:
    """Within ``tol`` of the largest magnitude (float32 sums in a different order)."""
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= tol * max(1.0, float(np.max(np.abs(want))))


def altup_weights(n: int) -> AltUpWeights:
    router_norm = randn(H)
    modality_router = np.asfortranarray(randn(n, H))  # the layouts weights.py keeps
    return AltUpWeights(
        correct_output_scale=randn(H),
        correction_coefs=np.asfortranarray(randn(n, n, scale=0.3)),
        prediction_coefs=np.asfortranarray(randn(n * n, n, scale=0.3)),
        modality_router=modality_router,
        router_norm=router_norm,
        router=np.asfortranarray(modality_router * (router_norm / np.float32(H))),
    )


@pytest.fixture(params=[(4, 0), (2, 1), (3, 2)], ids=["n4", "n2-active1", "n3-active2"])
def altup(
    request: pytest.FixtureRequest, tiny_text: TextModel
) -> tuple[AltUpWeights, TextConfig, int]:
    n, active = request.param
    cfg = dataclasses.replace(
        tiny_text.config, altup_num_inputs=n, altup_active_idx=active, rms_norm_eps=EPS
    )
    return altup_weights(n), cfg, n


def test_predict_mixes_the_streams_and_norms_the_active_one(altup) -> None:  # type: ignore[no-untyped-def]
    w, cfg, n = altup
    streams = randn(n, 1, H, scale=3.0)
    norm = randn(H)
    want = altup_predict(w, streams.copy(), cfg)
    normed = np.zeros((1, H), np.float32)
    _glue.predict(streams, w.router, w.prediction_coefs, norm, normed, cfg.altup_active_idx, EPS)
    close(streams, want)
    close(normed, rms_norm(want[cfg.altup_active_idx], norm, EPS))


def test_correct_spreads_the_innovation_and_scales_the_gate_input(altup) -> None:  # type: ignore[no-untyped-def]
    w, cfg, n = altup
    a = cfg.altup_active_idx
    predictions = randn(n, 1, H, scale=2.0)
    parts = [randn(1, H), randn(1, H)]  # two FFN slabs
    x, ffn_norm = randn(1, H), randn(H)
    activated = rms_norm(parts[0] + parts[1], ffn_norm, EPS) + x
    want = altup_correct(w, predictions.copy(), activated, cfg)
    first = np.zeros((1, H), np.float32)
    args = (ffn_norm, x, predictions, w.router, w.correction_coefs)
    _glue.correct(parts, *args, w.correct_output_scale, first, a, EPS)
    close(predictions, want)
    close(first, want[a] * w.correct_output_scale)
    _glue.correct(parts[:1], *args, None, first, a, EPS)  # unscaled, one slab
    assert np.array_equal(first, predictions[a])


def test_norm_rope_norms_each_head_and_rotates_the_first() -> None:
    heads, hd, rotated = 6, 256, 4
    x, norm = randn(heads * hd, scale=4.0), randn(heads, hd)
    cos, sin = rope_tables(np.array([1234]), rope_inv_freq(hd, 10000.0))  # [1, 1, hd]
    out = np.zeros(heads * hd, np.float32)
    _glue.norm_rope(x, norm, cos, sin, out, rotated, EPS)
    normed = rms_norm(x.reshape(1, heads, hd), norm, EPS)
    want = np.concatenate([rotate(normed[:, :rotated], cos, sin), normed[:, rotated:]], axis=1)
    close(out.reshape(1, heads, hd), want)


@pytest.mark.parametrize("group", [1, 2, 4, 8])
@pytest.mark.parametrize("entries", [1, 7, 8, 143])
def test_attend_equals_reference_attention_over_cache_views(group: int, entries: int) -> None:
    n_kv, hd, capacity = 2, 256, 160
    q = randn(1, n_kv * group, hd, scale=3.0)  # normed queries and keys: wide score spreads
    keys = randn(n_kv, hd, capacity, scale=3.0)[:, :, :entries]  # views, as the cache returns
    values = randn(n_kv, capacity, hd)[:, :entries]
    out = np.zeros(n_kv * group * hd, np.float32)
    _glue.attend(q.reshape(-1), keys, values, out)
    close(out.reshape(q.shape), attention(q, keys, values, None))


def test_post_attention_residuals_and_the_ffn_norm() -> None:
    attn, active, low, normed = randn(1, H), randn(1, H), randn(1, H), randn(1, H)
    attn_norm, laurel_norm, ffn_norm = randn(H), randn(H), randn(H)
    x, ffn_in = np.zeros((1, H), np.float32), np.zeros((1, H), np.float32)
    _glue.post_attention(
        attn, attn_norm, active, low, laurel_norm, normed, ffn_norm, x, ffn_in, EPS
    )
    laurel = rms_norm(low, laurel_norm, EPS) + normed
    want = (rms_norm(attn, attn_norm, EPS) + active + laurel) / np.sqrt(2)
    close(x, want)
    close(ffn_in, rms_norm(want, ffn_norm, EPS))


def test_sparsity_cutoff_over_several_slabs() -> None:
    gates = [randn(1, 3000), randn(1, 5192, scale=2.0)]
    out = np.zeros((1, 1), np.float32)
    _glue.sparsity_cutoff(gates, -1.6448536, out)  # Φ⁻¹(0.05)
    want = sparsity_cutoff(np.concatenate(gates, axis=1), 0.05)
    close(out, want)


def test_add_update_reaches_every_stream_but_the_first() -> None:
    streams, projected, norm = randn(4, 1, H), randn(1, H), randn(H)
    want = streams.copy()
    want[1:] += rms_norm(projected, norm, EPS)
    _glue.add_update(projected, norm, streams, EPS)
    close(streams, want)


BAD_CALLS = {
    "float64": (lambda o: _glue.add_update(o["f64"], o["w"], o["streams"], EPS), "float32"),
    "short": (lambda o: _glue.add_update(o["short"], o["w"], o["streams"], EPS), "must hold"),
    "transposed": (lambda o: _glue.add_update(o["v"], o["w"], o["streams"].T, EPS), "streams"),
    "2-d keys": (lambda o: _glue.attend(o["v"], o["w"], o["w"], o["v"]), "keys must have 3"),
    "arity": (lambda o: _glue.post_attention(o["v"], o["v"]), "takes 10 arguments"),
    "no slabs": (lambda o: _glue.sparsity_cutoff([], 1.0, o["one"]), "1 to 15 gate slabs"),
    "strided": (
        lambda o: _glue.norm_rope(o["v"], o["w2"][:, ::2], o["v"], o["v"], o["v"], 0, EPS),
        "last axis",
    ),
}


@pytest.mark.parametrize(("call", "message"), BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_arrays_are_refused_by_name(call, message: str) -> None:  # type: ignore[no-untyped-def]
    arrays = {
        "f64": np.zeros((1, H)),
        "short": np.zeros((1, H - 1), np.float32),
        "v": np.zeros((1, H), np.float32),
        "w": np.ones(H, np.float32),
        "w2": np.ones((8, 512), np.float32),
        "streams": np.zeros((4, 1, H), np.float32),
        "one": np.zeros((1, 1), np.float32),
    }
    with pytest.raises((ValueError, TypeError), match=message):
        call(arrays)


def test_a_decoded_layer_equals_the_numpy_layer(heavy) -> None:  # type: ignore[no-untyped-def]
    """Every layer of the heavy-tailed fixture (sliding, global, KV-shared, sparse), one token
    after a prefill, through ``decode_layer`` and through ``TextModel.decoder_layer``."""
    model = load(heavy)
    ids = np.arange(3, 40)
    state = model.new_state(max_context=64)
    model.forward(state, ids)
    x0 = model.embed(np.array([41]))
    per_layer = model.per_layer_inputs(np.array([41]), x0)
    streams = model.altup_streams(x0)
    step = Step(positions=np.array([state.position]), inv_freq=model._inv_freq)
    states = [copy.deepcopy(state), copy.deepcopy(state)]
    shared: list[dict] = [{}, {}]
    compiled, numpy_ = streams.copy(), streams.copy()
    scratch = DecodeScratch.for_config(model.config)
    for i in state.tier.layers():
        decode_layer(model, i, compiled, per_layer[:, i], states[0], step, shared[0], scratch)
        numpy_ = model.decoder_layer(i, numpy_, per_layer[:, i], states[1], step, shared[1])
        close(compiled, numpy_, tol=1e-4)
