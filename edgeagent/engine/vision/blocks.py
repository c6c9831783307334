"""The MobileNetV5 blocks, one function each, as timm 1.0.31 computes them.

Tensors are channels-last float32 ``[H, W, C]``. Every norm inside the tower is
timm's ``RmsNorm2d`` over channels (eps 1e-6), activations are GELU with the
tanh approximation.
"""

from __future__ import annotations

import numpy as np

from edgeagent.engine.vision.config import NORM_EPS, BlockSpec, VisionConfig
from edgeagent.engine.vision.ops import (
    avg_pool,
    conv2d,
    depthwise_conv2d,
    gelu_tanh,
    mq_attention,
    nearest_resize,
    pointwise,
    rms_norm,
)
from edgeagent.engine.vision.weights import (
    BlockWeights,
    EdgeResidualWeights,
    KeyValueWeights,
    MobileAttentionWeights,
    MsfaWeights,
    StemWeights,
    UniversalInvertedResidualWeights,
)


def stem(x: np.ndarray, w: StemWeights) -> np.ndarray:
    """``conv_stem``: 3×3 stride-2 conv + bias, RMSNorm, GELU: ``[S, S, 3] -> [S/2, S/2, C]``."""
    h = conv2d(x, w.conv, 2, w.bias)  # [S/2, S/2, C]
    return gelu_tanh(rms_norm(h, w.norm, NORM_EPS))


def edge_residual(x: np.ndarray, spec: BlockSpec, w: EdgeResidualWeights) -> np.ndarray:
    """``er``: full ``k``×``k`` conv (stride ``s``) to ``mid``, norm, GELU; 1×1 to ``out``, norm."""
    h = conv2d(x, w.conv_exp, spec.stride)  # [H/s, W/s, mid]
    h = gelu_tanh(rms_norm(h, w.bn1, NORM_EPS))
    h = rms_norm(pointwise(h, w.conv_pwl), w.bn2, NORM_EPS)  # [H/s, W/s, out]
    return h + x if spec.has_skip else h


def inverted_residual(
    x: np.ndarray, spec: BlockSpec, w: UniversalInvertedResidualWeights
) -> np.ndarray:
    """``uir``: [depthwise ``a`` + norm] → 1×1 expand + norm + GELU → [depthwise ``k`` + norm +
    GELU] → 1×1 project + norm → layer scale; the stride sits on the first depthwise conv
    present (mid if any, else start)."""
    h = x
    if w.dw_start is not None:
        s = 1 if w.dw_mid is not None else spec.stride
        h = rms_norm(depthwise_conv2d(h, w.dw_start.conv, s), w.dw_start.norm, NORM_EPS)
    h = gelu_tanh(rms_norm(pointwise(h, w.pw_exp.conv), w.pw_exp.norm, NORM_EPS))  # [.., mid]
    if w.dw_mid is not None:
        h = depthwise_conv2d(h, w.dw_mid.conv, spec.stride)  # [H/s, W/s, mid]
        h = gelu_tanh(rms_norm(h, w.dw_mid.norm, NORM_EPS))
    h = rms_norm(pointwise(h, w.pw_proj.conv), w.pw_proj.norm, NORM_EPS)  # [.., out]
    if w.layer_scale is not None:
        h *= w.layer_scale
    return h + x if spec.has_skip else h


def _key_value(x: np.ndarray, spec: BlockSpec, w: KeyValueWeights) -> np.ndarray:
    """Keys or values: ``[H, W, C] -> [P, d]`` with ``P = ⌈H/kv⌉·⌈W/kv⌉``."""
    if w.down_conv is not None and w.norm is not None:
        x = rms_norm(depthwise_conv2d(x, w.down_conv, spec.kv_stride), w.norm, NORM_EPS)
    kv = pointwise(x, w.proj)  # [H', W', d]
    return kv.reshape(-1, kv.shape[-1])


def mobile_attention(x: np.ndarray, spec: BlockSpec, w: MobileAttentionWeights) -> np.ndarray:
    """``mqa``: RMSNorm, multi-query attention over downsampled keys/values, 1×1 output,
    layer scale, residual."""
    hgt, wid, _ = x.shape
    normed = rms_norm(x, w.norm, NORM_EPS)  # [H, W, C]
    q = pointwise(normed, w.query).reshape(hgt * wid, -1)  # [HW, heads·d]
    k = _key_value(normed, spec, w.key)  # [P, d]
    v = _key_value(normed, spec, w.value)  # [P, d]
    o = mq_attention(q, k, v, spec.num_heads).reshape(hgt, wid, -1)  # [H, W, heads·d]
    h = pointwise(o, w.output)  # [H, W, out]
    h *= w.layer_scale
    return h + x if spec.has_skip else h


def block(x: np.ndarray, spec: BlockSpec, w: BlockWeights) -> np.ndarray:
    """Run one block of any kind."""
    if isinstance(w, EdgeResidualWeights):
        return edge_residual(x, spec, w)
    if isinstance(w, UniversalInvertedResidualWeights):
        return inverted_residual(x, spec, w)
    return mobile_attention(x, spec, w)


def msfa(features: list[np.ndarray], cfg: VisionConfig, w: MsfaWeights) -> np.ndarray:
    """Multi-scale fusion adapter: nearest-upsample every map to the first one's size,
    concatenate channels, a 1×1 inverted residual, average-pool to the output grid, RMSNorm.

    ``[H_i, W_i, C_i]`` maps -> ``[R, R, hidden]`` (R = 16 released).
    """
    size = features[0].shape[:2]
    fused = np.concatenate(
        [f if f.shape[:2] == size else nearest_resize(f, size) for f in features], axis=-1
    )  # [H, W, ΣC]
    spec = BlockSpec("uir", cfg.msfa_in_chs, cfg.hidden_size, 1, noskip=True)
    h = inverted_residual(fused, spec, w.ffn)  # [H, W, hidden]
    res = cfg.msfa_output_resolution
    if size != (res, res):
        h = avg_pool(h, size[0] // res)  # [R, R, hidden]
    return rms_norm(h, w.norm, NORM_EPS)
