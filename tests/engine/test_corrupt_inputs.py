"""Every corrupt input becomes a CheckpointError / TokenizerError naming the file (and tensor)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeagent.engine.checkpoint import open_checkpoint
from edgeagent.engine.presets import get_preset, write_checkpoint
from edgeagent.engine.safetensors_io import SafetensorsFile
from edgeagent.engine.tokenizer import load_tokenizer
from edgeagent.errors import CheckpointError, TokenizerError


def raw_safetensors(
    path: Path, header: dict[str, Any], data: bytes = b"", header_len: int | None = None
) -> Path:
    """Write a safetensors file byte by byte (so it can be wrong in any way)."""
    body = json.dumps(header).encode()
    n = len(body) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + body + data)
    return path


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(
        get_preset("tiny"), tmp_path_factory.mktemp("tiny") / "ckpt", dtype="float32"
    )


@pytest.fixture
def tiny_copy(tiny_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_dir, tmp_path / "ckpt"))


# -- safetensors files ------------------------------------------------------------------------
def test_file_shorter_than_header_length_field(tmp_path: Path) -> None:
    p = tmp_path / "a.safetensors"
    p.write_bytes(b"\x01\x02\x03")
    with pytest.raises(CheckpointError, match=r"a\.safetensors: file is 3 bytes, too short"):
        SafetensorsFile(p)


def test_header_length_beyond_file(tmp_path: Path) -> None:
    p = raw_safetensors(tmp_path / "a.safetensors", {}, header_len=10**6)
    with pytest.raises(
        CheckpointError, match=r"a\.safetensors: header length 1000000 exceeds the file size"
    ):
        SafetensorsFile(p)


def test_garbage_header(tmp_path: Path) -> None:
    p = tmp_path / "a.safetensors"
    p.write_bytes(struct.pack("<Q", 8) + b"\x00garbage" + b"\x00" * 16)
    with pytest.raises(CheckpointError, match=r"a\.safetensors: header is not valid JSON"):
        SafetensorsFile(p)


def test_header_not_an_object(tmp_path: Path) -> None:
    p = raw_safetensors(tmp_path / "a.safetensors", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="header must be a JSON object"):
        SafetensorsFile(p)


@pytest.mark.parametrize(
    ("header", "data_len", "words"),
    [
        (
            {"w": entry("F32", [2, 2], 0, 16)},
            8,
            "file truncated or data_offsets out of bounds: tensor w ends at byte 16",
        ),
        (
            {"w": entry("F32", [2, 2], 0, 12)},
            16,
            "tensor w: data_offsets span 12 bytes but F32[2, 2] needs 16",
        ),
        (
            {"w": entry("F32", [2], 4, 0)},
            16,
            "tensor w has data_offsets [4, 0] with end before begin",
        ),
        (
            {"w": entry("F32", [2], 0, 8), "v": entry("F32", [2], 4, 12)},
            16,
            "tensors w and v overlap",
        ),
        ({"w": entry("F32", [-2], 0, 8)}, 16, "tensor w has an invalid shape"),
        ({"w": entry("F32", [2], 0, "8")}, 16, "tensor w has invalid data_offsets"),  # type: ignore[arg-type]
        ({"w": entry("Q4", [2], 0, 8)}, 16, "unsupported dtype Q4 for tensor w"),
        ({"w": [1]}, 16, "header entry for tensor w must be an object"),
        ({"__metadata__": [1]}, 0, "__metadata__ must be an object"),
    ],
)
def test_bad_header_entries(
    tmp_path: Path, header: dict[str, Any], data_len: int, words: str
) -> None:
    p = raw_safetensors(tmp_path / "a.safetensors", header, b"\x00" * data_len)
    with pytest.raises(CheckpointError) as err:
        SafetensorsFile(p)
    assert str(p) in str(err.value) and words in str(err.value)


@pytest.mark.parametrize(("dtype", "itemsize"), [("I32", 4), ("F64", 8), ("I64", 8), ("U8", 1)])
def test_unsupported_dtype_is_refused_when_read(tmp_path: Path, dtype: str, itemsize: int) -> None:
    p = raw_safetensors(
        tmp_path / "a.safetensors", {"w": entry(dtype, [3], 0, 3 * itemsize)}, b"\x00" * 24
    )
    f = SafetensorsFile(p)  # structurally valid: other tensors of the file stay readable
    with pytest.raises(
        CheckpointError, match=rf"unsupported dtype {dtype} for tensor w in .*a\.safetensors"
    ):
        f.get("w")


def test_truncated_real_file(tiny_copy: Path) -> None:
    weights = tiny_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: file truncated"):
        open_checkpoint(tiny_copy)


# -- checkpoint directories -------------------------------------------------------------------
def _rewrite_without(
    weights: Path, drop: str, replace: dict[str, np.ndarray] | None = None
) -> None:
    """Rewrite ``weights`` (float32) without tensor ``drop`` and with ``replace`` overrides."""
    f = SafetensorsFile(weights)
    tensors = {k: np.array(f.get(k)) for k in f if k != drop}
    tensors.update(replace or {})
    del f
    header: dict[str, Any] = {}
    offset, chunks = 0, []
    for name, arr in tensors.items():
        code = {"float32": "F32", "int32": "I32", "float64": "F64"}[arr.dtype.name]
        header[name] = entry(code, list(arr.shape), offset, offset + arr.nbytes)
        offset += arr.nbytes
        chunks.append(arr.tobytes())
    raw_safetensors(weights, header, b"".join(chunks))


def test_missing_tensor(tiny_copy: Path) -> None:
    _rewrite_without(tiny_copy / "model.safetensors", "model.layers.3.mlp.up_proj.weight")
    with pytest.raises(
        CheckpointError,
        match=r"missing tensor model\.layers\.3\.mlp\.up_proj\.weight "
        r"\(expected shape \[128, 32\]\)",
    ):
        open_checkpoint(tiny_copy)


def test_missing_kv_on_owning_layer(tiny_copy: Path) -> None:
    _rewrite_without(tiny_copy / "model.safetensors", "model.layers.9.self_attn.k_proj.weight")
    with pytest.raises(
        CheckpointError, match=r"missing tensor model\.layers\.9\.self_attn\.k_proj\.weight"
    ):
        open_checkpoint(tiny_copy)


def test_wrong_shape(tiny_copy: Path) -> None:
    name = "model.layers.2.self_attn.q_proj.weight"
    _rewrite_without(tiny_copy / "model.safetensors", name, {name: np.zeros((32, 31), np.float32)})
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tiny_copy)
    assert f"tensor {name} has shape [32, 31], expected [32, 32]" in str(err.value)
    assert "model.safetensors" in str(err.value)


@pytest.mark.parametrize(("dtype", "code"), [(np.int32, "I32"), (np.float64, "F64")])
def test_unsupported_dtype_of_needed_tensor(tiny_copy: Path, dtype: type, code: str) -> None:
    name = "model.norm.weight"
    _rewrite_without(tiny_copy / "model.safetensors", name, {name: np.ones(32, dtype)})
    with pytest.raises(
        CheckpointError,
        match=rf"unsupported dtype {code} for tensor model\.norm\.weight in .*model\.safetensors",
    ):
        open_checkpoint(tiny_copy)


def test_no_weights(tiny_copy: Path) -> None:
    (tiny_copy / "model.safetensors").unlink()
    with pytest.raises(
        CheckpointError, match=r"neither model\.safetensors nor model\.safetensors\.index\.json"
    ):
        open_checkpoint(tiny_copy)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        open_checkpoint(tmp_path / "nope")


def test_missing_config_in_checkpoint(tiny_copy: Path) -> None:
    (tiny_copy / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json not found"):
        open_checkpoint(tiny_copy)


def test_bad_json_config_in_checkpoint(tiny_copy: Path) -> None:
    (tiny_copy / "config.json").write_text('{"model_type": ', encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"config\.json: cannot read config"):
        open_checkpoint(tiny_copy)


def test_unknown_model_type_in_checkpoint(tiny_copy: Path) -> None:
    cfg = json.loads((tiny_copy / "config.json").read_text())
    cfg["model_type"] = "gemma3"
    (tiny_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="field 'model_type' is 'gemma3'"):
        open_checkpoint(tiny_copy)


def test_config_field_out_of_range_in_checkpoint(tiny_copy: Path) -> None:
    cfg = json.loads((tiny_copy / "config.json").read_text())
    cfg["num_kv_shared_layers"] = 25
    (tiny_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError,
        match=r"config\.json: field 'num_kv_shared_layers' must be < num_hidden_layers",
    ):
        open_checkpoint(tiny_copy)


def test_config_disagreeing_with_weights(tiny_copy: Path) -> None:
    cfg = json.loads((tiny_copy / "config.json").read_text())
    cfg["intermediate_size"] = 256
    (tiny_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"mlp\.gate_proj\.weight has shape \[128, 32\], expected \[256, 32\]"
    ):
        open_checkpoint(tiny_copy)


# -- shards -------------------------------------------------------------------------------------
@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    out = tmp_path / "sharded"
    write_checkpoint(get_preset("tiny"), out, dtype="float32", max_shard_bytes=400_000)
    assert (out / "model.safetensors.index.json").is_file()
    return out


def test_missing_shard(sharded: Path) -> None:
    (sharded / "model-00002-of-00005.safetensors").unlink()
    with pytest.raises(
        CheckpointError,
        match=r"index\.json: shard model-00002-of-00005\.safetensors is listed but .* is missing",
    ):
        open_checkpoint(sharded)


def test_weight_map_names_wrong_shard(sharded: Path) -> None:
    index_path = sharded / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00005.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(
        CheckpointError,
        match=r"weight_map puts tensor model\.norm\.weight in "
        r"model-00001-of-00005\.safetensors, which does not hold it",
    ):
        open_checkpoint(sharded)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{", "cannot read shard index"),
        ('{"weight_map": [1]}', "field 'weight_map' must be an object"),
        ('{"weight_map": {"a": "../x.safetensors"}}', "must be a plain file name"),
    ],
)
def test_bad_index(sharded: Path, content: str, words: str) -> None:
    (sharded / "model.safetensors.index.json").write_text(content)
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json") as err:
        open_checkpoint(sharded)
    assert words in str(err.value)


def test_tensor_listed_in_index_but_absent_everywhere(sharded: Path) -> None:
    index_path = sharded / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.extra.weight"] = "model-00001-of-00005.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model\.extra\.weight"):
        open_checkpoint(sharded)


# -- tokenizer ----------------------------------------------------------------------------------
def test_corrupt_tokenizer_json(tiny_copy: Path) -> None:
    (tiny_copy / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 5}}')
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: cannot load tokenizer"):
        load_tokenizer(tiny_copy)
    ckpt = open_checkpoint(tiny_copy)  # the weights are fine; the tokenizer fails when asked for
    with pytest.raises(TokenizerError, match=r"tokenizer\.json"):
        _ = ckpt.tokenizer


def test_truncated_tokenizer_json(tiny_copy: Path) -> None:
    p = tiny_copy / "tokenizer.json"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(TokenizerError, match=str(p)):
        load_tokenizer(tiny_copy)
