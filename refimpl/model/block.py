"""Block evaluation: N consecutive chunks of a stream in ONE pass, with the per-chunk results the step gives.

Why it is exact. NeMo's cache-aware streaming (``pad_and_drop_preencoded``) of chunks k0..k1 equals one pass
over [the pre-encode cache of chunk k0 ‖ the new mel frames of every chunk]:

- pre_encode is causal: after the drop of the first ``drop_extra_pre_encoded`` (2) subsampled frames, every
  frame of a chunk depends only on real mel frames of that chunk and the s+1 before it, so one pass over the
  concatenated frames gives each chunk's frames, and 9 + s*(R+1)*N mel frames give (R+1)*N encoder frames;
- the conformer layers see [cache ‖ frames] with NeMo's chunked_limited mask (``attention.make_masks``): query
  frames of chunk n attend to their own chunk and ``left // (R+1)`` chunks before it, which are exactly the C
  cache rows the step would hold -- when C is a multiple of R+1 (true for every trained mode seen; otherwise
  the block is refused and the driver steps);
- the depthwise conv is causal: one pass over [cache ‖ frames] is the chunk-by-chunk conv with carried caches;
- the caches after chunk n are the last C rows of [cache ‖ attention inputs up to chunk n's end] and the last
  K-1 columns of [cache ‖ conv inputs up to chunk n's end], per layer; the cache length grows by R+1 per chunk.

So the weights of each layer are read once for the whole block, in products of N*(R+1) rows. A block here
holds only full chunks of streams that all take part (the driver steps the last, partial chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weights_tools import streaming_params

from . import taps as tap_names
from .attention import rel_positional_encoding
from .encoder import EncoderOps, EncoderOutput, EncoderPass, _recorder, encoder_pass, last_frames

PRE_ENCODE_FRAMES = 512  # new mel frames per pre-encode piece of a block (~10 MB of conv activations at x8)


class BlockNotExact(ValueError):
    """A look-ahead whose left context is not a whole number of chunks: a block would not equal the steps."""


def check_block_exact(ops: EncoderOps) -> None:
    sp = streaming_params(ops.cfg, ops.att_context_size)
    left, right = sp.att_context_size
    if left % (right + 1):
        raise BlockNotExact(
            f"att_context_size {[left, right]}: the left context {left} is not a multiple of the chunk of {right + 1} "
            f"frames, so the chunked_limited mask of one pass would not see what the streaming cache holds; "
            f"evaluate chunk by chunk (order 'step')"
        )


@dataclass(frozen=True)
class BlockOutput:
    """One pass over N full chunks, and every chunk's encoder outputs cut from it (``chunk``)."""

    pass_: EncoderPass
    n_chunks: int
    frames_per_chunk: int  # encoder frames per chunk (R + 1)
    cache_last_channel: np.ndarray  # [B, n_layers, C, d] the caches the block started from
    cache_last_channel_len: np.ndarray  # [B]
    taps: dict | None  # block-wide taps ([B, N*T, d]) when asked
    edge_taps: list | None  # per chunk, the pre_encode frames the drop removes ([B, 2, d]) when taps were asked
    engine_state_next: dict | None

    def chunk(self, n: int, *, caches: bool = True) -> EncoderOutput:
        """Chunk n's outputs exactly as ``encoder_step`` gives them; ``caches=False`` leaves the caches out (None)
        for chunks whose caches nobody reads (the driver needs them only at the block's end)."""
        t, p = self.frames_per_chunk, self.pass_
        c = self.cache_last_channel.shape[2]
        end = (n + 1) * t
        outputs = np.ascontiguousarray(p.x[:, n * t : end].transpose(0, 2, 1))
        lengths = np.full(p.x.shape[0], t, np.int64)
        cache_len = np.minimum(np.asarray(self.cache_last_channel_len, np.int64) + end, c)
        if not caches:
            return EncoderOutput(outputs, lengths, None, None, cache_len)
        k = p.conv_caches.shape[3]
        a0, g0 = max(0, end - c), max(0, end - k)  # the frames the caches after chunk n are cut from
        ka, kg = p.kept_from["att_in"], p.kept_from["conv_in"]
        if a0 < ka or g0 < kg:
            raise ValueError(f"chunk {n}'s caches were not kept: evaluate the block with caches='all'")
        ccn = np.stack(
            [
                last_frames(self.cache_last_channel[:, i], a[:, a0 - ka : end - ka], axis=1)
                for i, a in enumerate(p.att_in)
            ],
            axis=1,
        )
        ctn = np.stack(
            [last_frames(p.conv_caches[:, i], g[:, :, g0 - kg : end - kg], axis=2) for i, g in enumerate(p.conv_in)],
            axis=1,
        )
        return EncoderOutput(outputs, lengths, ccn, ctn, cache_len)

    def chunk_taps(self, n: int) -> dict:
        """Chunk n's taps as the step records them: the block's taps cut to the chunk, pre_encode with the two
        frames the drop removes, pos_emb for [cache ‖ chunk]."""
        assert self.taps is not None and self.edge_taps is not None
        t = self.frames_per_chunk
        out = {}
        for name, v in self.taps.items():
            if name == tap_names.PRE_ENCODE:
                drop = self.edge_taps[n].shape[1]
                out[name] = np.concatenate([self.edge_taps[n], v[:, drop + n * t : drop + (n + 1) * t]], axis=1)
            elif name == tap_names.POS_EMB:
                c = self.cache_last_channel.shape[2]
                out[name] = rel_positional_encoding(c + t, v.shape[1], v.dtype)
            else:
                out[name] = v[:, n * t : (n + 1) * t]
        return out


