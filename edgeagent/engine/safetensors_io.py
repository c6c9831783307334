"""A validating, memory-mapped safetensors reader (no copies) and a streaming writer.

Format: an 8-byte little-endian header length N, N bytes of JSON header
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``),
then the data section; offsets are in bytes, relative to the data section.

Reading validates the whole header at open (sizes, bounds, overlaps,
truncation) but never touches tensor data: the file is mmapped read-only and
:meth:`SafetensorsFile.get` returns a numpy view of the mapping. A view keeps
the mapping alive (numpy holds a reference to the mmap through ``.base``).
"""

from __future__ import annotations

import json
import logging
import math
import mmap
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from edgeagent.errors import CheckpointError

_LOGGER = logging.getLogger(__name__)

# Byte sizes of every dtype the safetensors spec names; only _NUMPY ones can be read.
_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_NUMPY: dict[str, np.dtype[Any]] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
SUPPORTED_DTYPES = tuple(_NUMPY)
# Quantized copies (edgeagent.engine.quantize) also store packed bytes; checkpoints may not.
_STORED: dict[str, np.dtype[Any]] = {**_NUMPY, "U8": np.dtype("u1")}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors spec's own limit


@dataclass(frozen=True)
class TensorInfo:
    """One header entry; ``begin``/``end`` are byte offsets into the data section."""

    name: str
    dtype: str  # safetensors dtype string, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the data in bytes."""
        return self.end - self.begin


def numpy_dtype(dtype: str, *, tensor: str = "?", path: str | Path = "?") -> np.dtype[Any]:
    """The numpy dtype of a safetensors dtype string, or CheckpointError if unsupported."""
    try:
        return _NUMPY[dtype]
    except KeyError:
        raise CheckpointError(
            f"unsupported dtype {dtype} for tensor {tensor} in {path} "
            f"(supported: {', '.join(SUPPORTED_DTYPES)})"
        ) from None


def safetensors_dtype(dtype: np.dtype[Any] | type | str) -> str:
    """The safetensors dtype string of a numpy dtype (float32, float16, bfloat16, uint8)."""
    dt = np.dtype(dtype)
    for name, np_dt in _STORED.items():
        if np_dt == dt:
            return name
    raise CheckpointError(
        f"cannot store dtype {dt} in safetensors (supported: {', '.join(SUPPORTED_DTYPES)})"
    )


