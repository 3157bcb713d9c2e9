"""A model loaded once, and live streams fed audio as it arrives -- the shape sherpa-onnx and onnx-asr users know:

    import refimpl
    model = refimpl.load("tests/fixtures/hybrid/att-70-13")        # an export folder, a .onnx or a .nemo
    print(model.transcribe("tests/fixtures/audio/fox.wav").text)   # files (or arrays), one or many

    stream = model.stream()                                       # one live stream
    for block in blocks:                                          # blocks of any size, 1 sample to minutes
        stream.accept_waveform(block)
        print(stream.text)                                        # partial result as chunks complete
    stream.input_finished()                                       # the last, partial chunk, as NeMo runs it
    result = stream.result()                                      # text, tokens, token timestamps

Files are read block by block and their features computed as they arrive (``frontend.FeatureStream``), so
memory stays flat whatever the length; a stream runs each chunk as soon as its mel frames are final (order
"step": the lowest latency), or waits for a block of chunks (order "block": the fastest per second of audio).
Any split of the audio gives the tokens of the whole file. ``Model.decode_streams`` steps several streams
together as one batch.

Why one module over ~350 lines: ``Stream`` and ``Model`` are one state machine (audio in, chunks out, state
carried) and read best side by side; splitting them would put the chunk-ready rule in two files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..model.audio import audio_blocks
from .chunking import Chunk
from .engines import open_engine
from .frontend import FeatureStream
from .lookahead import parse_att_context_size
from .loop import BLOCK_FRAMES, ChunkLoop
from .streaming import Tokens, stack_states, stream_step, take_state
from .tokenizer import Tokenizer

READ_BLOCK = 16000 * 10  # samples read from a file at a time (10 s)


@dataclass(frozen=True)
class Result:
    text: str
    tokens: list
    timestamps: list  # seconds from the start of the audio at which each token's encoder frame begins
    decoder: str
    att_context_size: tuple
    audio_seconds: float
    chunks: int  # chunks run (steps, or chunks of blocks)
    dropped_tail_frames: int = 0  # mel frames at the end too few for a chunk (NeMo does not run them either)

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "tokens": self.tokens,
            "timestamps": self.timestamps,
            "decoder": self.decoder,
            "att_context_size": list(self.att_context_size),
            "audio_seconds": self.audio_seconds,
            "chunks": self.chunks,
            "dropped_tail_frames": self.dropped_tail_frames,
        }


class Model:
    """A model opened once (``refimpl.load``); engines for other look-aheads of a .nemo are made on demand."""

    def __init__(
        self,
        path,
        *,
        engine="refimpl",
        impl: str = "fast",
        backend: str | None = None,
        att_context_size=None,
        dtype=np.float32,
        threads: int = 1,
    ):
        """``engine``: "refimpl", "onnxruntime", or an engine already open on ``path``."""
        self.path = Path(path)
        self._open = dict(engine=engine, impl=impl, backend=backend, dtype=dtype, threads=threads)
        if isinstance(engine, str):
            first = open_engine(path, att_context_size=parse_att_context_size(att_context_size), **self._open)
        else:
            first, self._open["engine"] = engine, engine.name
        self.engine = first
        self._engines = {tuple(first.config.encoder.att_context_size): first}
        if first.config.tokenizer_model is None:
            raise ValueError(
                f"{path} has no tokenizer.model: put NeMo's tokenizer.model next to the ONNX files "
                f"(it is inside the .nemo: `tar -xf model.nemo --wildcards '*tokenizer.model'`)"
            )
        self.tokenizer = Tokenizer(first.config.tokenizer_model)

    @property
    def config(self):
        return self.engine.config

    def engine_for(self, att_context_size=None):
        att = parse_att_context_size(att_context_size)
        if att is None:
            return self.engine
        att = tuple(att)
        if att not in self._engines:
            self._engines[att] = open_engine(self.path, att_context_size=att, **self._open)
        return self._engines[att]

    def stream(
        self,
        *,
        att_context_size=None,
        decoder: str | None = None,
        order: str = "step",
        block_frames: int = BLOCK_FRAMES,
        notices: list | None = None,
    ) -> Stream:
        """A live stream. ``notices``: where notices about its audio go (None: as AudioWarnings)."""
        return Stream(
            self,
            self.engine_for(att_context_size),
            decoder=decoder,
            order=order,
            block_frames=block_frames,
            notices=notices,
        )

    def transcribe(
        self,
        audio,
        *,
        att_context_size=None,
        decoder: str | None = None,
        order: str | None = None,
        notices: list | None = None,
        resample: bool = False,
        channel: int | str | None = None,
    ):
        """One file path or float waveform -> Result; a list of them -> list of Results. Files are read and
        featurised block by block. ``order``: "block" (default, refimpl's engine) or "step". ``resample``: a file
        at another rate is resampled (soxr VHQ) instead of refused; ``channel``: N (0-based) or "mean" makes a
        multichannel file mono instead of refused (``refimpl.model.audio.load_audio``)."""
        if isinstance(audio, (list, tuple)):
            return [
                self.transcribe(
                    a,
                    att_context_size=att_context_size,
                    decoder=decoder,
                    order=order,
                    notices=notices,
                    resample=resample,
                    channel=channel,
                )
                for a in audio
            ]
        eng = self.engine_for(att_context_size)
        order = order or eng.orders[-1]
        s = self.stream(att_context_size=att_context_size, decoder=decoder, order=order, notices=notices)
        rate = eng.config.preprocessor.sample_rate
        for block, checked in _blocks(audio, rate, notices, resample=resample, channel=channel):
            s._accept(block, run=True, checked=checked)
        s.input_finished()
        return s.result()

    def decode_streams(self, streams: list) -> int:
        """Run every chunk that is ready in any of ``streams`` (one look-ahead and decoder), stepping the
        streams that have one together as one batch; -> chunks run. Use with ``accept_waveform(..., run=False)``."""
        ran = 0
        while True:
            ready = [s for s in streams if s.next_chunk() is not None]
            if not ready:
                return ran
            if len({id(s.loop.engine) for s in ready}) != 1 or len({s.decoder for s in ready}) != 1:
                raise ValueError("decode_streams steps streams of one look-ahead and one decoder together")
            frames = [s.next_chunk() for s in ready]
            width = max(f.shape[1] for f in frames)
            batch = np.zeros((len(ready), frames[0].shape[0], width), frames[0].dtype)
            for i, f in enumerate(frames):
                batch[i, :, : f.shape[1]] = f
            n_new = np.array([f.shape[1] for f in frames], np.int64)
            step, state = stream_step(ready[0].loop.engine, batch, n_new, stack_states([s.loop.state for s in ready]))
            for i, s in enumerate(ready):
                s._took(take_state(state, i), _take_step(step, i), n_new[i])
            ran += len(ready)


def _take_step(step, i: int):
    """Stream i of a batched step output, as the tokens accumulator reads it."""
    from .streaming import Decoded, StepOutput  # (one batched step; no import cycle)

    d = step.decoded
    pick = lambda v: None if v is None else [v[i]]  # noqa: E731
    decoded = Decoded(
        pick(d.rnnt_tokens),
        None,
        pick(d.ctc_tokens),
        pick(d.ctc_frame_labels),
        None,
        None,
        pick(d.rnnt_frames),
        pick(d.ctc_frames),
    )
    enc = {"encoded_lengths": step.encoder["encoded_lengths"][i : i + 1]}
    return StepOutput(step.audio_signal[i : i + 1], step.length[i : i + 1], enc, step.active[i : i + 1], decoded)


def _blocks(audio, sample_rate: int, notices, *, resample: bool = False, channel=None):
    """(block, checked): a file read block by block (checked as it is read), or an array as one block (already
    mono at the model's rate: resample and channel apply to files)."""
    if not isinstance(audio, (str, Path)):
        if resample or channel is not None:
            raise ValueError(
                "resample and channel apply to audio files (their header says the rate and the channels); pass an "
                f"array as mono samples at {sample_rate} Hz"
            )
        yield np.asarray(audio), False
        return
    blocks = audio_blocks(
        audio, sample_rate=sample_rate, block=READ_BLOCK, notices=notices, resample=resample, channel=channel
    )
    for block in blocks:
        yield block, True


@dataclass
class Stream:
    """One live stream: audio in (``accept_waveform``), chunks run as their mel frames are final, tokens out."""

    model: Model
    engine: object
    decoder: str | None = None
    order: str = "step"
    block_frames: int = BLOCK_FRAMES
    notices: list | None = None
    _mel: np.ndarray = field(init=False)
    _start: int = field(init=False, default=0)  # mel frame index of _mel[:, 0]
    _chunk: int = field(init=False, default=0)
    _finished: bool = field(init=False, default=False)
    dropped_tail_frames: int = field(init=False, default=0)

    def __post_init__(self):
        heads = self.engine.heads
        self.decoder = self.decoder or heads[0]
        if self.decoder not in heads:
            raise ValueError(
                f"{self.model.path} has no {self.decoder.upper()} head for the {self.engine.name} "
                f"engine (it has: {', '.join(heads)})"
            )
        cfg = self.engine.config
        self.features = FeatureStream(cfg.preprocessor, self.engine.featurizer, notices=self.notices)
        self.loop = ChunkLoop(self.engine, 1, (self.decoder,), self.order, self.block_frames, "tokens")
        self._mel = np.zeros((cfg.encoder.feat_in, 0), np.float32)
        self.tokens_so_far = Tokens.empty((self.decoder,), 1)
        self.samples = 0

    # --- audio in ------------------------------------------------------------------------------------------
    def accept_waveform(self, samples, *, run: bool = True) -> None:
        """Append float samples at the model's rate; run the chunks they complete (``run=False``: only buffer
        them, for ``Model.decode_streams``)."""
        self._accept(samples, run=run, checked=False)

    def _accept(self, samples, *, run: bool, checked: bool) -> None:
        if self._finished:
            raise ValueError("input_finished() was called: this stream takes no more audio")
        x = np.asarray(samples)
        self.samples += x.size
        self._mel = np.concatenate([self._mel, self.features.accept(x, checked=checked)], axis=1)
        if run:
            self._run()

    def input_finished(self, *, run: bool = True) -> None:
        """No more audio: the last frames, then the last chunk (partial, if at least one chunk's minimum of mel
        frames is left -- NeMo's rule) are run."""
        self._mel = np.concatenate([self._mel, self.features.finish()], axis=1)
        self._finished = True
        if run:
            self._run()

    # --- chunks ----------------------------------------------------------------------------------------------
    def next_chunk(self) -> np.ndarray | None:
        """The new mel frames of the next chunk if it can run now, else None."""
        return self._peek(0)

    def _took(self, state, step, n_new: int) -> None:
        """Bookkeeping after a chunk of this stream ran somewhere (alone or in a batch)."""
        self.loop.state = state
        self.tokens_so_far.add(step)
        self._mel = self._mel[:, n_new:]
        self._start += n_new
        self._chunk += 1

    def _run(self) -> None:
        sp = self.engine.streaming
        chunks = []
        while True:
            frames = self._peek(len(chunks))
            if frames is None:
                break
            chunks.append(
                (
                    Chunk(
                        self._chunk + len(chunks),
                        self._start + len(chunks) * sp.chunk_size,
                        np.array([frames.shape[1]]),
                        frames.shape[1],
                    ),
                    frames[None],
                )
            )
        if self.order == "block" and not self._finished and len(chunks) < self.loop.max_block_chunks:
            return  # wait for a whole block
        for _chunk, step, _state in self.loop.run(chunks):
            self.tokens_so_far.add(step)
            self._chunk += 1
        used = sum(int(c.n_new[0]) for c, _ in chunks)
        self._mel, self._start = self._mel[:, used:], self._start + used

    def _peek(self, k: int):
        """The new mel frames of the k-th chunk from now if it can run now: a full chunk as soon as its frames
        are final (they never change once the front end gives them), the partial last one at the end when it has
        NeMo's minimum (1 mel frame for a stream's first chunk, else the subsampling factor)."""
        sp = self.engine.streaming
        rest = self._mel[:, k * sp.chunk_size :]
        n = rest.shape[1]
        if n >= sp.chunk_size:
            return rest[:, : sp.chunk_size]
        if self._finished and n and n >= (1 if self._chunk + k == 0 else sp.min_new_frames):
            return rest
        if self._finished and k == 0:
            self.dropped_tail_frames = n  # fewer than a chunk needs: not run, as NeMo's buffer does
        return None

    # --- results ---------------------------------------------------------------------------------------------
    @property
    def chunks(self) -> int:
        """Chunks run so far."""
        return self._chunk

    @property
    def tokens(self) -> list:
        return self.tokens_so_far.of(self.decoder)

    @property
    def text(self) -> str:
        return self.model.tokenizer.decode(self.tokens)

    def result(self) -> Result:
        cfg = self.engine.config
        pre = cfg.preprocessor
        seconds_per_frame = cfg.encoder.subsampling_factor * pre.n_window_stride / pre.sample_rate
        stamps = [round(f * seconds_per_frame, 6) for f in self.tokens_so_far.frames_of(self.decoder)]
        return Result(
            self.text,
            list(self.tokens),
            stamps,
            self.decoder,
            tuple(cfg.encoder.att_context_size),
            self.samples / cfg.preprocessor.sample_rate,
            self._chunk,
            self.dropped_tail_frames,
        )
