"""A Gemma 3n checkpoint directory: config, memory-mapped weights, tokenizer.

:func:`open_checkpoint` validates everything the text decoder needs from the
safetensors headers alone (names, shapes, dtypes) and never reads tensor data,
so opening E4B (~15 GB) costs a few header reads. :meth:`Checkpoint.tensor`
returns a zero-copy, read-only view in the stored dtype; converting is the
caller's business.

Tensor names given to :meth:`Checkpoint.tensor` are relative to the text
model's root (``"layers.0.mlp.gate_proj.weight"``); the root prefix is
``model.`` in the text layout and ``model.language_model.`` in the multimodal
one. Towers (``model.audio_tower.`` …) stay reachable by their full names
through :meth:`Checkpoint.tensors_under` and :meth:`Checkpoint.raw_tensor`.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.engine.config import (
    CheckpointConfig,
    MultimodalTokens,
    TextConfig,
    load_checkpoint_config,
)
from edgeagent.engine.safetensors_io import SafetensorsFile, TensorInfo, numpy_dtype
from edgeagent.engine.tokenizer import Tokenizer, load_tokenizer
from edgeagent.errors import CheckpointError
from edgeagent.jsonfile import read_json_object

_LOGGER = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Candidate text-root prefixes per layout, most common first.
_PREFIXES = {
    "text": ("model.", ""),
    "multimodal": ("model.language_model.", "language_model.model."),
}
_SHARED_KV_SUFFIXES = (
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.k_norm.weight",
)


def expected_tensors(
    cfg: TextConfig, *, include_shared_kv: bool = False
) -> dict[str, tuple[int, ...]]:
    """Every tensor the text decoder reads, relative to the text root, with its shape.

    Order is transformers' state-dict order. KV-shared layers have no
    k_proj/v_proj/k_norm unless ``include_shared_kv`` (released checkpoints
    carry them, unused).
    """
    h, hp, n = cfg.hidden_size, cfg.hidden_size_per_layer_input, cfg.altup_num_inputs
    q_dim = cfg.num_attention_heads * cfg.head_dim
    kv_dim = cfg.num_key_value_heads * cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens.weight": (cfg.vocab_size, h)}
    for i, inter in enumerate(cfg.intermediate_sizes):
        p = f"layers.{i}."
        shapes[p + "self_attn.q_proj.weight"] = (q_dim, h)
        shapes[p + "self_attn.q_norm.weight"] = (cfg.head_dim,)
        if include_shared_kv or not cfg.is_kv_shared(i):
            shapes[p + "self_attn.k_proj.weight"] = (kv_dim, h)
            shapes[p + "self_attn.v_proj.weight"] = (kv_dim, h)
            shapes[p + "self_attn.k_norm.weight"] = (cfg.head_dim,)
        shapes[p + "self_attn.o_proj.weight"] = (h, q_dim)
        shapes[p + "mlp.gate_proj.weight"] = (inter, h)
        shapes[p + "mlp.up_proj.weight"] = (inter, h)
        shapes[p + "mlp.down_proj.weight"] = (h, inter)
        for norm in (
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ):
            shapes[p + norm + ".weight"] = (h,)
        shapes[p + "altup.correct_output_scale"] = (h,)
        shapes[p + "altup.correction_coefs.weight"] = (n, n)
        shapes[p + "altup.prediction_coefs.weight"] = (n * n, n)
        shapes[p + "altup.modality_router.weight"] = (n, h)
        shapes[p + "altup.router_norm.weight"] = (h,)
        shapes[p + "laurel.linear_left.weight"] = (cfg.laurel_rank, h)
        shapes[p + "laurel.linear_right.weight"] = (h, cfg.laurel_rank)
        shapes[p + "laurel.post_laurel_norm.weight"] = (h,)
        shapes[p + "per_layer_input_gate.weight"] = (hp, h)
        shapes[p + "per_layer_projection.weight"] = (h, hp)
        shapes[p + "post_per_layer_input_norm.weight"] = (h,)
    shapes["norm.weight"] = (h,)
    shapes["embed_tokens_per_layer.weight"] = (cfg.vocab_size_per_layer_input, cfg.per_layer_width)
    shapes["per_layer_model_projection.weight"] = (cfg.per_layer_width, h)
    shapes["per_layer_projection_norm.weight"] = (hp,)
    for k in range(n - 1):
        shapes[f"altup_projections.{k}.weight"] = (h, h)
    for k in range(n - 1):
        shapes[f"altup_unembed_projections.{k}.weight"] = (h, h)
    return shapes


def _is_unused_shared_kv(cfg: TextConfig, name: str) -> bool:
    """True for the k_proj/v_proj/k_norm of a KV-shared layer (never read)."""
    if not name.startswith("layers."):
        return False
    layer, _, rest = name[len("layers.") :].partition(".")
    return layer.isdigit() and rest in _SHARED_KV_SUFFIXES and cfg.is_kv_shared(int(layer))


class Checkpoint:
    """A validated checkpoint: ``.config``, ``.layout`` and zero-copy ``.tensor(name)`` views."""

    def __init__(
        self,
        path: Path,
        cfg: CheckpointConfig,
        files: dict[str, SafetensorsFile],
        location: dict[str, str],
    ) -> None:
        self.path = path
        self.config: TextConfig = cfg.text
        self.layout: str = cfg.layout
        self.multimodal_tokens: MultimodalTokens = cfg.multimodal_tokens
        self.declared_tiers = cfg.declared_tiers
        self.files = files  # shard file name -> open file
        self._location = location  # full tensor name -> shard file name
        self.prefix = self._find_prefix()

    def _find_prefix(self) -> str:
        for prefix in _PREFIXES[self.layout]:
            if prefix + "embed_tokens.weight" in self._location:
                return prefix
        expected = _PREFIXES[self.layout][0] + "embed_tokens.weight"
        raise CheckpointError(
            f"{self.path}: missing tensor {expected} (expected for the {self.layout} layout)"
        )

    # -- lookup ---------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """True when tensor ``name`` (relative to the text root) exists."""
        return self.prefix + name in self._location

    def info(self, name: str) -> TensorInfo:
        """Header entry (dtype, shape) of text tensor ``name``."""
        return self.raw_info(self.prefix + name)

    def tensor(self, name: str) -> np.ndarray:
        """Read-only, zero-copy view of text tensor ``name`` in its stored dtype."""
        return self.raw_tensor(self.prefix + name)

    def raw_info(self, full_name: str) -> TensorInfo:
        """Header entry of a tensor by its full stored name."""
        return self._file_of(full_name).info(full_name)

    def location(self, name: str) -> tuple[Path, int, TensorInfo]:
        """``(file, absolute byte offset, header entry)`` of text tensor ``name`` (for pread)."""
        full = self.prefix + name
        f = self._file_of(full)
        return f.path, f.byte_range(full)[0], f.info(full)

    def raw_tensor(self, full_name: str) -> np.ndarray:
        """Zero-copy view of a tensor by its full stored name (e.g. ``model.audio_tower.…``)."""
        return self._file_of(full_name).get(full_name)

    def _file_of(self, full_name: str) -> SafetensorsFile:
        try:
            return self.files[self._location[full_name]]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor {full_name} in the checkpoint") from None

    def names(self) -> list[str]:
        """Text-model tensor names (relative to the text root), sorted."""
        n = len(self.prefix)
        return sorted(
            k[n:] for k in self._location if k.startswith(self.prefix) and not self._outside_text(k)
        )

    def _outside_text(self, full_name: str) -> bool:
        # With an empty/“model.” prefix, tower tensors also start with the prefix.
        return self.prefix in ("", "model.") and full_name.startswith(
            (
                "model.audio_tower.",
                "model.vision_tower.",
                "model.embed_audio.",
                "model.embed_vision.",
                "model.language_model.",
            )
        )

    def tensors_under(self, prefix: str) -> list[str]:
        """Sorted full names of stored tensors under ``prefix`` (e.g. ``"model.audio_tower."``)."""
        return sorted(k for k in self._location if k.startswith(prefix))

    def all_tensor_names(self) -> list[str]:
        """Full names of every stored tensor, sorted."""
        return sorted(self._location)

    @cached_property
    def tokenizer(self) -> Tokenizer | None:
        """The checkpoint's tokenizer (loaded on first use), or None without ``tokenizer.json``."""
        return load_tokenizer(self.path)

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        """Check every tensor the text decoder needs: present, expected shape, supported dtype."""
        for name, shape in expected_tensors(self.config).items():
            full = self.prefix + name
            if full not in self._location:
                raise CheckpointError(
                    f"{self.path}: missing tensor {full} (expected shape {list(shape)})"
                )
            info = self.raw_info(full)
            where = self.path / self._location[full]
            if info.shape != shape:
                raise CheckpointError(
                    f"{where}: tensor {full} has shape {list(info.shape)}, expected {list(shape)}"
                )
            numpy_dtype(info.dtype, tensor=full, path=where)

    def describe(self) -> dict[str, Any]:
        """Summary numbers for ``edgeagent model info``."""
        infos = [self.raw_info(k) for k in self._location]
        text_infos = [self.info(n) for n in self.names()]
        dtypes = sorted({i.dtype for i in text_infos})
        return {
            "path": str(self.path),
            "layout": self.layout,
            "files": sorted(self.files),
            "tensors": len(infos),
            "parameters": sum(i.numel for i in infos),
            "text_parameters": sum(i.numel for i in text_infos),
            "per_layer_embedding_parameters": self.info("embed_tokens_per_layer.weight").numel,
            "bytes": sum(i.nbytes for i in infos),
            "dtypes": dtypes,
            "random_weights": self.config.random_weights,
        }


