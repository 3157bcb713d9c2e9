"""The streaming numbers of one look-ahead, computed once from the encoder config.

NeMo's ``ConformerEncoder.setup_streaming_params`` for ``att_context_style: chunked_limited`` (no chunk_size
override) with causal ``dw_striding`` subsampling, in the ``pad_and_drop_preencoded`` schedule of
``CacheAwareStreamingAudioBuffer`` -- the only schedule an ONNX encoder supports, because the drop of the extra
pre-encoded frames is baked into the graph. Every other module (refimpl's chunking, contracts, checks, the fast
path, ``weights-tools inspect``) reads these numbers from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import EncoderConfig


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

    def encoder_frames(self, mel_frames) -> np.ndarray:
        """Encoder frames one call gives for ``mel_frames`` frames in (pre-encode frames included): the
        subsampled length minus the drop, at least 0 (works on arrays)."""
        return np.maximum(subsampled_length(mel_frames, self.subsampling_factor) - self.drop_extra_pre_encoded, 0)

    def describe(self) -> str:
        s, r = self.subsampling_factor, self.att_context_size[1]
        return (
            f"att_context_size {list(self.att_context_size)}: {self.chunk_size} new mel frames per chunk "
            f"(= {s} x ({r} + 1)), plus {self.pre_encode_cache_size} pre-encode frames (= {s} + 1) "
            f"-> {self.window} frames in, {self.valid_out_len} encoder frames out (= {r} + 1) after dropping "
            f"{self.drop_extra_pre_encoded}; cache_last_channel keeps {self.last_channel_cache_size} frames, "
            f"cache_last_time {self.conv_cache_size}"
        )


def streaming_params(encoder: EncoderConfig, att_context_size=None) -> StreamingParams:
    """StreamingParams for ``att_context_size`` (default: the one the encoder config serves)."""
    left, right = att_context_size if att_context_size is not None else encoder.att_context_size
    s = encoder.subsampling_factor
    pre = s + 1  # causal dw_striding: ConvSubsampling.get_streaming_cache_size() = [0, s+1]
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
        conv_cache_size=encoder.conv_context_size[0],
        att_chunk_size=right + 1,
        att_left_chunks=left // (right + 1),
    )


def subsampled_length(n, factor: int):
    """Frames after the causal dw_striding stack: n -> floor(n/2) + 1 per stride-2 stage (works on arrays)."""
    n = np.asarray(n, dtype=np.int64)
    for _ in range(int(factor).bit_length() - 1):
        n = n // 2 + 1
    return n