class SafetensorsFile:
    """A validated, read-only, memory-mapped safetensors file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as fh:
                size = _file_size(fh)
                header_len, header = self._read_header(fh, size)
                self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot open safetensors file: {exc}") from exc
        self.data_start = 8 + header_len
        self.metadata, self.tensors = self._parse_header(header, size - self.data_start)

    def _fail(self, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {problem}")

    def _read_header(self, fh: BinaryIO, size: int) -> tuple[int, bytes]:
        if size < 8:
            raise self._fail(f"file is {size} bytes, too short for a safetensors header")
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len > size - 8:
            raise self._fail(
                f"header length {header_len} exceeds the file size ({size} bytes); "
                "truncated or not safetensors"
            )
        if header_len > _MAX_HEADER_BYTES:
            raise self._fail(
                f"header length {header_len} exceeds the {_MAX_HEADER_BYTES}-byte limit"
            )
        return header_len, fh.read(header_len)

    def _parse_header(
        self, raw: bytes, data_len: int
    ) -> tuple[dict[str, str], dict[str, TensorInfo]]:
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._fail(f"header is not valid JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise self._fail(f"header must be a JSON object, got {type(header).__name__}")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise self._fail("header __metadata__ must be an object")
        tensors = {name: self._parse_entry(name, entry) for name, entry in header.items()}
        self._check_layout(tensors.values(), data_len)
        return {str(k): str(v) for k, v in metadata.items()}, tensors

    def _parse_entry(self, name: str, entry: Any) -> TensorInfo:
        if not isinstance(entry, dict):
            raise self._fail(f"header entry for tensor {name} must be an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
            raise self._fail(
                f"unsupported dtype {dtype} for tensor {name} (unknown to safetensors)"
            )
        if not isinstance(shape, list) or not all(_is_uint(s) for s in shape):
            raise self._fail(f"tensor {name} has an invalid shape {shape!r}")
        if not (
            isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(o) for o in offsets)
        ):
            raise self._fail(f"tensor {name} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if end < begin:
            raise self._fail(f"tensor {name} has data_offsets {offsets} with end before begin")
        info = TensorInfo(name, dtype, tuple(shape), begin, end)
        expected = info.numel * _ITEMSIZE[dtype]
        if info.nbytes != expected:
            raise self._fail(
                f"tensor {name}: data_offsets span {info.nbytes} bytes "
                f"but {dtype}{list(shape)} needs {expected}"
            )
        return info

    def _check_layout(self, infos: Iterable[TensorInfo], data_len: int) -> None:
        previous: TensorInfo | None = None
        for info in sorted((i for i in infos if i.nbytes), key=lambda i: i.begin):
            if info.end > data_len:
                raise self._fail(
                    "file truncated or data_offsets out of bounds: "
                    f"tensor {info.name} ends at byte {info.end} "
                    f"of the data section, which has only {data_len} bytes"
                )
            if previous is not None and info.begin < previous.end:
                raise self._fail(
                    f"tensors {previous.name} and {info.name} overlap in the data section"
                )
            previous = info

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def keys(self) -> list[str]:
        """Tensor names in header order."""
        return list(self.tensors)

    def info(self, name: str) -> TensorInfo:
        """Header entry of ``name`` (CheckpointError if absent)."""
        try:
            return self.tensors[name]
        except KeyError:
            raise self._fail(f"no tensor {name}") from None

    def get(self, name: str, *, packed: bool = False) -> np.ndarray:
        """A read-only view of tensor ``name`` in its stored dtype; no data is read or copied.

        Checkpoint weights are float32, float16 or bfloat16; ``packed`` also
        admits the uint8 blobs of a quantized copy.
        """
        info = self.info(name)
        allowed = _STORED if packed else _NUMPY
        dtype = allowed.get(info.dtype) or numpy_dtype(info.dtype, tensor=name, path=self.path)
        if info.numel == 0 or self._mmap is None:
            return np.empty(info.shape, dtype=dtype)
        flat = np.frombuffer(
            self._mmap, dtype=dtype, count=info.numel, offset=self.data_start + info.begin
        )
        return flat.reshape(info.shape)

    @property
    def mapping(self) -> mmap.mmap | None:
        """The read-only mapping of the whole file (for madvise); None for an empty file."""
        return self._mmap

    def byte_range(self, name: str) -> tuple[int, int]:
        """Absolute ``(offset, length)`` of tensor ``name`` in the file (for pread / madvise)."""
        info = self.info(name)
        return self.data_start + info.begin, info.nbytes


def _file_size(fh: BinaryIO) -> int:
    fh.seek(0, 2)
    size = fh.tell()
    fh.seek(0)
    return size


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def open_safetensors(path: str | Path) -> SafetensorsFile:
    """Open and validate ``path`` (reads only the header)."""
    return SafetensorsFile(path)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: name, numpy dtype and shape (data comes later, streamed)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Size of the data in bytes."""
        return math.prod(self.shape) * self.dtype.itemsize


def build_header(specs: Iterable[TensorSpec], metadata: Mapping[str, str] | None = None) -> bytes:
    """The 8-byte length plus the JSON header for ``specs`` laid out in order, padded to 8 bytes."""
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for spec in specs:
        end = offset + spec.nbytes
        header[spec.name] = {
            "dtype": safetensors_dtype(spec.dtype),
            "shape": list(spec.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    body = json.dumps(header, separators=(",", ":")).encode("utf-8")
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


class SafetensorsWriter:
    """Streams tensors into a safetensors file: header first, then data in the declared order.

    Usage: ``with SafetensorsWriter(path, specs) as w: w.write(name, array_chunk)``;
    a tensor may be written in several chunks (row-major order).
    """

    def __init__(
        self, path: str | Path, specs: list[TensorSpec], metadata: Mapping[str, str] | None = None
    ):
        self.path = Path(path)
        self._specs = specs
        self._index = 0
        self._written = 0
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._fh.write(build_header(specs, metadata))

    def write(self, name: str, chunk: np.ndarray) -> None:
        """Append ``chunk`` (any shape, C order) to tensor ``name``, which must come next."""
        spec = self._current(name)
        data = np.ascontiguousarray(chunk, dtype=spec.dtype)
        if self._written + data.nbytes > spec.nbytes:
            raise CheckpointError(f"{self.path}: too much data written for tensor {name}")
        self._fh.write(data.tobytes())
        self._written += data.nbytes
        if self._written == spec.nbytes:
            self._index += 1
            self._written = 0

    def _current(self, name: str) -> TensorSpec:
        if self._index >= len(self._specs) or self._specs[self._index].name != name:
            expected = (
                self._specs[self._index].name if self._index < len(self._specs) else "nothing"
            )
            raise CheckpointError(f"{self.path}: writing {name} but {expected} comes next")
        return self._specs[self._index]

    def close(self) -> None:
        """Close the file; CheckpointError if a declared tensor was not fully written."""
        self._fh.close()
        if self._index != len(self._specs):
            raise CheckpointError(
                f"{self.path}: closed before tensor {self._specs[self._index].name} was written"
            )

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fh.close()