def _read_index(path: Path) -> dict[str, str]:
    """weight_map of a shard index: full tensor name -> shard file name."""
    weight_map = read_json_object(path, CheckpointError, "shard index").get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(
            f"{path}: field 'weight_map' must be an object of tensor name -> file name"
        )
    for shard in set(weight_map.values()):
        if Path(shard).name != shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{path}: shard name {shard!r} must be a plain file name")
    return weight_map


def _open_weights(directory: Path) -> tuple[dict[str, SafetensorsFile], dict[str, str]]:
    single = directory / SINGLE_FILE
    if single.is_file():
        f = SafetensorsFile(single)
        return {SINGLE_FILE: f}, {name: SINGLE_FILE for name in f.tensors}
    index_path = directory / INDEX_FILE
    if not index_path.is_file():
        raise CheckpointError(f"{directory}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
    weight_map = _read_index(index_path)
    files: dict[str, SafetensorsFile] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = directory / shard
        if not shard_path.is_file():
            raise CheckpointError(
                f"{index_path}: shard {shard} is listed but {shard_path} is missing"
            )
        files[shard] = SafetensorsFile(shard_path)
    for name, shard in weight_map.items():
        if name not in files[shard]:
            raise CheckpointError(
                f"{index_path}: weight_map puts tensor {name} in {shard}, which does not hold it"
            )
    return files, dict(weight_map)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open and validate the checkpoint directory ``path`` (reads headers only, no tensor data)."""
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    cfg = load_checkpoint_config(directory)
    files, location = _open_weights(directory)
    ckpt = Checkpoint(directory, cfg, files, location)
    ckpt.validate()
    _LOGGER.info(
        "opened %s: %s layout, %d tensors in %d file(s)",
        directory,
        ckpt.layout,
        len(location),
        len(files),
    )
    return ckpt
