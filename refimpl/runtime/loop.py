"""The one chunk loop: mel frames in, chunks through the encoder and the decoders, per-chunk results out.

``ChunkLoop`` holds a batch of streams' state and runs the chunks it is given, in one of two evaluation orders:

- ``"step"``: every chunk is one encoder call (``streaming.stream_step``), as NeMo and onnxruntime run it;
- ``"block"``: a run of consecutive full chunks of every stream goes through the encoder in ONE pass
  (``refimpl.model.block``: the same per-chunk results to float rounding, each layer's weights read once per
  block), then the decoders consume the block's frames chunk by chunk, carrying their state. A block is at most
  ``block_frames`` encoder frames long (memory stays bounded); the last, partial chunk of a stream is stepped.

``iter_stream`` feeds it whole mel arrays (a batch, NeMo's ``pad_and_drop_preencoded`` schedule per stream);
``refimpl.runtime.live`` feeds it frames as audio arrives. transcribe, crosscheck, golden and bench stream
through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..model.block import BlockNotExact
from .chunking import Chunk, chunk_schedule, dropped_tail_frames
from .streaming import (
    DECODERS,
    StepOutput,
    StreamState,
    Tokens,
    available_decoders,
    decode,
    initial_state,
    stream_step,
)

ORDERS = ("step", "block")
BLOCK_FRAMES = 768  # encoder frames per block: [768, d] x [d, 4d] products run at full BLAS speed on one core


class OrderError(ValueError):
    """An evaluation order the engine cannot run."""


def check_order(engine, order: str) -> None:
    if order not in ORDERS:
        raise OrderError(f"order must be one of {ORDERS}, got {order!r}")
    if order not in engine.orders:
        raise OrderError(
            f"the {engine.name} engine runs one chunk per call (an ONNX encoder is a step); block evaluation is "
            f"refimpl's: use --engine refimpl, or --order step"
        )


@dataclass
class ChunkLoop:
    """A batch of streams and its state; ``run(chunks)`` streams the given chunks and yields (chunk, step output,
    state after it). ``outputs="all"``: every chunk's outputs and caches as a step gives them (crosscheck,
    golden); ``"tokens"``: in block order, caches only where a block ends (state None inside a block)."""

    engine: object
    batch: int
    decoders: tuple = DECODERS
    order: str = "step"
    block_frames: int = BLOCK_FRAMES
    outputs: str = "all"
    taps_for: Callable[[int], bool] | None = None
    prepare: Callable[[Chunk, StreamState], StreamState] | None = None
    state: StreamState = field(init=False)
    notices: list = field(init=False, default_factory=list)

    def __post_init__(self):
        check_order(self.engine, self.order)
        if self.order == "block" and self.prepare is not None:
            raise OrderError("a prepare hook replaces the state before each step: evaluate with order 'step'")
        if self.order == "block":
            try:
                self.engine.check_block()
            except BlockNotExact as e:
                self.notices.append(f"{e}: stepping instead")
                self.order = "step"
        self.decoders = available_decoders(self.engine, self.decoders)
        self.state = initial_state(self.engine, self.batch, self.decoders)

    @property
    def max_block_chunks(self) -> int:
        return max(1, self.block_frames // self.engine.streaming.valid_out_len) if self.order == "block" else 1

    def run(self, chunks: list) -> Iterator[tuple[Chunk, StepOutput, StreamState | None]]:
        """chunks: consecutive (Chunk, frames [B, feat_in, width]) pairs. Runs of full chunks of every stream are
        blocked (block order); anything else is stepped."""
        i = 0
        while i < len(chunks):
            n = self._full_run(chunks, i)
            if n >= 2:
                yield from self._block(chunks[i : i + n])
                i += n
                continue
            chunk, frames = chunks[i]
            if self.prepare is not None:
                self.state = self.prepare(chunk, self.state)
            taps = {} if self.taps_for is not None and self.taps_for(chunk.index) else None
            step, self.state = stream_step(self.engine, frames, chunk.n_new, self.state, taps=taps)
            yield chunk, step, self.state
            i += 1

    def _full_run(self, chunks: list, i: int) -> int:
        """How many chunks from i on can go into one block (0 in step order)."""
        if self.order != "block":
            return 0
        width, n = self.engine.streaming.chunk_size, 0
        while i + n < len(chunks) and n < self.max_block_chunks and (chunks[i + n][0].n_new == width).all():
            n += 1
        return n

    def _block(self, run: list) -> Iterator[tuple[Chunk, StepOutput, StreamState | None]]:
        eng, st, sp = self.engine, self.state, self.engine.streaming
        n, pre = len(run), sp.pre_encode_cache_size
        audio = np.concatenate([st.pre_encode_cache] + [np.asarray(f, st.pre_encode_cache.dtype) for _, f in run], 2)
        taps = self.taps_for is not None and any(self.taps_for(c.index) for c, _ in run)
        blk = eng.encoder_block(
            audio,
            n,
            st.cache_last_channel,
            st.cache_last_time,
            st.cache_last_channel_len,
            engine_state=st.engine_state,
            taps=taps,
            caches="all" if self.outputs == "all" else "last",
        )
        rnnt, ctc_last = st.rnnt, st.ctc_last_label
        active = np.ones(self.batch, bool)
        for k, (chunk, _) in enumerate(run):
            last = k == n - 1
            out = blk.chunk(k, caches=self.outputs == "all" or last)
            enc = {
                "outputs": out.outputs,
                "encoded_lengths": out.encoded_lengths,
                "cache_last_channel_next": out.cache_last_channel_next,
                "cache_last_time_next": out.cache_last_time_next,
                "cache_last_channel_next_len": out.cache_last_channel_next_len,
            }
            if last and blk.engine_state_next is not None:
                enc["engine_state_next"] = blk.engine_state_next
            decoded = decode(eng, enc, out.encoded_lengths, rnnt, ctc_last)
            rnnt, ctc_last = decoded.rnnt, decoded.ctc_last_label
            start = k * sp.chunk_size
            signal = audio[:, :, start : start + pre + sp.chunk_size]
            chunk_taps = blk.chunk_taps(k) if taps and self.taps_for(chunk.index) else None
            step = StepOutput(
                signal, np.full(self.batch, pre + sp.chunk_size, np.int64), enc, active, decoded, chunk_taps
            )
            state = None
            if out.cache_last_channel_next is not None:
                state = StreamState(
                    cache_last_channel=out.cache_last_channel_next,
                    cache_last_time=out.cache_last_time_next,
                    cache_last_channel_len=out.cache_last_channel_next_len,
                    pre_encode_cache=np.ascontiguousarray(signal[:, :, -pre:]),
                    rnnt=rnnt,
                    ctc_last_label=ctc_last,
                    mel_frames=st.mel_frames + (k + 1) * sp.chunk_size,
                    chunks=st.chunks + k + 1,
                    engine_state=blk.engine_state_next if last else None,
                )
            if last:
                self.state = state
            yield chunk, step, state


def _batched(mel, mel_lengths) -> tuple:
    mel = np.asarray(mel)
    if mel.ndim == 2:
        mel = mel[None]
    b = mel.shape[0]
    lengths = np.full(b, mel.shape[2], np.int64) if mel_lengths is None else np.asarray(mel_lengths, np.int64)
    return mel, lengths


def _chunk_frames(mel: np.ndarray, chunk: Chunk) -> np.ndarray:
    """The new frames of one chunk of every stream, zero-padded past each stream's n_new: [B, feat_in, width]."""
    b = mel.shape[0]
    frames = np.zeros((b, mel.shape[1], chunk.width), mel.dtype)
    for i in range(b):
        frames[i, :, : chunk.n_new[i]] = mel[i, :, chunk.start : chunk.start + chunk.n_new[i]]
    return frames


