"""The sub-sampling front end: two strided 2-D convs, cumulative group norms, a projection.

Mel frames ``[T, F]`` (F = 128) become encoder frames ``[T/4, H]`` (40 ms
each). Each conv is 3×3 with stride 2 in time and frequency; frequency is
zero-padded by one bin on each side, time by ``kernel − 1`` frames at the
*end* ("reverse causal"): output frame ``t`` reads input frames ``2t … 2t+2``.
So encoder frame ``s`` reads mel frames ``4s … 4s+6`` — six frames of
look-ahead, plus the 513-sample window of the last: 1473 samples (92 ms)
after the frame's start. Each conv is followed by a group norm whose mean and
variance accumulate over all frames so far (over frequency and channels),
then ReLU.

:class:`SubsampleState` runs this incrementally: a conv emits an output as
soon as its three input frames exist and keeps the unread ones; the norms
carry their running sums. ``finish=True`` appends the zero padding the
reference puts at the end of a clip and emits the remaining frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeagent.engine.audio.config import SSCP_FREQ_PADDING, AudioConfig
from edgeagent.engine.audio.kernels import Linear
from edgeagent.engine.audio.weights import SubsampleWeights

F32 = np.float32


class CumulativeGroupNorm:
    """Group norm with statistics over every frame so far (transformers'
    ``Gemma3nAudioCumulativeGroupNorm``): frame ``t`` is normalised with the
    mean and variance of frames ``0 … t``. The variance sums each frame's
    squared deviations from the mean *as it was at that frame*.

    Like torch's CPU ``cumsum``, running sums accumulate in float64 and are
    read out as float32.
    """

    def __init__(self, weight: np.ndarray, eps: float) -> None:
        self.weight = weight  # [C] f32
        self.eps = F32(eps)
        self.sum = 0.0  # float64 running sum of values
        self.sq = 0.0  # float64 running sum of squared deviations
        self.count = 0  # values seen

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalise new frames ``[n, F, C]`` and fold them into the statistics."""
        n, group = x.shape[0], x.shape[1] * x.shape[2]
        if n == 0:
            return x
        sums = np.sum(x, axis=(1, 2), dtype=F32)  # [n]
        cum_sum = _running(self.sum, sums)  # [n] f64
        counts = (self.count + group * np.arange(1, n + 1)).astype(F32)  # [n]
        mean = (cum_sum.astype(F32) / counts)[:, None, None]  # [n, 1, 1]
        centred = x - mean  # [n, F, C]
        sq = np.sum(np.square(centred), axis=(1, 2), dtype=F32)  # [n]
        cum_sq = _running(self.sq, sq)  # [n] f64
        var = (cum_sq.astype(F32) / counts)[:, None, None]
        self.sum, self.sq = float(cum_sum[-1]), float(cum_sq[-1])
        self.count += n * group
        return centred * (F32(1.0) / np.sqrt(var + self.eps)) * self.weight


def _running(carry: float, values: np.ndarray | np.floating[Any]) -> np.ndarray:
    """``carry + values[0], carry + values[0] + values[1], …`` accumulated left to right in
    float64, so that any split of a sequence gives the same sums as the whole."""
    return np.cumsum(np.concatenate([[carry], values.astype(np.float64)]))[1:]


class StridedConv:
    """One sub-sampling conv + norm + ReLU over a growing time axis (channels last).

    Keeps the input frames not yet fully read (fewer than ``kernel_t``).
    """

    def __init__(
        self, weight: np.ndarray, norm: CumulativeGroupNorm, kernel: tuple[int, int],
        stride: tuple[int, int],
    ) -> None:  # fmt: skip
        c_out = weight.shape[0]
        self.kt, self.kf = kernel
        self.st, self.sf = stride
        self.w = np.ascontiguousarray(weight.reshape(c_out, -1).T, np.float64)  # [Cin*kt*kf, Cout]
        self.norm = norm
        self.pending: np.ndarray | None = None  # [r, F, Cin] unread input frames

    def __call__(self, x: np.ndarray, finish: bool = False) -> np.ndarray:
        """New input frames ``[n, F, Cin]`` -> new output frames ``[m, F', Cout]``."""
        rows = x if self.pending is None else np.concatenate([self.pending, x])
        if finish:  # the reference's time padding: kernel_t − 1 zero frames at the end
            rows = np.concatenate([rows, np.zeros((self.kt - 1, *rows.shape[1:]), F32)])
        n_out = max(0, (len(rows) - self.kt) // self.st + 1)
        self.pending = rows[n_out * self.st :]
        if n_out == 0:
            f_out = (rows.shape[1] + sum(SSCP_FREQ_PADDING) - self.kf) // self.sf + 1
            return np.zeros((0, f_out, self.w.shape[1]), F32)
        padded = np.pad(
            rows[: (n_out - 1) * self.st + self.kt], ((0, 0), SSCP_FREQ_PADDING, (0, 0))
        )
        windows = np.lib.stride_tricks.sliding_window_view(padded, (self.kt, self.kf), axis=(0, 1))
        patches = windows[:: self.st, :: self.sf]  # [m, F', Cin, kt, kf]
        m, f_out = patches.shape[:2]
        flat = patches.reshape(m * f_out, -1).astype(np.float64)  # float64 sums: see DenseLinear
        out = (flat @ self.w).astype(F32).reshape(m, f_out, -1)  # [m, F', Cout]
        return np.maximum(self.norm(out), F32(0.0))


class SubsampleState:
    """Incremental sub-sampling: mel frames in, encoder frames ``[n, H]`` out."""

    def __init__(self, cfg: AudioConfig, w: SubsampleWeights, proj: Linear) -> None:
        eps = cfg.sscp_group_norm_eps
        self.conv_0 = StridedConv(w.conv_0, CumulativeGroupNorm(w.norm_0, eps),
                                  cfg.sscp_kernels[0], cfg.sscp_strides[0])  # fmt: skip
        self.conv_1 = StridedConv(w.conv_1, CumulativeGroupNorm(w.norm_1, eps),
                                  cfg.sscp_kernels[1], cfg.sscp_strides[1])  # fmt: skip
        self.proj = proj
        self.hidden = cfg.hidden_size

    def __call__(self, mel: np.ndarray, finish: bool = False) -> np.ndarray:
        """Mel frames ``[n, F]`` -> the encoder frames they complete ``[m, H]``."""
        x = self.conv_0(mel[:, :, None].astype(F32), finish)  # [n0, F0, C0]
        x = self.conv_1(x, finish)  # [n1, F1, C1]
        if len(x) == 0:
            return np.zeros((0, self.hidden), F32)
        return self.proj(x.reshape(len(x), -1))  # [n1, F1*C1] -> [n1, H]
