"""refimpl's fast path: the same cache-aware streaming encoder step as ``refimpl.encoder``, restructured for speed.

The maths is the plain path's (tests compare the two, and both with onnxruntime, on every chunk); what changes:

1. **Projected keys/values of the cached frames are state.** NeMo's export caches the post-norm attention
   *inputs* (``cache_last_channel``), so every step re-projects all C cached frames through linear_k/linear_v in
   every layer. Here the projections of the cached frames are kept in ``engine_state`` and rolled exactly like
   ``cache_last_channel`` (row r of one is the projection of row r of the other, right-aligned the same way), so
   a step projects only its T new frames. The NeMo-format caches are still produced every step, so this engine,
   the plain one and onnxruntime can take over from each other at any chunk: given ``engine_state=None`` (a
   state some other engine produced, or the initial state) the keys/values are projected from
   ``cache_last_channel`` once.
2. **Positional projections are constants.** For a given cache size C and chunk length T, ``pos_emb`` and
   ``linear_pos(pos_emb)`` are the same every step: computed once per layer for the longest chunk of the
   engine's look-ahead (a shorter chunk's table is a slice of it: row r is relative position L-1-r).
3. **Weights in the layout the arithmetic wants** (``weights_tools.layouts``): matrices as contiguous 64-column
   panels of [in, out] (one BLAS call per panel: OpenBLAS's no-copy small-matrix kernel instead of repacking a
   whole weight matrix for a chunk of a few rows), linear_q/k/v fused into one [d, 3d] product, depthwise taps
   as [K, d], the pre_encode output projection reordered for channel-last input.
4. **Channel-last activations throughout**, pre_encode included. Numba kernels where NumPy would loop in Python
   or make many temporaries: GLU + pad mask + depthwise conv with its cache + norm + swish, residual add +
   LayerNorm, the subsampling convs. ``backend="numpy"`` runs their NumPy twins below instead: the same
   restructured step in plain array arithmetic, no Numba. Attention over the cache is NumPy on both backends
   (three BLAS products, rel_shift as a strided view, NumPy's vectorised exp), which measured faster than a
   Numba loop nest that may not reorder its sums (no fastmath).

Matrix products are ~75 % of a [70,13] chunk (OpenBLAS at 14 rows) and ~75 % of a [70,0] chunk (one pass over
every weight, memory-bound): see ``refimpl bench``, which also measures that memory floor.

engine_state (a dict of [B, ...] arrays, owned by this engine):
  "linear_k"  [B, n_layers, H, d_k, C]  linear_k of each cached frame, keys transposed (d_k before time): the
                                         score product q @ k is then a plain [T, dk] x [dk, S] BLAS call
  "linear_v"  [B, n_layers, H, C, d_k]  linear_v of each cached frame
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..model.attention import INF_VAL, make_masks, rel_positional_encoding
from ..runtime.chunking import streaming_params, subsampled_length
from ..model.encoder import EncoderOutput
from ..runtime.engines import RefimplEngine
from ..model.nn import LAYER_NORM_EPS, layer_norm, relu, sigmoid, swish

FC_FACTOR = 0.5  # half-step feed-forwards (as conformer.FC_FACTOR)
ENGINE_STATE_KEYS = ("linear_k", "linear_v")


# --- NumPy twins of the fast-path kernels (refimpl.kernels has the Numba ones) -------------------------------

def cached_rel_pos_attention(qkv, params, k_all, v_all, layer: int, pos_t, pos_off: int, att_mask):
    """``RelPositionMultiHeadAttention`` over [cache ‖ chunk] with projected keys/values of the cache given.

    qkv [B, T, 3d] = x @ W_qkv (bias not yet added); k_all [B, L, H, dk, C+T] and
    v_all [B, L, H, C+T, dk] hold layer ``layer``'s cached keys/values in their first C columns/rows: this writes
    the chunk's after them. pos_t [L, H, dk, P] precomputed linear_pos(pos_emb), used from column ``pos_off`` on;
    att_mask [B, T, C+T] True = masked -> context [B, T, d] (before linear_out).

    The arithmetic of ``attention.rel_pos_attention_core`` with three batched BLAS products; rel_shift is a strided
    view (score (i, j) reads column j + T-1-i of q_v @ p, as NeMo's pad-and-reshape does), softmax in place.
    """
    b, t, d3 = qkv.shape
    h, dk = params["pos_bias_u"].shape
    d = d3 // 3
    s = k_all.shape[-1]
    qkv = (qkv + params["linear_qkv"]["bias"]).reshape(b, t, 3, h, dk)
    k_all[:, layer, :, :, s - t:] = qkv[:, :, 1].transpose(0, 2, 3, 1)
    v_all[:, layer, :, s - t:] = qkv[:, :, 2].transpose(0, 2, 1, 3)
    q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # [B, H, T, dk]
    scores = (q + params["pos_bias_u"][:, None]) @ k_all[:, layer]  # matrix_ac [B, H, T, S]
    bd = (q + params["pos_bias_v"][:, None]) @ pos_t[layer, :, :, pos_off: pos_off + 2 * s - 1]  # [B, H, T, 2S-1]
    st = bd.strides  # rel_shift: row i of the view starts at column T-1-i of bd's row i
    scores += np.ndarray(scores.shape, bd.dtype, buffer=bd, offset=(t - 1) * st[3],
                         strides=(st[0], st[1], st[2] - st[3], st[3]))
    scores /= math.sqrt(dk)
    mask = att_mask[:, None]  # [B, 1, T, S]
    np.copyto(scores, -INF_VAL, where=mask)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    np.copyto(scores, 0.0, where=mask)
    return (scores @ v_all[:, layer]).transpose(0, 2, 1, 3).reshape(b, t, d)


def linear_p(x, params: dict, *, bias: bool = True):
    """``nn.linear`` on a column-panel weight (weights_tools.layouts): x [..., in] -> [..., out] = x @ W (+ bias).
    One BLAS product per panel, written straight into its columns of the result."""
    w_p = params["weight_p"]  # [P, in, nb]
    p, _, nb = w_p.shape
    x2 = x.reshape(-1, x.shape[-1])
    y = np.empty((x2.shape[0], p * nb), np.result_type(x.dtype, w_p.dtype))
    np.matmul(x2, w_p, out=y.reshape(-1, p, nb).transpose(1, 0, 2))
    if bias:
        y += params["bias"]
    return y.reshape(x.shape[:-1] + (p * nb,))


def swish_(h):
    """h * sigmoid(h) in place (nn.swish's arithmetic, without temporaries)."""
    s = np.negative(h)
    with np.errstate(over="ignore"):
        np.exp(s, out=s)
    s += 1.0
    np.reciprocal(s, out=s)
    h *= s
    return h


def conv_module_core(h2, pad_mask, cache, params, *, norm_type, eps=1e-5):
    """``ConformerConvolution`` between its two pointwise convs, channel-last: h2 [B, T, 2d] (pointwise_conv1
    output), pad_mask [B, T], cache [B, d, K-1] -> (swish(norm(depthwise([cache ‖ mask(glu(h2))]))) [B, T, d],
    cache_next [B, d, K-1])."""
    d = h2.shape[-1] // 2
    g = h2[..., :d] * sigmoid(h2[..., d:])
    g = np.where(pad_mask[:, :, None], 0.0, g).astype(h2.dtype, copy=False)
    xp = np.concatenate([cache.transpose(0, 2, 1), g], axis=1)  # [B, K-1+T, d]
    w_t = params["depthwise_conv"]["weight_t"]  # [K, d]
    k = w_t.shape[0]
    win = np.lib.stride_tricks.sliding_window_view(xp, k, axis=1)  # [B, T, d, K]
    y = np.einsum("btck,kc->btc", win, w_t) + params["depthwise_conv"]["bias"]
    bn = params.get("batch_norm")
    if norm_type == "layer_norm":
        y = layer_norm(y, bn, eps)
    elif norm_type == "batch_norm":
        y = (y - bn["running_mean"]) * bn["scale"] + bn["bias"]
    elif norm_type != "folded_batch_norm":
        raise ValueError(f"conv norm {norm_type!r} is not supported (layer_norm, batch_norm, folded_batch_norm)")
    return swish(y), np.ascontiguousarray(xp[:, xp.shape[1] - (k - 1):].transpose(0, 2, 1))


def residual_layer_norm(residual, h, bias, alpha, params, eps=LAYER_NORM_EPS):
    """residual += alpha * (h + bias) (in place), then LayerNorm: -> (residual, LayerNorm(residual))."""
    residual += alpha * (h + bias)
    return residual, layer_norm(residual, params, eps)


def causal_conv2d_stride2(x, lengths, params, *, relu: bool):
    """pre_encode's causal 3x3 stride-2 conv, channel-last: x [B, T, F, 1|C] (1: one input channel feeding all C,
    as conv.0; C: depthwise), time steps >= lengths read as zero -> (y [B, T//2+1, F//2+1, C], lengths')."""
    lengths = np.asarray(lengths, np.int64)
    keep = np.arange(x.shape[1])[None, :] < lengths[:, None]
    xp = np.pad(x * keep[:, :, None, None], ((0, 0), (2, 1), (2, 1), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))[:, ::2, ::2]  # [B, T', F', Cx, 3, 3]
    b, t, f, cx = win.shape[:4]
    y = np.einsum("btfck,kc->btfc", win.reshape(b, t, f, cx, 9), params["weight_t"]) + params["bias"]
    out_lengths = lengths // 2 + 1
    y = y * (np.arange(t)[None, :] < out_lengths[:, None])[:, :, None, None]
    return (np.maximum(y, 0) if relu else y).astype(x.dtype, copy=False), out_lengths


class _Ops:
    """The kernel set of one backend: Numba kernels or their NumPy twins (same signatures)."""

    def __init__(self, backend: str):
        if backend == "numba":
            from . import kernels  # imports Numba only when it is used
            self.conv_core, self.residual_layer_norm = kernels.conv_module_core, kernels.residual_layer_norm
            self.layer_norm, self.conv2d = kernels.layer_norm, kernels.causal_conv2d_stride2
        else:
            self.conv_core, self.residual_layer_norm = conv_module_core, residual_layer_norm
            self.layer_norm, self.conv2d = layer_norm, causal_conv2d_stride2


# --- the model pieces -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FastEncoder:
    """What the fast step needs besides the input and the state: config, look-ahead, weights in the fast layout
    and the positional projections precomputed for it."""

    cfg: object  # EncoderConfig
    att_context_size: tuple
    layout: dict  # weights_tools.layouts.encoder_layout
    pos_t: np.ndarray  # [n_layers, H, d_k, 2*pos_len-1] linear_pos(pos_emb) for pos_len = C + T_max, transposed
    pos_len: int


def positional_projections(layout: dict, cfg, length: int, dtype) -> np.ndarray:
    """linear_pos(pos_emb) of every layer for relative positions length-1 .. -(length-1): [n_layers, H, dk, 2L-1]."""
    pe = rel_positional_encoding(length, cfg.d_model, dtype)  # [2L-1, d]
    out = np.empty((cfg.n_layers, cfg.n_heads, cfg.d_k, pe.shape[0]), dtype)
    for i in range(cfg.n_layers):
        p = pe @ layout["layers"][str(i)]["self_attn"]["linear_pos"]["weight_t"]  # [2L-1, d]
        out[i] = p.reshape(-1, cfg.n_heads, cfg.d_k).transpose(1, 2, 0)
    return out


def make_fast_encoder(layout: dict, cfg, att_context_size, dtype=np.float32) -> FastEncoder:
    """Precompute the positional projections for the longest chunk of this look-ahead."""
    sp = streaming_params(cfg, att_context_size)
    t_max = int(subsampled_length(sp.window, cfg.subsampling_factor)) - sp.drop_extra_pre_encoded
    pos_len = sp.last_channel_cache_size + t_max
    return FastEncoder(cfg, tuple(att_context_size), layout, positional_projections(layout, cfg, pos_len, dtype),
                       pos_len)


def positions_for(model: FastEncoder, length: int):
    """(pos_t [L, H, dk, P], first column) holding linear_pos(pos_emb) of every layer for relative positions
    length-1 .. -(length-1): the precomputed table (row r is position pos_len-1-r), or a fresh one if longer."""
    if length <= model.pos_len:
        return model.pos_t, model.pos_len - length
    return positional_projections(model.layout, model.cfg, length, model.pos_t.dtype), 0


def pre_encode_fast(x, lengths, params: dict, *, subsampling_factor: int, ops: _Ops, keep_from: int = 0):
    """``subsampling.pre_encode`` channel-last: x [B, T, feat_in], lengths [B] -> (y [B, T'-keep_from, d_model],
    lengths'). ``keep_from``: output frames before it are not projected (the streaming step drops them)."""
    conv = params["conv"]
    h, lengths = ops.conv2d(x[..., None], lengths, conv["0"], relu=True)  # [B, T1, F1, C]
    for stage in range(int(np.log2(subsampling_factor)) - 1):
        base = 2 + 3 * stage
        h, lengths = ops.conv2d(h, lengths, conv[str(base)], relu=False)  # depthwise; rows >= lengths zeroed
        pw = conv[str(base + 1)]
        h = linear_p(h, pw)  # 1x1 conv over channels
        h = relu(h * (np.arange(h.shape[1])[None, :] < lengths[:, None])[:, :, None, None].astype(h.dtype))
    b, t, f, c = h.shape
    return linear_p(h[:, keep_from:].reshape(b, t - keep_from, f * c), params["out"]), lengths


def project_cached_kv(cache_last_channel, layout: dict, cfg):
    """linear_k / linear_v of every cached frame: cache_last_channel [B, n_layers, C, d] ->
    (k_t [B, n_layers, H, dk, C], v [B, n_layers, H, C, dk]) (the engine_state of a state another engine made)."""
    b, n_layers, c, d = cache_last_channel.shape
    h, dk = cfg.n_heads, cfg.d_k
    k_t = np.empty((b, n_layers, h, dk, c), cache_last_channel.dtype)
    v = np.empty((b, n_layers, h, c, dk), cache_last_channel.dtype)
    for i in range(n_layers):
        qkv = linear_p(cache_last_channel[:, i], layout["layers"][str(i)]["self_attn"]["linear_qkv"])
        kv = qkv[..., d:].reshape(b, c, 2, h, dk)
        k_t[:, i] = kv[:, :, 0].transpose(0, 2, 3, 1)
        v[:, i] = kv[:, :, 1].transpose(0, 2, 1, 3)
    return k_t, v


def _feed_forward(h, ff: dict):
    """``conformer.feed_forward`` on panel weights, without linear2's bias (fused into the residual add)."""
    return linear_p(swish_(linear_p(h, ff["linear1"])), ff["linear2"], bias=False)


def fast_conformer_layer(x, lp: dict, *, layer: int, cache_time, k_all, v_all, pos_t, pos_off: int, att_mask,
                         pad_mask, conv_norm_type: str, ops: _Ops, taps: dict | None = None, name: str = ""):
    """``conformer.conformer_layer`` on the fast layout: x [B, T, d] -> (y [B, T, d], the post-norm attention
    input [B, T, d] (this chunk's rows of cache_last_channel_next), cache_time_next [B, d, K-1]). The chunk's
    keys/values go into k_all/v_all (see ``cached_rel_pos_attention``); each residual add is fused with the
    LayerNorm after it, and the bias of the Linear before it."""
    def tap(key, value):
        if taps is not None:
            taps[f"{name}.{key}"] = np.array(value)

    residual = np.array(x)  # updated in place below
    h = ops.layer_norm(residual, lp["norm_feed_forward1"])
    tap("feed_forward1/input", h)
    ff = lp["feed_forward1"]
    h = _feed_forward(h, ff)
    tap("feed_forward1/output", h + ff["linear2"]["bias"])
    residual, a = ops.residual_layer_norm(residual, h, ff["linear2"]["bias"], FC_FACTOR, lp["norm_self_att"])
    tap("self_attn/input", a)

    sa = lp["self_attn"]
    qkv = linear_p(a, sa["linear_qkv"], bias=False)
    h = linear_p(cached_rel_pos_attention(qkv, sa, k_all, v_all, layer, pos_t, pos_off, att_mask), sa["linear_out"],
                 bias=False)
    tap("self_attn/output", h + sa["linear_out"]["bias"])
    residual, h = ops.residual_layer_norm(residual, h, sa["linear_out"]["bias"], 1.0, lp["norm_conv"])
    tap("conv/input", h)

    cv = lp["conv"]
    h2 = linear_p(h, cv["pointwise_conv1"])  # [B, T, 2d]
    h, cache_time_next = ops.conv_core(h2, pad_mask, cache_time, cv, norm_type=conv_norm_type)
    h = linear_p(h, cv["pointwise_conv2"], bias=False)
    tap("conv/output", h + cv["pointwise_conv2"]["bias"])
    residual, h = ops.residual_layer_norm(residual, h, cv["pointwise_conv2"]["bias"], 1.0, lp["norm_feed_forward2"])
    tap("feed_forward2/input", h)

    ff = lp["feed_forward2"]
    h = _feed_forward(h, ff)
    tap("feed_forward2/output", h + ff["linear2"]["bias"])
    residual, y = ops.residual_layer_norm(residual, h, ff["linear2"]["bias"], FC_FACTOR, lp["norm_out"])
    tap("norm_out/input", residual)
    tap("norm_out/output", y)
    return y, a, cache_time_next


def fast_encoder_step(audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len,
                      engine_state, model: FastEncoder, *, backend: str = "numba", taps: dict | None = None):
    """``encoder.encoder_step`` on the fast path -> (EncoderOutput, engine_state_next or None when offline).

    ``engine_state`` is the previous step's ``engine_state_next`` for exactly these caches, or None (then the
    cached frames' keys/values are projected from ``cache_last_channel``)."""
    cfg, ops = model.cfg, _Ops(backend)
    streaming = cache_last_channel is not None
    sp = streaming_params(cfg, model.att_context_size)
    drop = sp.drop_extra_pre_encoded if streaming else 0
    length = np.asarray(length, dtype=np.int64)
    x, length = pre_encode_fast(np.ascontiguousarray(audio_signal.transpose(0, 2, 1)), length,
                                model.layout["pre_encode"], subsampling_factor=cfg.subsampling_factor, ops=ops,
                                keep_from=0 if taps is not None else drop)
    if taps is not None:
        taps["encoder.pre_encode/output"] = x
        x = x[:, drop:]
    length = np.maximum(length - drop, 0)
    b, t, d = x.shape
    c = cache_last_channel.shape[2] if streaming else 0
    if cfg.xscaling:
        x = x * x.dtype.type(math.sqrt(cfg.d_model))
    pad_mask, att_mask = make_masks(length, cache_last_channel_len if streaming else None, n_frames=t,
                                    cache_size=c, att_context_size=model.att_context_size)
    if taps is not None:
        taps["encoder.pos_enc/output"] = x
    pos_t, pos_off = positions_for(model, c + t)

    # This step's keys/values [cache ‖ chunk] per layer; the next engine_state is their last C columns/rows.
    k_all = np.empty((b, cfg.n_layers, cfg.n_heads, cfg.d_k, c + t), x.dtype)
    v_all = np.empty((b, cfg.n_layers, cfg.n_heads, c + t, cfg.d_k), x.dtype)
    if streaming:
        if engine_state is None or any(k not in engine_state for k in ENGINE_STATE_KEYS):
            engine_state = dict(zip(ENGINE_STATE_KEYS, project_cached_kv(cache_last_channel, model.layout, cfg)))
        k_all[..., :c] = engine_state["linear_k"]
        v_all[:, :, :, :c] = engine_state["linear_v"]
        ccn = np.empty_like(cache_last_channel)  # last C rows of [cache ‖ chunk] per layer
        keep = max(c - t, 0)
        ccn[:, :, :keep] = cache_last_channel[:, :, c - keep:]
        ctn = np.empty_like(cache_last_time)
    else:
        ctn = np.zeros((b, cfg.n_layers, d, cfg.cache_last_time_size), x.dtype)  # causal zero padding

    for i in range(cfg.n_layers):
        name = f"encoder.layers.{i}"
        if taps is not None:
            taps[f"{name}/input"] = x
        x, a, ctn[:, i] = fast_conformer_layer(
            x, model.layout["layers"][str(i)], layer=i, cache_time=ctn[:, i] if not streaming else cache_last_time[:, i],
            k_all=k_all, v_all=v_all, pos_t=pos_t, pos_off=pos_off, att_mask=att_mask, pad_mask=pad_mask,
            conv_norm_type=cfg.conv_norm_type, ops=ops, taps=taps, name=name)
        if taps is not None:
            taps[f"{name}/output"] = x
        if streaming:
            ccn[:, i, keep:] = a[:, t - (c - keep):]

    outputs = np.ascontiguousarray(x.transpose(0, 2, 1))  # [B, d, T]
    if not streaming:
        return EncoderOutput(outputs, length, None, None, None), None
    out = EncoderOutput(
        outputs=np.ascontiguousarray(outputs[:, :, : sp.valid_out_len]),
        encoded_lengths=np.minimum(length, sp.valid_out_len),
        cache_last_channel_next=ccn, cache_last_time_next=ctn,
        cache_last_channel_next_len=np.minimum(np.asarray(cache_last_channel_len, np.int64) + t, c))
    return out, {"linear_k": k_all[..., t:], "linear_v": v_all[:, :, :, t:]}


class FastRefimplEngine(RefimplEngine):
    """refimpl's fast path behind the engine interface (``refimpl.engines``): the encoder runs
    ``fast_encoder_step`` and carries the projected keys/values in ``engine_state``; CTC and the RNNT
    prediction/joint networks are ``RefimplEngine``'s. ``backend`` "numba" (kernels) or "numpy" (their NumPy
    twins, no Numba). ``layout`` (from ``weights_tools.layouts``) skips the conversion, and then ``weights`` needs
    no "encoder" entry. The engine keeps no NeMo-layout copy of the encoder weights."""

    def __init__(self, config, weights, *, att_context_size=None, backend: str = "numba", dtype=np.float32,
                 layout=None):
        from weights_tools.layouts import encoder_layout

        rest = {k: v for k, v in weights.items() if k != "encoder"}
        super().__init__(config, rest, att_context_size=att_context_size, backend=backend, dtype=dtype)
        if layout is None:
            layout = encoder_layout(weights["encoder"], self.config.encoder, self.dtype)
        self.model = make_fast_encoder(layout, self.config.encoder, self.config.encoder.att_context_size, self.dtype)

    @classmethod
    def from_model(cls, path, **kwargs):
        """Load ``path`` (export folder, .onnx or .nemo) straight into the fast layout, tensor by tensor."""
        from weights_tools.layouts import load_layout

        config, rest, layout = load_layout(path, dtype=kwargs.get("dtype", np.float32))
        return cls(config, rest, layout=layout, **kwargs)

    def encoder(self, audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len,
                taps: dict | None = None, engine_state=None) -> dict:
        cast = lambda a: None if a is None else np.asarray(a, self.dtype)  # noqa: E731
        out, state = fast_encoder_step(cast(audio_signal), length, cast(cache_last_channel), cast(cache_last_time),
                                       cache_last_channel_len, engine_state, self.model, backend=self.backend,
                                       taps=taps)
        res = {"outputs": out.outputs, "encoded_lengths": out.encoded_lengths,
               "cache_last_channel_next": out.cache_last_channel_next,
               "cache_last_time_next": out.cache_last_time_next,
               "cache_last_channel_next_len": out.cache_last_channel_next_len}
        if state is not None:
            res["engine_state_next"] = state
        return res