def iter_stream(
    engine,
    mel: np.ndarray,
    mel_lengths=None,
    *,
    decoders=DECODERS,
    order: str = "step",
    block_frames: int = BLOCK_FRAMES,
    outputs: str = "all",
    taps_for: Callable[[int], bool] | None = None,
    prepare: Callable[[Chunk, StreamState], StreamState] | None = None,
) -> Iterator[tuple[Chunk, StepOutput, StreamState | None]]:
    """Stream a (batch of) mel spectrogram(s) [B, feat_in, F] chunk by chunk, yielding (chunk, step output, state
    after the chunk).

    mel_lengths [B] defaults to F for every stream (NeMo's streaming buffer uses every column it is given).
    ``taps_for(chunk_index) -> bool`` asks the engine for intermediates on those chunks; ``prepare(chunk, state)
    -> state`` may replace the state before a step (e.g. golden verify feeds the recorded caches)."""
    mel, lengths = _batched(mel, mel_lengths)
    loop = ChunkLoop(engine, mel.shape[0], decoders, order, block_frames, outputs, taps_for, prepare)
    schedule = chunk_schedule(lengths, engine.streaming)
    i = 0
    while i < len(schedule):  # hand the loop one block's worth of chunks at a time: memory stays bounded
        run = schedule[i : i + loop.max_block_chunks]
        yield from loop.run([(c, _chunk_frames(mel, c)) for c in run])
        i += len(run)


@dataclass
class StreamResult:
    tokens: Tokens
    steps: list = field(default_factory=list)  # StepOutput per chunk (when keep_steps)
    n_chunks: int = 0
    dropped_tail_frames: np.ndarray | None = None  # [B] mel frames too few for one more chunk (as NeMo)
    final_state: StreamState | None = None

    @property
    def rnnt_tokens(self) -> list | None:
        return self.tokens.rnnt

    @property
    def ctc_tokens(self) -> list | None:
        return self.tokens.ctc

    @property
    def ctc_frame_labels(self) -> list | None:
        return self.tokens.ctc_frame_labels


def run_stream(
    engine,
    mel: np.ndarray,
    mel_lengths=None,
    *,
    decoders=DECODERS,
    order: str = "step",
    block_frames: int = BLOCK_FRAMES,
    keep_steps: bool = False,
    taps_for=None,
    on_step=None,
) -> StreamResult:
    """``iter_stream`` to the end: the tokens of every stream, and the steps when ``keep_steps``.
    ``on_step(i, step, state)`` is called after each step (progress bars)."""
    mel, lengths = _batched(mel, mel_lengths)
    res = StreamResult(Tokens.empty(available_decoders(engine, decoders), mel.shape[0]))
    for chunk, step, state in iter_stream(
        engine,
        mel,
        lengths,
        decoders=decoders,
        order=order,
        block_frames=block_frames,
        outputs="all" if keep_steps else "tokens",
        taps_for=taps_for,
    ):
        res.tokens.add(step)
        if keep_steps:
            res.steps.append(step)
        if on_step is not None:
            on_step(chunk.index, step, state)
        res.n_chunks += 1
        if state is not None:
            res.final_state = state
    res.dropped_tail_frames = dropped_tail_frames(lengths, engine.streaming)
    return res
