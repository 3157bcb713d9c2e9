"""Small NumPy building blocks shared by the layers (PyTorch semantics, any float dtype)."""

from __future__ import annotations

import numpy as np

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm default, used by every NeMo LayerNorm here


def linear(x: np.ndarray, params: dict) -> np.ndarray:
    """x [..., in] @ weight[out, in]^T + bias[out] -> [..., out] (nn.Linear; bias optional)."""
    y = x @ params["weight"].T
    if "bias" in params:
        y = y + params["bias"]
    return y


def layer_norm(x: np.ndarray, params: dict, eps: float = LAYER_NORM_EPS) -> np.ndarray:
    """LayerNorm over the last axis with biased variance: x [..., d] -> [..., d]."""
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * params["weight"] + params["bias"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)); exp overflows to inf for x < -88 (float32), giving exactly 0 as torch does."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def swish(x: np.ndarray) -> np.ndarray:
    """Swish / SiLU: x * sigmoid(x)."""
    return x * sigmoid(x)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def glu(x: np.ndarray, axis: int) -> np.ndarray:
    """First half * sigmoid(second half) along axis (torch.nn.functional.glu)."""
    a, b = np.split(x, 2, axis=axis)
    return a * sigmoid(b)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
