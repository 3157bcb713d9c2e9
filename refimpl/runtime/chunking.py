"""The chunk schedule: which mel frames each streaming step takes, per stream.

NeMo's ``CacheAwareStreamingAudioBuffer`` with ``pad_and_drop_preencoded=True`` -- the only schedule an ONNX
encoder supports, because the drop of the extra pre-encoded frames is baked into the graph. The numbers it
walks by (chunk size, pre-encode cache, minimum last chunk) are ``weights_tools.StreamingParams``, computed
once from the config. Both engines (refimpl and onnxruntime) use this module, so any difference between them
is in the model arithmetic, never in chunking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weights_tools import StreamingParams


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
    chunks: list[Chunk] = []
    k = 0
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
