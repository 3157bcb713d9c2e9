"""``ConformerConvolution`` with the causal depthwise conv and its time cache (``cache_last_time``).

pointwise_conv1 (d -> 2d) -> GLU -> zero padded frames -> causal depthwise conv over [cache ‖ chunk]
-> norm (LayerNorm over channels, or BatchNorm, or nothing when BatchNorm was folded into the conv)
-> swish -> pointwise_conv2 (d -> d).
The next ``cache_last_time`` is the last K-1 columns of [cache ‖ depthwise input] (post-GLU, post-mask): the
encoder step forms it from the depthwise input this module returns.
"""

from __future__ import annotations

import numpy as np

from weights_tools.batchnorm import BATCH_NORM_EPS
from weights_tools.config import conv_norm_error

from .nn import glu, layer_norm, swish


def pointwise_conv1d(x: np.ndarray, params: dict) -> np.ndarray:
    """1x1 Conv1d on channel-last input: x [B, T, C_in] -> [B, T, C_out]; weight [C_out, C_in, 1]."""
    return x @ params["weight"][:, :, 0].T + params["bias"]


def causal_depthwise_conv1d(x: np.ndarray, cache: np.ndarray, params: dict) -> np.ndarray:
    """x [B, d, T], cache [B, d, K-1] (zeros at the start: the causal left padding) -> y [B, d, T].

    y[b, c, t] = bias[c] + sum_k w[c, 0, k] * [cache ‖ x][b, c, t + k]
    """
    w = params["weight"][:, 0, :]  # [d, K]
    k = w.shape[1]
    xp = np.concatenate([cache, x], axis=2)  # [B, d, K-1+T]
    win = np.lib.stride_tricks.sliding_window_view(xp, k, axis=2)  # [B, d, T, K]
    return np.einsum("bctk,ck->bct", win, w) + params["bias"][:, None]


def batch_norm(x: np.ndarray, params: dict, eps: float = BATCH_NORM_EPS) -> np.ndarray:
    """Inference BatchNorm1d over channels: x [B, d, T]."""
    scale = params["weight"] / np.sqrt(params["running_var"] + eps)
    return (x - params["running_mean"][:, None]) * scale[:, None] + params["bias"][:, None]


def conformer_convolution(x: np.ndarray, cache: np.ndarray, pad_mask: np.ndarray, params: dict, *, norm_type: str):
    """x [B, T, d] (post norm_conv), cache [B, d, K-1], pad_mask [B, T] True = padded
    -> (y [B, T, d], depthwise input [B, d, T]: the frames ``cache_last_time`` is cut from)."""
    h = glu(pointwise_conv1d(x, params["pointwise_conv1"]), axis=-1)  # [B, T, d]
    h = np.where(pad_mask[:, :, None], 0.0, h).astype(x.dtype, copy=False).transpose(0, 2, 1)  # [B, d, T]
    y = causal_depthwise_conv1d(h, cache, params["depthwise_conv"])  # [B, d, T]
    if norm_type == "layer_norm":
        y = layer_norm(y.transpose(0, 2, 1), params["batch_norm"])  # NeMo keeps the name batch_norm
    elif norm_type == "batch_norm":
        y = batch_norm(y, params["batch_norm"]).transpose(0, 2, 1)
    elif norm_type == "folded_batch_norm":
        y = y.transpose(0, 2, 1)  # already inside depthwise_conv's weight and bias
    else:
        raise conv_norm_error(norm_type)
    return pointwise_conv1d(swish(y), params["pointwise_conv2"]), h