def pre_encode_pieces(audio_signal, n_chunks: int, ops: EncoderOps, sp) -> tuple:
    """The pre-encode of a block, [B, feat_in, s+1 + N*w] -> ([B, drop + N*(R+1), d], lengths), computed a piece of
    about ``PRE_ENCODE_FRAMES`` new mel frames at a time. Each piece is fed with the s+1 mel frames before it, as a
    chunk is, and its first ``drop`` outputs (which see the piece's zero padding) are dropped: every kept output's
    receptive field lies inside the frames given, so the pieces give what one pass gives, in a fraction of the
    memory (the first stride-2 conv's activations over a whole block at x8 are [256, T/2, 40] floats: ~220 MB)."""
    pre, width, drop = sp.pre_encode_cache_size, sp.chunk_size, sp.drop_extra_pre_encoded
    b = audio_signal.shape[0]
    step = max(1, PRE_ENCODE_FRAMES // width)
    parts: list = []
    for s in range(0, n_chunks, step):
        e = min(n_chunks, s + step)
        seg = audio_signal[:, :, s * width : pre + e * width]
        y, _ = ops.pre_encode(seg.transpose(0, 2, 1), np.full(b, seg.shape[2], np.int64))
        parts.append(y if not parts else y[:, drop:])
    x = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return x, np.full(b, x.shape[1], np.int64)


def encoder_block(
    audio_signal,
    n_chunks: int,
    cache_last_channel,
    cache_last_time,
    cache_last_channel_len,
    ops: EncoderOps,
    *,
    engine_state: dict | None = None,
    taps: bool = False,
    caches: str = "all",
) -> BlockOutput:
    """audio_signal [B, feat_in, s+1 + N*s*(R+1)]: the pre-encode cache of the first chunk, then the new mel frames
    of N full chunks of every stream -> BlockOutput. ``taps``: also record what ``chunk_taps`` needs.
    ``caches``: "all" keeps what every chunk's caches are cut from; "last" only the last chunk's (memory)."""
    check_block_exact(ops)
    sp = streaming_params(ops.cfg, ops.att_context_size)
    pre, width = sp.pre_encode_cache_size, sp.chunk_size
    if audio_signal.shape[2] != pre + n_chunks * width:
        raise ValueError(
            f"a block of {n_chunks} chunks takes {pre} + {n_chunks} x {width} mel frames, got {audio_signal.shape[2]}"
        )
    b = audio_signal.shape[0]
    block_taps: dict | None = {} if taps else None
    p = encoder_pass(
        audio_signal,
        np.full(b, audio_signal.shape[2], np.int64),
        cache_last_channel,
        cache_last_time,
        cache_last_channel_len,
        ops,
        pre_encoded=pre_encode_pieces(audio_signal, n_chunks, ops, sp),
        engine_state=engine_state,
        record=_recorder(block_taps),
        keep="all" if caches == "all" else "tails",
    )
    if p.x.shape[1] != n_chunks * sp.valid_out_len:
        raise AssertionError(f"{n_chunks} chunks gave {p.x.shape[1]} frames, not {n_chunks} x {sp.valid_out_len}")
    edges = None
    if taps:  # the frames the drop removes depend only on each chunk's s+1 pre-encode frames
        drop = sp.drop_extra_pre_encoded
        edges = []
        for n in range(n_chunks):
            x = audio_signal[:, :, n * width : n * width + pre].transpose(0, 2, 1)
            edges.append(ops.pre_encode(x, np.full(b, pre, np.int64))[0][:, :drop])
    return BlockOutput(
        p,
        n_chunks,
        sp.valid_out_len,
        cache_last_channel,
        np.asarray(cache_last_channel_len),
        block_taps,
        edges,
        ops.engine_state_next(attention=p.attention),
    )
