"""The Python API behind the CLI: open an engine, make features, transcribe.

from refimpl import api
t = api.transcribe("tests/fixtures/audio/fox.wav", "tests/fixtures/hybrid/att-70-13")
print(t.text, t.tokens)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from .runtime.engines import IMPLS, load_model, open_engine
from .runtime.features import features
from .runtime.lookahead import parse_att_context_size
from .runtime.loop import run_stream
from .runtime.streaming import DECODERS
from .runtime.tokenizer import Tokenizer
from .tools.contract import stateless_message

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
    att_context_size: list
    decoder: str
    engine: str
    chunks: int
    audio_seconds: float
    seconds: float
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
    notes: list | None = None,
) -> Transcript:
    """Stream ``audio`` (path or array) through ``model`` chunk by chunk and decode greedily.

    ``engine``: "refimpl", "onnxruntime", or an engine already open (``open_engine``); ``decoder``: "rnnt" or
    "ctc", by default the model's RNNT head if it has one, else its CTC head."""
    if decoder is not None and decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if isinstance(engine, str):
        engine = open_engine(
            model,
            engine=engine,
            weights=weights,
            att_context_size=att_context_size,
            impl=impl,
            backend=backend,
            dtype=dtype,
            threads=threads,
        )
    cfg = engine.config
    if not cfg.encoder.has_cache_io:
        if engine.name == "onnxruntime":
            raise ValueError(stateless_message(model))
        if notes is not None:
            notes.append(
                stateless_message(model) + " refimpl computes its own masks and caches, so it streams these "
                "weights anyway (as the model would with a cache-aware export)."
            )
    decoder = decoder or engine.heads[0]
    if decoder not in engine.heads:
        raise ValueError(
            f"{model} has no {decoder.upper()} head for the {engine.name} engine (it has: "
            f"{', '.join(engine.heads) or 'none'}); an RNNT export folder holds encoder + decoder_joint, "
            f"a CTC export one graph with a 'logprobs' output"
        )
    if cfg.tokenizer_model is None:
        raise ValueError(
            f"{model} has no tokenizer.model: put NeMo's tokenizer.model next to the ONNX files "
            f"(it is inside the .nemo: `tar -xf model.nemo --wildcards '*tokenizer.model'`)"
        )
    mel, seconds_audio = features(audio, cfg, engine.featurizer)
    t0 = time.perf_counter()
    res = run_stream(engine, mel, decoders=(decoder,))
    assert res.dropped_tail_frames is not None
    elapsed = time.perf_counter() - t0
    tokens = res.tokens.of(decoder)
    text = Tokenizer(cfg.tokenizer_model).decode(tokens)
    return Transcript(
        text=text,
        tokens=tokens,
        att_context_size=list(cfg.encoder.att_context_size),
        decoder=decoder,
        engine=engine.name,
        chunks=res.n_chunks,
        audio_seconds=seconds_audio,
        seconds=elapsed,
        dropped_tail_frames=int(res.dropped_tail_frames[0]),
    )
