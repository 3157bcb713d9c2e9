"""Encoder weights in the layouts refimpl's fast path computes with, made from NeMo's layouts in one place.

The fast path multiplies activations ``x [rows, in]`` by weights on the BLAS side and its Numba kernels loop over
channels in the innermost loop. Matrices are stored as **column panels**: ``weight_p [out/nb, in, nb]``, panel p
holding output columns p*nb .. p*nb+nb-1 of the [in, out] matrix, contiguous (nb = ``PANEL`` = 64, or the largest
divisor of ``out`` below it). ``x @ weight_p`` (one NumPy call, one BLAS call per panel) then never makes BLAS
repack a whole weight matrix for a chunk of a few rows: with 2-16 rows, OpenBLAS spends about half of a [14, 512]
x [512, 2048] product copying the weight into its packed format; a 64-column panel is small enough for its
no-copy small-matrix kernel and streams from memory contiguously (measured 25-60 % faster per product; GEMV
speed for one row is unchanged). Per-tap weights are ``[taps, channels]``.

Nothing is renamed: the layout is the encoder's nested dict keyed by NeMo's module names, with these leaves
changed (everything else is kept as is):

  NeMo (per layer)                                   layout
  <linear>.weight [out, in]                          <linear>.weight_p [out/nb, in, nb]  (feed_forward*, linear_out,
                                                                                          pointwise_conv*)
  self_attn.linear_{q,k,v}.{weight,bias}             self_attn.linear_qkv.weight_p (of [d, 3d], columns q | k | v),
                                                     .bias [3d]
  self_attn.linear_pos.weight [d, d]                 self_attn.linear_pos.weight_t [d, d] ([in, out]; used once)
  conv.pointwise_conv{1,2}.weight [out, in, 1]       conv.pointwise_conv{1,2}.weight_p
  conv.depthwise_conv.weight [d, 1, K]               conv.depthwise_conv.weight_t [K, d]
  conv.batch_norm.{weight,bias,running_mean,         conv.batch_norm.{scale, bias, running_mean},
                   running_var}  (BatchNorm only)    scale = weight / sqrt(running_var + eps) (as the plain path)
  pre_encode.conv.<i>.weight [C, 1, 3, 3]             pre_encode.conv.<i>.weight_t [9, C] (taps ky*3+kx)
  pre_encode.conv.<i>.weight [C, C, 1, 1]             pre_encode.conv.<i>.weight_p
  pre_encode.out.weight [d, C*F] (index c*F + f)      pre_encode.out.weight_p of [F*C, d] (row f*C + c: channel-last)

Leaves may be arrays or lazy ``Source``s (``weights_tools.sources``): ``encoder_layout`` reads each weight once
and keeps only the converted array, so converting straight from an ONNX file never holds two copies of the
model (``load_layout``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .batchnorm import BATCH_NORM_EPS
from .config import EncoderConfig, ModelConfig, conv_norm_error
from .nemo_load import load_nemo
from .onnx_load import plan_onnx
from .sources import materialize
from .tree import unflatten

PANEL = 64  # output columns per panel of a weight matrix
LINEARS = {"feed_forward1": ("linear1", "linear2"), "feed_forward2": ("linear1", "linear2")}
NORMS = ("norm_feed_forward1", "norm_self_att", "norm_conv", "norm_feed_forward2", "norm_out")


def _read(leaf, dtype) -> np.ndarray:
    """An array leaf, or a lazy Source read now, as a contiguous array of dtype."""
    a = leaf.read() if hasattr(leaf, "read") else leaf
    return np.ascontiguousarray(a, dtype=dtype)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def panel_width(n_out: int, panel: int = PANEL) -> int:
    """Columns per panel: ``panel``, or the largest divisor of n_out below it."""
    return max(w for w in range(1, min(panel, n_out) + 1) if n_out % w == 0)


def panels(w_t: np.ndarray, panel: int = PANEL) -> np.ndarray:
    """[in, out] -> [out/nb, in, nb], each panel contiguous."""
    n_in, n_out = w_t.shape
    nb = panel_width(n_out, panel)
    return _frozen(np.ascontiguousarray(w_t.reshape(n_in, n_out // nb, nb).transpose(1, 0, 2)))


def unpanel(w_p: np.ndarray) -> np.ndarray:
    """[out/nb, in, nb] -> [in, out] (for tests and inspection)."""
    p, n_in, nb = w_p.shape
    return w_p.transpose(1, 0, 2).reshape(n_in, p * nb)


def _read_t(leaf, dtype) -> np.ndarray:
    """A Linear / 1x1 conv weight [out, in(, 1)] as [in, out]. A lazy ONNX source stored transposed for MatMul
    (``Source.transform == "transpose"``) is read as stored: no transpose there and back."""
    if getattr(leaf, "transform", None) == "transpose":
        return np.ascontiguousarray(leaf.ref.read(), dtype=dtype)  # the ONNX initializer is [in, out]
    w = _read(leaf, dtype)
    return np.ascontiguousarray(w.reshape(w.shape[0], -1).T)


def _linear_t(params: dict, dtype, *, bias: bool = True) -> dict:
    """{"weight" [out, in(, 1)], "bias"} -> {"weight_t" [in, out], "bias"} (1x1 conv weights too)."""
    out = {"weight_t": _frozen(_read_t(params["weight"], dtype))}
    if bias:
        out["bias"] = _frozen(_read(params["bias"], dtype))
    return out


def _linear_p(params: dict, dtype) -> dict:
    """{"weight" [out, in(, 1)], "bias"} -> {"weight_p" [out/nb, in, nb], "bias"}."""
    p = _linear_t(params, dtype)
    return {"weight_p": panels(p.pop("weight_t")), **p}


def _taps_t(params: dict, dtype) -> dict:
    """Depthwise/single-input conv weight [C, 1, *kernel] -> {"weight_t" [taps, C], "bias" [C]}."""
    w = _read(params["weight"], dtype)
    return {
        "weight_t": _frozen(np.ascontiguousarray(w.reshape(w.shape[0], -1).T)),
        "bias": _frozen(_read(params["bias"], dtype)),
    }


def _plain(params: dict, dtype) -> dict:
    return {k: _frozen(_read(v, dtype)) for k, v in params.items()}


def self_attn_layout(params: dict, dtype) -> dict:
    """linear_q/k/v fused into one [d, 3d] matrix (columns q | k | v), the rest transposed."""
    qkv = [_linear_t(params[f"linear_{n}"], dtype) for n in ("q", "k", "v")]
    return {
        "linear_qkv": {
            "weight_p": panels(np.concatenate([p["weight_t"] for p in qkv], axis=1)),
            "bias": _frozen(np.concatenate([p["bias"] for p in qkv])),
        },
        "linear_out": _linear_p(params["linear_out"], dtype),
        "linear_pos": _linear_t(params["linear_pos"], dtype, bias=False),
        "pos_bias_u": _frozen(_read(params["pos_bias_u"], dtype)),
        "pos_bias_v": _frozen(_read(params["pos_bias_v"], dtype)),
    }


def conv_layout(params: dict, norm_type: str, dtype, eps: float = BATCH_NORM_EPS) -> dict:
    """ConformerConvolution: pointwise convs as [in, out], depthwise taps as [K, d], BatchNorm as a scale."""
    out = {
        "pointwise_conv1": _linear_p(params["pointwise_conv1"], dtype),
        "depthwise_conv": _taps_t(params["depthwise_conv"], dtype),
        "pointwise_conv2": _linear_p(params["pointwise_conv2"], dtype),
    }
    if norm_type == "layer_norm":
        out["batch_norm"] = _plain(params["batch_norm"], dtype)  # NeMo's name for the conv LayerNorm
    elif norm_type == "batch_norm":
        bn = _plain(params["batch_norm"], dtype)
        out["batch_norm"] = {
            "scale": _frozen(bn["weight"] / np.sqrt(bn["running_var"] + dtype.type(eps))),
            "bias": bn["bias"],
            "running_mean": bn["running_mean"],
        }
    elif norm_type != "folded_batch_norm":
        raise conv_norm_error(norm_type)
    return out


def layer_layout(params: dict, norm_type: str, dtype) -> dict:
    out = {name: _plain(params[name], dtype) for name in NORMS}
    for ff, linears in LINEARS.items():
        out[ff] = {lin: _linear_p(params[ff][lin], dtype) for lin in linears}
    out["self_attn"] = self_attn_layout(params["self_attn"], dtype)
    out["conv"] = conv_layout(params["conv"], norm_type, dtype)
    return out


def pre_encode_layout(params: dict, cfg: EncoderConfig, dtype) -> dict:
    """dw_striding convs channel-last: 3x3 taps as [9, C], 1x1 convs as [C_in, C_out]; ``out`` with its input
    rows reordered from NeMo's flatten order (c*F + f) to channel-last (f*C + c)."""
    conv = {}
    for i, p in params["conv"].items():
        shape = tuple(p["weight"].shape)
        conv[i] = _linear_p(p, dtype) if shape[2:] == (1, 1) else _taps_t(p, dtype)
    w = _read(params["out"]["weight"], dtype)  # [d, C*F]
    c = cfg.subsampling_conv_channels
    f = w.shape[1] // c
    w_t = w.reshape(w.shape[0], c, f).transpose(2, 1, 0).reshape(f * c, w.shape[0])  # [(f, c), d]
    return {"conv": conv, "out": {"weight_p": panels(w_t), "bias": _frozen(_read(params["out"]["bias"], dtype))}}


