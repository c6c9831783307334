"""Types of the compiled module built from ``_glue.c`` (docstrings there)."""

from collections.abc import Sequence

import numpy as np

Array = np.ndarray

def predict(
    streams: Array,
    router: Array,
    prediction_coefs: Array,
    input_norm: Array,
    normed: Array,
    active: int,
    eps: float,
) -> None: ...
def norm_rope(
    x: Array, norm: Array, cos: Array, sin: Array, out: Array, rotate: int, eps: float
) -> None: ...
def attend(q: Array, keys: Array, values: Array, out: Array) -> None: ...
def post_attention(
    attn: Array,
    attn_norm: Array,
    active: Array,
    low_rank: Array,
    laurel_norm: Array,
    normed: Array,
    ffn_norm: Array,
    x: Array,
    ffn_in: Array,
    eps: float,
) -> None: ...
def sparsity_cutoff(gates: Sequence[Array], quantile: float, out: Array) -> None: ...
def correct(
    ffn_parts: Sequence[Array],
    ffn_norm: Array,
    x: Array,
    streams: Array,
    router: Array,
    correction_coefs: Array,
    output_scale: Array | None,
    first: Array,
    active: int,
    eps: float,
) -> None: ...
def add_update(projected: Array, norm: Array, streams: Array, eps: float) -> None: ...
