"""Gemma 3n's vision path: RGB image → pixels → MobileNetV5 → MSFA → soft tokens.

As transformers' ``Gemma3nModel.get_image_features``: the tower's
``[hidden, 16, 16]`` output is read as 256 tokens in row-major order, scaled
by ``√hidden`` (the vision hidden size, 2048 released) and projected by
``embed_vision`` (soft-embedding RMSNorm, linear into the text width, RMSNorm
without a weight).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeagent.engine.reference import as_f32, rms_norm
from edgeagent.engine.vision.blocks import block, msfa, stem
from edgeagent.engine.vision.config import VisionConfig, load_vision_config
from edgeagent.engine.vision.preprocess import ImageConfig, load_image_config, preprocess
from edgeagent.engine.vision.weights import VisionWeights
from edgeagent.errors import CheckpointError, VisionError

if TYPE_CHECKING:
    from edgeagent.engine.checkpoint import Checkpoint

_LOGGER = logging.getLogger(__name__)
F32 = np.float32


class VisionEncoder:
    """The vision tower and its projection into the text model's embedding space."""

    def __init__(self, cfg: VisionConfig, weights: VisionWeights, image: ImageConfig) -> None:
        try:
            cfg.check_resolution(image.size)
        except CheckpointError as exc:
            raise CheckpointError(f"preprocessor size: {exc}") from None
        self.config = cfg
        self.weights = weights
        self.image_config = image
        self.kernels = "reference (numpy float32, stored weights widened at use)"

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> VisionEncoder:
        """The vision path of a multimodal checkpoint (reference kernels)."""
        path = Path(ckpt.path)
        cfg = load_vision_config(path, ckpt.config.hidden_size)
        encoder = cls(cfg, VisionWeights.from_checkpoint(ckpt, cfg), load_image_config(path))
        _LOGGER.info(
            "vision encoder: %d blocks, hidden %d, %d px",
            len(cfg.blocks), cfg.hidden_size, encoder.image_config.size,
        )  # fmt: skip
        return encoder

    @property
    def tokens(self) -> int:
        """Soft tokens per image (256 released)."""
        return self.config.tokens

    def encode(self, image: np.ndarray, size: int | None = None) -> np.ndarray:
        """Soft tokens of one RGB image: ``[H, W, 3]`` uint8 -> ``[256, text_hidden]`` float32.

        ``size``: the square resolution in pixels the image is resized to
        (256, 512 or 768 released; default the processor's, 768 released).
        """
        s = size or self.image_config.size
        self._check_size(s)
        return self.encode_pixels(preprocess(image, self.image_config, s))

    def encode_pixels(self, pixels: np.ndarray, project: bool = True) -> np.ndarray:
        """Soft tokens of preprocessed pixels ``[S, S, 3]`` float32 (what transformers takes as
        ``pixel_values``, channels last). ``project=False`` returns the tower's own tokens
        ``[256, hidden]`` (before the √hidden scale and ``embed_vision``)."""
        self._check_pixels(pixels)
        soft = self.tower(as_f32(pixels))  # [256, hidden]
        return self.embed(soft) if project else soft

    def tower(self, x: np.ndarray) -> np.ndarray:
        """The MobileNetV5 encoder: ``[S, S, 3] -> [R·R, hidden]`` (timm ``forward_features``)."""
        cfg, w = self.config, self.weights
        h = stem(x, w.stem)  # [S/2, S/2, stem]
        wanted = set(cfg.msfa_stages)
        features = [h] if 0 in wanted else []
        i = 0
        for s, stage in enumerate(cfg.stages, start=1):
            for spec in stage:
                h = block(h, spec, w.blocks[i])
                i += 1
            if s in wanted:
                features.append(h)
        out = msfa(features, cfg, w.msfa)  # [R, R, hidden]
        return out.reshape(-1, cfg.hidden_size)

    def embed(self, soft: np.ndarray) -> np.ndarray:
        """Tower tokens into the text space: ``[k, hidden] -> [k, text_H]`` (``embed_vision``)."""
        cfg, w = self.config, self.weights.embedder
        scaled = soft * F32(cfg.hidden_size**0.5)  # get_image_features: × √hidden
        normed = rms_norm(scaled, w.soft_embedding_norm, cfg.rms_norm_eps)
        projected = np.matmul(normed, as_f32(w.embedding_projection).T)  # [k, text_H]
        return rms_norm(projected, None, cfg.rms_norm_eps)

    def _check_pixels(self, pixels: np.ndarray) -> None:
        if (
            not isinstance(pixels, np.ndarray)
            or pixels.ndim != 3
            or pixels.shape[2] != 3
            or pixels.shape[0] != pixels.shape[1]
        ):
            shape = list(pixels.shape) if isinstance(pixels, np.ndarray) else type(pixels).__name__
            raise VisionError(f"pixels must be a square [S, S, 3] array, got {shape}")
        self._check_size(pixels.shape[0])

    def _check_size(self, size: int) -> None:
        try:
            self.config.check_resolution(size)
        except CheckpointError as exc:
            raise VisionError(str(exc)) from None
