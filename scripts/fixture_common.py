"""What the fixture scripts for the audio and vision towers share (no torch here).

``make_audio_fixtures.py`` and ``make_vision_fixtures.py`` import it from their
own folder: the tiny text decoder their multimodal checkpoints carry so that
they load, a reproducible ``.npz`` writer, and progress output.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

TEXT = dict(
    vocab_size=160,  # 128 text + 16 vision + 16 audio ids
    vocab_size_per_layer_input=128,
    hidden_size=16,
    hidden_size_per_layer_input=4,
    num_hidden_layers=2,
    intermediate_size=[16, 16],
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=8,
    sliding_window=8,
    num_kv_shared_layers=0,
    laurel_rank=2,
    altup_num_inputs=4,
    activation_sparsity_pattern=[0.0, 0.0],
    max_position_embeddings=256,
    pad_token_id=0,
    eos_token_id=[1, 106 % 128],
    bos_token_id=2,
)
"""The 2-layer random text decoder of the tower fixtures' checkpoints (Gemma3nTextConfig)."""


def log(*a: object) -> None:
    print(*a, flush=True)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez with fixed timestamps and compression (reproducible bytes)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
