"""The Python API behind the CLI: load a model, make features, open an engine, transcribe.

    from refimpl import api
    t = api.transcribe("tests/fixtures/audio/fox.wav", "tests/fixtures/hybrid/att-70-13")
    print(t.text, t.tokens)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .runtime.engines import OnnxEngine, RefimplEngine
from .runtime.streaming import run_stream
from .runtime.tokenizer import Tokenizer

ENGINES = ("refimpl", "onnxruntime")
PATHS = ("plain", "fast")
DECODERS = ("rnnt", "ctc")


def load_model(path, *, att_context_sizes=None):
    """(config, weights) from a .nemo file, or from a folder / .onnx file of NeMo's export."""
    import weights_tools

    p = Path(path)
    if p.suffix == ".nemo":
        return weights_tools.load_nemo(p)
    return weights_tools.load_onnx(p, att_context_sizes=att_context_sizes)


def parse_att_context_size(text):
    """'70,13' or [70, 13] -> (70, 13)."""
    if text is None or isinstance(text, tuple):
        return text
    if isinstance(text, (list, np.ndarray)):
        return tuple(int(a) for a in text)
    try:
        left, right = (int(a) for a in str(text).replace("[", "").replace("]", "").split(","))
    except ValueError:
        raise ValueError(f"att_context_size must be 'LEFT,RIGHT' (e.g. 70,13), got {text!r}") from None
    return left, right


def open_engine(model, *, engine: str = "refimpl", weights=None, att_context_size=None, backend: str = "numba",
                dtype=np.float32, threads: int = 1, path: str = "plain"):
    """An engine for ``model`` (a path). ``weights`` (a path to a .nemo or another export of the same model)
    makes refimpl take its weights from there instead of from ``model``. ``path`` "plain" is the readable
    reference encoder (``refimpl.encoder``); "fast" keeps projected keys/values of cached frames
    (``refimpl.fast``), same results within the tolerance table."""
    att = parse_att_context_size(att_context_size)
    if engine == "onnxruntime":
        if Path(model).suffix == ".nemo":
            raise ValueError(f"the onnxruntime engine needs NeMo's ONNX export, not a .nemo ({model})")
        return OnnxEngine(model, att_context_size=att, threads=threads)
    if engine != "refimpl":
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    config, w = load_model(weights if weights is not None else model)
    return make_refimpl_engine(config, w, att_context_size=att, backend=backend, dtype=dtype, path=path)


def make_refimpl_engine(config, weights, *, path: str = "plain", **kwargs):
    """RefimplEngine (plain reference path) or FastRefimplEngine (fast path) on the same (config, weights)."""
    if path == "fast":
        from .fast.encoder import FastRefimplEngine
        return FastRefimplEngine(config, weights, **kwargs)
    return RefimplEngine(config, weights, **kwargs)


def features(audio, config, weights=None, *, legacy: bool = False):
    """Log-mel [1, feat_in, F] of a file path or 1-D float array, with the checkpoint's filterbank and window
    when the weights carry them (a .nemo does; ONNX graphs hold no preprocessor)."""
    from .model.audio import as_audio, load_audio
    from .model.preprocessing import log_mel

    x = load_audio(audio, sample_rate=config.preprocessor.sample_rate) if isinstance(audio, (str, Path)) \
        else as_audio(audio)
    feat = (weights or {}).get("preprocessor", {}).get("featurizer", {})
    mel, _ = log_mel(x, None, config.preprocessor, fb=feat.get("fb"), window=feat.get("window"), legacy=legacy)
    return mel, len(x) / config.preprocessor.sample_rate


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


def transcribe(audio, model, *, decoder: str = "rnnt", engine: str = "refimpl", att_context_size=None,
               weights=None, backend: str = "numba", dtype=np.float32, threads: int = 1, eng=None,
               notes: list | None = None, path: str = "fast") -> Transcript:
    """Stream ``audio`` (path or array) through ``model`` chunk by chunk and decode greedily."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    eng = eng or open_engine(model, engine=engine, weights=weights, att_context_size=att_context_size,
                             backend=backend, dtype=dtype, threads=threads, path=path)
    if not eng.config.encoder.has_cache_io:
        from .tools.contract import stateless_message
        if eng.name == "onnxruntime":
            raise ValueError(stateless_message(model))
        if notes is not None:
            notes.append(stateless_message(model) + " refimpl computes its own masks and caches, so it streams these "
                         "weights anyway (as the model would with a cache-aware export).")
    available = {"rnnt": eng.has_rnnt, "ctc": eng.has_ctc}
    if not available[decoder]:
        have = [d for d, ok in available.items() if ok]
        raise ValueError(f"{model} has no {decoder.upper()} head for the {eng.name} engine (it has: "
                         f"{', '.join(have) or 'none'}); an RNNT export folder holds encoder + decoder_joint, "
                         f"a CTC export one graph with a 'logprobs' output")
    cfg = eng.config
    mel, seconds_audio = features(audio, cfg, getattr(eng, "weights", None))
    t0 = time.perf_counter()
    res = run_stream(eng, mel, decoders=(decoder,))
    elapsed = time.perf_counter() - t0
    tokens = (res.rnnt_tokens if decoder == "rnnt" else res.ctc_tokens)[0]
    if cfg.tokenizer_model is None:
        raise ValueError(f"{model} has no tokenizer.model: put NeMo's tokenizer.model next to the ONNX files "
                         f"(it is inside the .nemo: `tar -xf model.nemo --wildcards '*tokenizer.model'`)")
    text = Tokenizer(cfg.tokenizer_model).decode(tokens)
    return Transcript(text=text, tokens=tokens, att_context_size=list(cfg.encoder.att_context_size),
                      decoder=decoder, engine=eng.name, chunks=res.n_chunks, audio_seconds=seconds_audio,
                      seconds=elapsed, dropped_tail_frames=int(res.dropped_tail_frames[0]))
