"""The classic deployment failure, reproduced on purpose: an export WITHOUT cache support run chunk by chunk.

A runtime that forgets ``cache_support`` gets an encoder that takes only ``audio_signal`` and ``length``. Fed
the chunks of a streaming schedule, every call starts from empty context: no left context from earlier chunks,
the subsampling and the convolutions restart from zero padding at each chunk's first frame. The decoder's state
is still carried across chunks (that part such runtimes usually get right), so what changes is the encoder
alone, and words at chunk borders are cut, doubled or lost. ``stream_stateless`` does exactly that, so the
damage can be measured (``tests/test_demo.py``, notebook 05); ``contract.stateless_message`` says why it happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.ctc import greedy_ctc
from ..model.rnnt import initial_rnnt_state
from ..runtime.streaming import greedy_over_decoder_joint


@dataclass(frozen=True)
class StatelessResult:
    tokens: list
    chunks: int
    chunk_frames: int  # mel frames per call


def stream_stateless(engine, mel: np.ndarray, chunk_frames: int, *, decoder: str = "rnnt") -> StatelessResult:
    """mel [feat_in, T] (NeMo's features, valid frames) in calls of ``chunk_frames`` mel frames (the last one
    shorter), each call with ``length`` = its frame count and no caches; every ``encoded_lengths`` frame of each
    call greedy-decoded, the decoder's state carried. ``engine``: any engine on a model (an ``OnnxEngine`` on a
    stateless export, or refimpl's with caches None: NeMo's offline forward)."""
    if decoder not in engine.heads:
        raise ValueError(f"the engine has no {decoder.upper()} head (it has: {', '.join(engine.heads)})")
    blank = engine.config.blank_id
    rnnt = initial_rnnt_state(engine.config.rnnt, 1, engine.dtype) if decoder == "rnnt" else None
    last = np.array([blank], np.int64)
    tokens: list = []
    n = mel.shape[1]
    calls = 0
    for start in range(0, n, chunk_frames):
        x = np.ascontiguousarray(mel[None, :, start : start + chunk_frames], engine.dtype)
        out = engine.encoder(x, np.array([x.shape[2]], np.int64), None, None, None)
        enc_len = np.asarray(out["encoded_lengths"]).reshape(1)
        if decoder == "rnnt":
            tk, _, rnnt = greedy_over_decoder_joint(engine, out["outputs"], enc_len, rnnt)
        else:
            lp = out["logprobs"] if "logprobs" in out else engine.ctc(out["outputs"])
            tk, _, _, last = greedy_ctc(lp, enc_len, last, blank_id=blank)
        tokens += tk[0]
        calls += 1
    return StatelessResult(tokens, calls, chunk_frames)