def encoder_layout(encoder: dict, cfg: EncoderConfig, dtype=np.float32) -> dict:
    """The fast path's encoder weights from ``weights["encoder"]`` (NeMo layout; leaves arrays or lazy Sources).
    Every weight of the encoder is used (a missing one raises KeyError naming it)."""
    dtype = np.dtype(dtype)
    layers = encoder["layers"]
    if len(layers) != cfg.n_layers:
        raise ValueError(f"the encoder weights have {len(layers)} layers, the config {cfg.n_layers}")
    return {
        "pre_encode": pre_encode_layout(encoder["pre_encode"], cfg, dtype),
        "layers": {str(i): layer_layout(layers[str(i)], cfg.conv_norm_type, dtype) for i in range(cfg.n_layers)},
    }


def load_layout(path, *, dtype=np.float32, att_context_sizes=None) -> tuple[ModelConfig, dict, dict]:
    """(config, every weight except the encoder's in NeMo layout, the encoder in the fast layout) from a model
    folder / .onnx (read tensor by tensor: never two copies of the encoder in memory) or a .nemo (read whole,
    then converted)."""
    p = Path(path)
    if p.suffix == ".nemo":
        config, weights = load_nemo(p)
        encoder = weights.pop("encoder")
        return config, weights, encoder_layout(encoder, config.encoder, dtype)
    plan = plan_onnx(p, att_context_sizes=att_context_sizes)
    lazy = unflatten(dict(plan.sources))
    encoder = lazy.pop("encoder")
    rest = unflatten(materialize({n: s for n, s in plan.sources.items() if not n.startswith("encoder.")}))
    return plan.config, rest, encoder_layout(encoder, plan.config.encoder, dtype)
