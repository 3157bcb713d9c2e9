"""Fold the conv module's BatchNorm into its depthwise conv, the way torch's ONNX exporter does
(``fuseConvBatchNorm`` in its eval peephole pass), so a .nemo gives the same arrays as the exported graph."""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import ModelConfig
from .tree import flatten, unflatten

BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm1d default, which NeMo's ConformerConvolution uses


def fold_batch_norm(config: ModelConfig, weights: dict, *, eps: float = BATCH_NORM_EPS) -> tuple[ModelConfig, dict]:
    """(config with conv_norm_type "folded_batch_norm", weights with every ``conv.batch_norm.*`` folded into
    ``conv.depthwise_conv.{weight,bias}``). Models whose conv norm is not BatchNorm are returned unchanged.

    In float32, one rounding per op, in the exporter's order:
    s = gamma / sqrt(var + eps);  W' = W * s (per output channel);  b' = (b - mean) * s + beta
    (without a conv bias: b' = beta - mean * s)."""
    if config.encoder.conv_norm_type != "batch_norm":
        return config, weights
    flat = dict(flatten(weights))
    for i in range(config.encoder.n_layers):
        p = f"encoder.layers.{i}.conv"
        w, b = _fold(flat, p, np.float32(eps))
        flat[f"{p}.depthwise_conv.weight"], flat[f"{p}.depthwise_conv.bias"] = w, b
        for stat in ("weight", "bias", "running_mean", "running_var"):
            del flat[f"{p}.batch_norm.{stat}"]
    enc = dataclasses.replace(config.encoder, conv_norm_type="folded_batch_norm")
    return dataclasses.replace(config, encoder=enc), unflatten(flat)


def _fold(flat: dict, p: str, eps: np.float32) -> tuple[np.ndarray, np.ndarray]:
    f32 = np.float32
    gamma, beta = flat[f"{p}.batch_norm.weight"].astype(f32), flat[f"{p}.batch_norm.bias"].astype(f32)
    mean, var = flat[f"{p}.batch_norm.running_mean"].astype(f32), flat[f"{p}.batch_norm.running_var"].astype(f32)
    w = flat[f"{p}.depthwise_conv.weight"].astype(f32)  # [C, 1, k]
    scale = gamma / np.sqrt(var + eps)
    w_new = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    b = flat.get(f"{p}.depthwise_conv.bias")
    b_new = (b.astype(f32) - mean) * scale + beta if b is not None else beta - mean * scale
    for a in (w_new, b_new):
        a.flags.writeable = False
    return w_new, b_new
