"""Streaming arithmetic: chunk sizes, pre-encode cache and valid output lengths for one look-ahead.

Derived from the encoder config the way NeMo's ``ConformerEncoder.setup_streaming_params`` does for
``att_context_style: chunked_limited`` (no chunk_size override), and the chunk schedule of NeMo's
``CacheAwareStreamingAudioBuffer`` with ``pad_and_drop_preencoded=True`` — the only schedule an ONNX encoder
supports, because the drop of the extra pre-encoded frames is baked into the graph. Both engines (refimpl and
onnxruntime) use this module, so any difference between them is in the model arithmetic, never in chunking.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StreamingParams:
    att_context_size: tuple  # (left, right) encoder frames
    subsampling_factor: int  # s
    chunk_size: int  # new mel frames per chunk = s * (right + 1)   (NeMo chunk_size[1])
    shift_size: int  # mel frames the buffer advances per chunk (= chunk_size, cache_drop_size 0)
    pre_encode_cache_size: int  # mel frames of left context re-fed each chunk = s + 1   (NeMo [0, s+1][1])
    drop_extra_pre_encoded: int  # subsampled frames dropped after pre_encode = 1 + (s+1-1)//s = 2
    valid_out_len: int  # encoder frames per chunk = right + 1
    last_channel_cache_size: int  # rows of cache_last_channel = left
    conv_cache_size: int  # columns of cache_last_time = conv left context
    att_chunk_size: int  # chunked_limited mask: chunk of right + 1 frames ...
    att_left_chunks: int  # ... seeing left // (right + 1) chunks to its left

    @property
    def window(self) -> int:
        """Mel frames per encoder call: pre-encode cache + new frames (121 for [70,13] at x8)."""
        return self.pre_encode_cache_size + self.chunk_size

    @property
    def min_new_frames(self) -> int:
        """A chunk after the first with fewer new mel frames than this is not run (NeMo's sampling_frames)."""
        return self.subsampling_factor

    def describe(self) -> str:
        s, r = self.subsampling_factor, self.att_context_size[1]
        return (f"att_context_size {list(self.att_context_size)}: {self.chunk_size} new mel frames per chunk "
                f"(= {s} x ({r} + 1)), plus {self.pre_encode_cache_size} pre-encode frames (= {s} + 1) "
                f"-> {self.window} frames in, {self.valid_out_len} encoder frames out (= {r} + 1) after dropping "
                f"{self.drop_extra_pre_encoded}; cache_last_channel keeps {self.last_channel_cache_size} frames, "
                f"cache_last_time {self.conv_cache_size}")


def streaming_params(encoder_cfg, att_context_size=None) -> StreamingParams:
    """StreamingParams for ``att_context_size`` (default: the one the encoder config serves)."""
    left, right = att_context_size if att_context_size is not None else encoder_cfg.att_context_size
    s = encoder_cfg.subsampling_factor
    pre = s + 1  # dw_striding with causal_downsampling: ConvSubsampling.get_streaming_cache_size() = [0, s+1]
    chunk = s * (right + 1)
    return StreamingParams(
        att_context_size=(int(left), int(right)),
        subsampling_factor=s,
        chunk_size=chunk,
        shift_size=chunk,
        pre_encode_cache_size=pre,
        drop_extra_pre_encoded=1 + (pre - 1) // s,
        valid_out_len=(chunk - s) // s + 1,
        last_channel_cache_size=int(left),
        conv_cache_size=encoder_cfg.conv_context_size[0],
        att_chunk_size=right + 1,
        att_left_chunks=left // (right + 1),
    )


def subsampled_length(n, factor: int):
    """Frames after the causal dw_striding stack: n -> floor(n/2) + 1 per stride-2 stage (works on arrays)."""
    n = np.asarray(n, dtype=np.int64)
    for _ in range(int(np.log2(factor))):
        n = n // 2 + 1
    return n


@dataclass(frozen=True)
class Chunk:
    """One step of the schedule: for each stream, mel frames [start, start + n_new) are new this step."""

    index: int
    start: int  # first new mel frame (same for every stream: streams advance together)
    n_new: np.ndarray  # [B] new frames per stream; 0 = the stream takes no part in this step
    width: int  # max(n_new): columns of new frames in the batched chunk


def chunk_schedule(mel_lengths, params: StreamingParams) -> list:
    """NeMo's pad_and_drop_preencoded schedule, applied per stream.

    Step k covers new frames [k*chunk_size, (k+1)*chunk_size). A stream takes part while it has frames left;
    after its first chunk, a remainder shorter than ``min_new_frames`` is not run (NeMo's
    ``CacheAwareStreamingAudioBuffer`` stops there too: too few frames to give one output after subsampling).
    Applying the rule per stream makes a batch give the same result as each stream alone.
    """
    lengths = np.asarray(mel_lengths, dtype=np.int64).reshape(-1)
    chunks, k = [], 0
    while True:
        start = k * params.shift_size
        n_new = np.clip(lengths - start, 0, params.chunk_size)
        too_short = n_new < (1 if k == 0 else params.min_new_frames)
        n_new = np.where(too_short, 0, n_new)
        if not n_new.any():
            return chunks
        chunks.append(Chunk(index=k, start=start, n_new=n_new, width=int(n_new.max())))
        k += 1


def dropped_tail_frames(mel_lengths, params: StreamingParams) -> np.ndarray:
    """[B] mel frames at the end of each stream that the schedule does not run (fewer than min_new_frames)."""
    lengths = np.asarray(mel_lengths, dtype=np.int64).reshape(-1)
    used = np.zeros_like(lengths)
    for c in chunk_schedule(lengths, params):
        used += c.n_new
    return lengths - used
