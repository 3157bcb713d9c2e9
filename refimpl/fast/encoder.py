"""refimpl's fast path: ``FastEncoder``, the ``EncoderOps`` that runs the same encoder step
(``refimpl.model.encoder.encoder_step``) restructured for speed.

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
   look-ahead (a shorter chunk's table is a slice of it: row r is relative position L-1-r).
3. **Weights in the layout the arithmetic wants** (``weights_tools.layouts``): matrices as contiguous 64-column
   panels of [in, out] (one BLAS call per panel: OpenBLAS's no-copy small-matrix kernel instead of repacking a
   whole weight matrix for a chunk of a few rows), linear_q/k/v fused into one [d, 3d] product, depthwise taps
   as [K, d], the pre_encode output projection reordered for channel-last input.
4. **Channel-last activations throughout**, pre_encode included, with the kernels of ``refimpl.fast.kernels``
   (``backend="numba"``) or their NumPy twins (``refimpl.fast.twins``, ``backend="numpy"``) where NumPy would
   loop in Python or make many temporaries: GLU + pad mask + depthwise conv + norm + swish, residual add +
   LayerNorm, the subsampling convs. Attention over the cache is NumPy on both backends (three BLAS products,
   rel_shift as a strided view, NumPy's vectorised exp), which measured faster than a Numba loop nest that may
   not reorder its sums (no fastmath).

Matrix products are ~75 % of a [70,13] chunk (OpenBLAS at 14 rows) and ~75 % of a [70,0] chunk (one pass over
every weight, memory-bound): see ``refimpl bench``, which also measures that memory floor.

engine_state (a dict of [B, ...] arrays, owned by this implementation):
  "linear_k"  [B, n_layers, H, d_k, C]  linear_k of each cached frame, keys transposed (d_k before time): the
                                         score product q @ k is then a plain [T, dk] x [dk, S] BLAS call
  "linear_v"  [B, n_layers, H, C, d_k]  linear_v of each cached frame
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from weights_tools import EncoderConfig, streaming_params
from weights_tools.schema import pre_encode_conv_indices

from ..model.attention import INF_VAL, rel_positional_encoding
from ..model.nn import layer_norm, relu
from ..model.rnnt import lstm_cell
from . import twins

BACKENDS = ("numba", "numpy")
ENGINE_STATE_KEYS = ("linear_k", "linear_v")
BAND_GROUP_BYTES = 8 << 20  # keys + values of the attention windows laid out at once in a block


def kernel_set(backend: str) -> SimpleNamespace:
    """The one place a backend is chosen: Numba kernels, or their NumPy twins (same signatures)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numba":
        from . import kernels  # imports Numba (0.6 s, ~65 MB): only a numba-backend run loads it

        return SimpleNamespace(
            conv_core=kernels.conv_module_core,
            residual_layer_norm=kernels.residual_layer_norm,
            layer_norm=kernels.layer_norm,
            conv2d=kernels.causal_conv2d_stride2,
            lstm_cell=kernels.lstm_cell,
        )
    return SimpleNamespace(
        conv_core=twins.conv_module_core,
        residual_layer_norm=twins.residual_layer_norm,
        layer_norm=layer_norm,
        conv2d=twins.causal_conv2d_stride2,
        lstm_cell=lstm_cell,
    )


UNPANEL_ROWS = 256  # from this many rows on (blocks), one product with the whole matrix beats one per panel


def linear_p(x, params: dict, *, bias: bool = True):
    """``nn.linear`` on a column-panel weight (weights_tools.layouts): x [..., in] -> [..., out] = x @ W (+ bias).
    For a few rows (a step), one BLAS product per panel, written straight into its columns of the result; from
    ``UNPANEL_ROWS`` rows on (a block), the panels are laid side by side again (a copy of the matrix, kept only for
    this product) and multiplied at once: BLAS then packs x once instead of once per panel (measured 20-35 %
    faster at 742 rows of the 114M model)."""
    w_p = params["weight_p"]  # [P, in, nb]
    p, _, nb = w_p.shape
    x2 = x.reshape(-1, x.shape[-1])
    y = np.empty((x2.shape[0], p * nb), np.result_type(x.dtype, w_p.dtype))
    if x2.shape[0] >= UNPANEL_ROWS:
        np.matmul(x2, w_p.transpose(1, 0, 2).reshape(w_p.shape[1], p * nb), out=y)
    else:
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


