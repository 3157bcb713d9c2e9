"""The Python API behind the CLI: open an engine, make features, transcribe.

from refimpl import api
t = api.transcribe("tests/fixtures/audio/fox.wav", "tests/fixtures/hybrid/att-70-13")
print(t.text, t.tokens)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from weights_tools import plan_onnx, read_nemo_config

from .runtime.engines import IMPLS, load_model, open_engine
from .runtime.features import features
from .runtime.live import Model
from .runtime.lookahead import parse_att_context_size
from .runtime.streaming import DECODERS
from .tools.contract import check_same_architecture, stateless_message

__all__ = [
    "DECODERS",
    "IMPLS",
    "Transcript",
    "features",
    "load_model",
    "open_engine",
    "parse_att_context_size",
    "transcribe",
]


@dataclass
class Transcript:
    text: str
    tokens: list
    timestamps: list  # seconds, the start of each token's encoder frame
    att_context_size: list
    decoder: str
    engine: str
    chunks: int
    audio_seconds: float
    seconds: float
    order: str = "step"
    dropped_tail_frames: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def transcribe(
    audio,
    model,
    *,
    decoder: str | None = None,
    engine="refimpl",
    att_context_size=None,
    weights=None,
    impl: str = "fast",
    backend: str | None = None,
    dtype=np.float32,
    threads: int = 1,
    order: str | None = None,
    notes: list | None = None,
) -> Transcript:
    """Stream ``audio`` (path or array) through ``model`` chunk by chunk and decode greedily, exactly as NeMo's
    cache-aware streaming does.

    ``engine``: "refimpl", "onnxruntime", or an engine already open (``open_engine``); ``weights``: refimpl's
    weights from another file of the same model (a .nemo, another export); ``decoder``: "rnnt" or "ctc", by
    default the model's RNNT head if it has one, else its CTC head; ``order``: "block" (default for refimpl:
    chunks in blocks, the same results) or "step"."""
    if decoder is not None and decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    source = model
    if weights is not None:
        if engine != "refimpl":
            raise ValueError("--weights gives refimpl its weights; the onnxruntime engine runs the graphs of --model")
        check_same_architecture(_config_of(model), _config_of(weights), str(model), str(weights))
        source = weights
    m = Model(
        source,
        engine=engine,
        impl=impl,
        backend=backend,
        att_context_size=att_context_size,
        dtype=dtype,
        threads=threads,
    )
    cfg = m.config
    if not cfg.encoder.has_cache_io:
        if m.engine.name == "onnxruntime":
            raise ValueError(stateless_message(model))
        if notes is not None:
            notes.append(
                stateless_message(model) + " refimpl computes its own masks and caches, so it streams these "
                "weights anyway (as the model would with a cache-aware export)."
            )
    order = order or m.engine.orders[-1]
    t0 = time.perf_counter()
    r = m.transcribe(audio, decoder=decoder, order=order, notices=notes)
    elapsed = time.perf_counter() - t0
    return Transcript(
        text=r.text,
        tokens=r.tokens,
        timestamps=r.timestamps,
        att_context_size=list(r.att_context_size),
        decoder=r.decoder,
        engine=m.engine.name,
        chunks=r.chunks,
        audio_seconds=r.audio_seconds,
        seconds=elapsed,
        order=order,
        dropped_tail_frames=r.dropped_tail_frames,
    )


def _config_of(path):
    """A model's config without reading its weights."""
    return read_nemo_config(path) if Path(path).suffix == ".nemo" else plan_onnx(path).config