def cached_rel_pos_attention(qkv, params, k_all, v_all, layer: int, pos_t, pos_off: int, att_mask):
    """``RelPositionMultiHeadAttention`` over [cache ‖ chunk] with the projected keys/values of the cache given.

    qkv [B, T, 3d] = x @ W_qkv (bias not yet added); k_all [B, L, H, dk, C+T] and v_all [B, L, H, C+T, dk] hold
    layer ``layer``'s cached keys/values in their first C columns/rows: this writes the chunk's after them.
    pos_t [L, H, dk, P] precomputed linear_pos(pos_emb), used from column ``pos_off`` on; att_mask [B, T, C+T]
    True = masked -> context [B, T, d] (before linear_out).

    The arithmetic of ``attention.rel_pos_attention_core`` with three batched BLAS products; rel_shift is a strided
    view (score (i, j) reads column j + T-1-i of q_v @ p, as NeMo's pad-and-reshape does), softmax in place.
    """
    b, t, d3 = qkv.shape
    h, dk = params["pos_bias_u"].shape
    s = k_all.shape[-1]
    qkv = (qkv + params["linear_qkv"]["bias"]).reshape(b, t, 3, h, dk)
    k_all[:, layer, :, :, s - t :] = qkv[:, :, 1].transpose(0, 2, 3, 1)
    v_all[:, layer, :, s - t :] = qkv[:, :, 2].transpose(0, 2, 1, 3)
    q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # [B, H, T, dk]
    scores = (q + params["pos_bias_u"][:, None]) @ k_all[:, layer]  # matrix_ac [B, H, T, S]
    bd = (q + params["pos_bias_v"][:, None]) @ pos_t[layer, :, :, pos_off : pos_off + 2 * s - 1]  # [B, H, T, 2S-1]
    st = bd.strides  # rel_shift: row i of the view starts at column T-1-i of bd's row i
    scores += np.ndarray(
        scores.shape, bd.dtype, buffer=bd, offset=(t - 1) * st[3], strides=(st[0], st[1], st[2] - st[3], st[3])
    )
    scores /= math.sqrt(dk)
    mask = att_mask[:, None]  # [B, 1, T, S]
    np.copyto(scores, -INF_VAL, where=mask)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    np.copyto(scores, 0.0, where=mask)
    return (scores @ v_all[:, layer]).transpose(0, 2, 1, 3).reshape(b, t, d3 // 3)


def banded_rel_pos_attention(qkv, params, k_all, v_all, layer: int, pos_t, pos_off: int, att_mask, band: int):
    """``cached_rel_pos_attention`` for a block of N chunks of ``band`` frames: query chunk n attends only to its
    window, keys [n*band, n*band + C + band) of [cache ‖ block] -- every key the chunked_limited mask lets it see
    when C is a multiple of ``band`` -- with the step's positional table (the relative positions of a window are a
    step's). qkv [B, N*band, 3d] (bias not yet added), k_all [B, L, H, dk, C+N*band], v_all [B, L, H, C+N*band,
    dk] (cached columns filled), att_mask [B, N*band, C+N*band] (NeMo's mask of the whole block) -> context
    [B, N*band, d]. Scores are [N, band, C+band] per head instead of [N*band, C+N*band]. The windows overlap
    ((C+band)/band copies of every key), so they are laid out a group of chunks at a time, about
    ``BAND_GROUP_BYTES`` of keys and values per group (at [70,0] all 768 windows at once would take 224 MB)."""
    b, nt, d3 = qkv.shape
    h, dk = params["pos_bias_u"].shape
    t, n = band, nt // band
    s_all = k_all.shape[-1]
    c = s_all - nt
    w = c + t  # keys per window
    qkv = (qkv + params["linear_qkv"]["bias"]).reshape(b, nt, 3, h, dk)
    k_all[:, layer, :, :, c:] = qkv[:, :, 1].transpose(0, 2, 3, 1)
    v_all[:, layer, :, c:] = qkv[:, :, 2].transpose(0, 2, 1, 3)
    q = qkv[:, :, 0].reshape(b, n, t, h, dk).transpose(0, 3, 1, 2, 4)  # [B, H, N, T, dk]
    out = np.empty((b, n, t, h, dk), qkv.dtype)
    group = max(1, BAND_GROUP_BYTES // (2 * b * h * w * dk * qkv.dtype.itemsize))
    for n0 in range(0, n, group):
        n1 = min(n, n0 + group)
        out[:, n0:n1] = _band_windows(q[:, :, n0:n1], params, k_all[:, layer], v_all[:, layer], pos_t[layer],
                                      pos_off, att_mask, t, c, n0, n1)  # fmt: skip
    return out.reshape(b, nt, h * dk)


def _band_windows(q, params, kl, vl, pos_l, pos_off: int, att_mask, t: int, c: int, n0: int, n1: int):
    """Chunks [n0, n1) of ``banded_rel_pos_attention``: q [B, H, G, T, dk], kl [B, H, dk, S], vl [B, H, S, dk]
    -> context [B, G, T, H, dk]."""
    b, h, n, _, dk = q.shape
    w = c + t
    kl, vl = kl[..., n0 * t :], vl[:, :, n0 * t :]
    att_mask = att_mask[:, n0 * t : n1 * t, n0 * t :]
    k_win = np.ascontiguousarray(
        np.lib.stride_tricks.as_strided(
            kl, (b, h, n, dk, w), (kl.strides[0], kl.strides[1], t * kl.strides[3], kl.strides[2], kl.strides[3])
        )
    )
    v_win = np.ascontiguousarray(
        np.lib.stride_tricks.as_strided(
            vl, (b, h, n, w, dk), (vl.strides[0], vl.strides[1], t * vl.strides[2], vl.strides[2], vl.strides[3])
        )
    )
    ms = att_mask.strides  # window n of the mask: rows n*t.., columns n*t..
    mask = np.lib.stride_tricks.as_strided(att_mask, (b, n, t, w), (ms[0], t * (ms[1] + ms[2]), ms[1], ms[2]))
    mask = mask[:, None]  # [B, 1, N, T, W]
    scores = (q + params["pos_bias_u"][:, None, None]) @ k_win  # matrix_ac [B, H, N, T, W]
    pos = pos_l[:, None, :, pos_off : pos_off + 2 * w - 1]  # [H, 1, dk, 2W-1]
    bd = np.ascontiguousarray((q + params["pos_bias_v"][:, None, None]) @ pos)  # [B, H, N, T, 2W-1]
    st = bd.strides  # rel_shift: row i of the view starts at column T-1-i of bd's row i
    scores += np.ndarray(
        scores.shape, bd.dtype, buffer=bd, offset=(t - 1) * st[4], strides=(st[0], st[1], st[2], st[3] - st[4], st[4])
    )
    scores /= math.sqrt(dk)
    np.copyto(scores, -INF_VAL, where=mask)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    np.copyto(scores, 0.0, where=mask)
    return (scores @ v_win).transpose(0, 2, 3, 1, 4)


def positional_projections(layout: dict, cfg: EncoderConfig, length: int, dtype) -> tuple:
    """(pos_emb [2L-1, d], linear_pos(pos_emb) of every layer [n_layers, H, dk, 2L-1]) for relative positions
    length-1 .. -(length-1)."""
    pe = rel_positional_encoding(length, cfg.d_model, dtype)  # [2L-1, d]
    out = np.empty((cfg.n_layers, cfg.n_heads, cfg.d_k, pe.shape[0]), dtype)
    for i in range(cfg.n_layers):
        p = pe @ layout["layers"][str(i)]["self_attn"]["linear_pos"]["weight_t"]  # [2L-1, d]
        out[i] = p.reshape(-1, cfg.n_heads, cfg.d_k).transpose(1, 2, 0)
    return pe, out


def project_cached_kv(cache_last_channel, layout: dict, cfg: EncoderConfig):
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


@dataclass(frozen=True)
class FastAttention:
    """This step's attention state: the projected keys/values of the cached frames, the next step's (each layer
    writes its own when it has run) and the positional tables."""

    k_cache: np.ndarray | None  # [B, n_layers, H, dk, C] keys of the cached frames (None offline)
    v_cache: np.ndarray | None  # [B, n_layers, H, C, dk]
    k_next: np.ndarray | None  # [B, n_layers, H, dk, C] the last C keys of [cache ‖ frames]: engine_state_next
    v_next: np.ndarray | None  # [B, n_layers, H, C, dk]
    pos_emb: np.ndarray  # [2(C+T)-1, d] (a slice of the precomputed table)
    pos_t: np.ndarray  # [n_layers, H, dk, P] linear_pos(pos_emb) of a table at least this long
    pos_off: int  # first column of pos_t for this step
    n_frames: int  # T
    streaming: bool
    band: int | None = None  # a block of chunks of this many frames: attention per chunk window


class FastEncoder:
    """``EncoderOps`` of the fast path. ``layout`` = ``weights_tools.layouts.encoder_layout(...)``; the positional
    projections are precomputed for the longest chunk of ``att_context_size``."""

    def __init__(
        self, layout: dict, cfg: EncoderConfig, att_context_size=None, *, backend: str = "numba", dtype=np.float32
    ):
        self.layout, self.cfg, self.backend = layout, cfg, backend
        self.att_context_size = tuple(att_context_size if att_context_size is not None else cfg.att_context_size)
        self.k = kernel_set(backend)
        sp = streaming_params(cfg, self.att_context_size)
        self.frames_per_chunk = sp.valid_out_len
        self.pos_len = sp.last_channel_cache_size + int(sp.encoder_frames(sp.window))
        self.pos_emb, self.pos_t = positional_projections(layout, cfg, self.pos_len, np.dtype(dtype))

    def layer_params(self, i: int) -> dict:
        return self.layout["layers"][str(i)]

    def pre_encode(self, x, length):
        """``subsampling.pre_encode`` channel-last: x [B, T, feat_in] -> (y [B, T', d_model], length')."""
        conv = self.layout["pre_encode"]["conv"]
        h = x
        for i, kind in pre_encode_conv_indices(self.cfg.subsampling_factor):
            p = conv[str(i)]
            if kind == "conv":  # [B, T, F, 1] -> [B, T1, F1, C]
                h, length = self.k.conv2d(np.ascontiguousarray(h)[..., None], length, p, relu=True)
            elif kind == "depthwise":  # rows >= length zeroed
                h, length = self.k.conv2d(h, length, p, relu=False)
            else:  # 1x1 conv over channels, then ReLU of the valid rows
                keep = (np.arange(h.shape[1])[None, :] < length[:, None])[:, :, None, None]
                h = relu(linear_p(h, p) * keep.astype(h.dtype))
        b, t, f, c = h.shape
        return linear_p(h.reshape(b, t, f * c), self.layout["pre_encode"]["out"]), length

    def attention_state(self, cache_last_channel, engine_state, x):
        cfg = self.cfg
        streaming = cache_last_channel is not None
        b, n_frames, _ = x.shape
        dtype = x.dtype
        c = cache_last_channel.shape[2] if streaming else 0
        length = c + n_frames
        t = self.frames_per_chunk
        band = t if streaming and n_frames > t and n_frames % t == 0 and c % t == 0 else None
        window = c + t if band else length
        if window <= self.pos_len:
            pos_emb, pos_t, off = self.pos_emb, self.pos_t, self.pos_len - window
        else:  # a longer chunk than the look-ahead's (an offline call): a table of its own
            (pos_emb, pos_t), off = positional_projections(self.layout, cfg, window, dtype), 0
        k_cache = v_cache = k_next = v_next = None
        if streaming:
            if engine_state is None or any(k not in engine_state for k in ENGINE_STATE_KEYS):
                engine_state = dict(zip(ENGINE_STATE_KEYS, project_cached_kv(cache_last_channel, self.layout, cfg)))
            k_cache, v_cache = engine_state["linear_k"], engine_state["linear_v"]
            k_next, v_next = np.empty_like(k_cache, dtype=dtype), np.empty_like(v_cache, dtype=dtype)
        return FastAttention(
            k_cache, v_cache, k_next, v_next, pos_emb[off : off + 2 * window - 1], pos_t, off, n_frames, streaming, band
        )

    def norm(self, x, params):
        return self.k.layer_norm(x, params)

    def add_norm(self, residual, h, factor, params):
        # the kernel updates its first argument in place: give it a copy, never the caller's array
        return self.k.residual_layer_norm(np.array(residual, order="C"), h, factor, params)

    def feed_forward(self, x, params):
        return linear_p(swish_(linear_p(x, params["linear1"])), params["linear2"])

    def self_attn(self, x, i, attention, att_mask):
        sa = self.layer_params(i)["self_attn"]
        qkv = linear_p(x, sa["linear_qkv"], bias=False)  # the bias is added inside, once
        a, cfg = attention, self.cfg
        b, t, _ = x.shape
        c = 0 if a.k_cache is None else a.k_cache.shape[-1]
        k_all = np.empty((b, 1, cfg.n_heads, cfg.d_k, c + t), qkv.dtype)  # this layer's [cache ‖ frames]
        v_all = np.empty((b, 1, cfg.n_heads, c + t, cfg.d_k), qkv.dtype)
        if c:
            k_all[:, 0, :, :, :c], v_all[:, 0, :, :c] = a.k_cache[:, i], a.v_cache[:, i]
        pos_t = a.pos_t[i : i + 1]
        if a.band:
            ctx = banded_rel_pos_attention(qkv, sa, k_all, v_all, 0, pos_t, a.pos_off, att_mask, a.band)
        else:
            ctx = cached_rel_pos_attention(qkv, sa, k_all, v_all, 0, pos_t, a.pos_off, att_mask)
        if c:
            a.k_next[:, i], a.v_next[:, i] = k_all[:, 0, :, :, t:], v_all[:, 0, :, t:]
        return linear_p(ctx, sa["linear_out"])

    def conv(self, x, cache, pad_mask, params):
        h2 = linear_p(x, params["pointwise_conv1"])  # [B, T, 2d]
        h, g = self.k.conv_core(h2, pad_mask, cache, params, norm_type=self.cfg.conv_norm_type)
        return linear_p(h, params["pointwise_conv2"]), g

    def engine_state_next(self, attention):
        if not attention.streaming:
            return None
        return {"linear_k": attention.k_next, "linear_v": attention.v_next}
