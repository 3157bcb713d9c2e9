"""Golden files for a user's own deployment: record onnxruntime's per-chunk inputs and outputs once, verify any
engine (a re-export, an optimised or quantised graph, refimpl) against them later.

Format (an .npz, versioned): ``__header__`` holds JSON (format, version, versions of the tools, sha256 of the
model files and the audio, settings, final tokens and text); per chunk i ``chunk/<i>/audio_signal`` and
``chunk/<i>/length`` (the encoder inputs) and onnxruntime's outputs ``chunk/<i>/<name>``; ``tokens/<decoder>``.
The cache inputs of chunk i are not stored: they are zeros at chunk 0 and chunk i-1's ``*_next`` outputs.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import numpy as np

from ..runtime.chunking import chunk_schedule
from .crosscheck import ChunkReport, CrosscheckReport, first_divergence, token_divergence
from ..runtime.streaming import available_decoders, initial_state, stream_step
from .tolerances import compare

FORMAT = "refimpl-golden"
VERSION = 1


class GoldenFormatError(ValueError):
    """Not a golden file this refimpl can read."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_files(model) -> dict:
    from weights_tools import find_export

    if Path(model).suffix == ".nemo":
        return {Path(model).name: _sha256(Path(model))}
    e = find_export(model)
    return {p.name: _sha256(p) for p in (e.encoder, e.decoder_joint, e.ctc, e.tokenizer) if p is not None}


def record(model, audio, out, *, att_context_size=None, threads: int = 1) -> dict:
    """Stream ``audio`` through onnxruntime on ``model`` and write the golden file ``out``. Returns the header."""
    import onnxruntime

    from .. import __version__
    from ..api import features, parse_att_context_size
    from .contract import stateless_message
    from ..runtime.engines import OnnxEngine
    from ..runtime.tokenizer import Tokenizer

    engine = OnnxEngine(model, att_context_size=parse_att_context_size(att_context_size), threads=threads)
    if not engine.has_cache_io:
        raise ValueError(stateless_message(engine.files.encoder or engine.files.ctc))
    mel, seconds = features(audio, engine.config)
    decoders = available_decoders(engine)
    state = initial_state(engine, 1, decoders)
    arrays, tokens = {}, {d: [] for d in decoders}
    schedule = chunk_schedule([mel.shape[2]], engine.params)
    for c in schedule:
        step, state = stream_step(engine, mel[:, :, c.start: c.start + c.width], c.n_new, state)
        arrays[f"chunk/{c.index}/audio_signal"] = step.audio_signal
        arrays[f"chunk/{c.index}/length"] = step.length
        for name, value in step.encoder.items():
            arrays[f"chunk/{c.index}/{name}"] = value
        for d in decoders:
            tokens[d] += (step.rnnt_tokens if d == "rnnt" else step.ctc_tokens)[0]
    tok = Tokenizer(engine.config.tokenizer_model) if engine.config.tokenizer_model else None
    header = {
        "format": FORMAT, "version": VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"refimpl": __version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
        "model": {"path": str(model), "files": _model_files(model)},
        "audio": ({"path": str(audio), "sha256": _sha256(Path(audio))} if isinstance(audio, (str, Path)) else
                  {"path": None}) | {"seconds": seconds},
        "att_context_size": list(engine.config.encoder.att_context_size),
        "decoders": list(decoders), "n_chunks": len(schedule),
        "features": "refimpl.preprocessing.log_mel (NeMo >= 2.5 front end), stored per chunk as audio_signal",
        "cache_inputs": "zeros at chunk 0, then chunk i-1's *_next outputs",
        "tokens": tokens, "text": {d: tok.decode(t) if tok else None for d, t in tokens.items()},
    }
    for d, t in tokens.items():
        arrays[f"tokens/{d}"] = np.asarray(t, np.int64)
    np.savez_compressed(out, __header__=np.array(json.dumps(header)), **arrays)
    return header


def read_golden(path) -> tuple:
    """(header, arrays) of a golden file; GoldenFormatError with the reason if it is not one we can read."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such golden file (make one with `refimpl golden record`)")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise GoldenFormatError(f"{p} is not an .npz (zip) file: it starts with {magic!r}; pass the file written by "
                                f"`refimpl golden record`")
    try:
        z = np.load(p, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise GoldenFormatError(f"{p} is not a readable .npz ({e}); it may be truncated: record it again") from None
    if "__header__" not in arrays:
        raise GoldenFormatError(f"{p} has no __header__: not a refimpl golden file (record one with "
                                f"`refimpl golden record`)")
    try:
        header = json.loads(str(arrays.pop("__header__")))
    except json.JSONDecodeError as e:
        raise GoldenFormatError(f"{p}: its header is not valid JSON ({e})") from None
    if header.get("format") != FORMAT:
        raise GoldenFormatError(f"{p}: format {header.get('format')!r}, expected {FORMAT!r}")
    if header.get("version") != VERSION:
        raise GoldenFormatError(f"{p}: golden format version {header.get('version')}, this refimpl reads version "
                                f"{VERSION}: {'upgrade refimpl' if (header.get('version') or 0) > VERSION else 'record it again'}")
    return header, arrays


def verify(path, model, *, engine: str = "onnxruntime", weights=None, backend: str = "numba", dtype=np.float32,
           threads: int = 1, notes: list | None = None, refimpl_path: str = "plain") -> CrosscheckReport:
    """Replay a golden file's chunks through ``engine`` on ``model`` and compare like crosscheck: every output of
    every chunk (cache inputs taken from the golden, so each chunk is judged on its own), then the tokens
    decoded from the engine's own outputs."""
    from ..api import open_engine

    header, arrays = read_golden(path)
    att = tuple(header["att_context_size"])
    eng = open_engine(model, engine=engine, weights=weights, att_context_size=att, backend=backend, dtype=dtype,
                      threads=threads, path=refimpl_path)
    if notes is not None:
        now = _model_files(model)
        if now != header["model"]["files"]:
            notes.append(f"the model files are not the recorded ones ({header['model']['path']}): sha256 "
                         f"{sorted(now.items())} vs {sorted(header['model']['files'].items())}; comparing numbers")
    decoders = tuple(d for d in header["decoders"] if d in available_decoders(eng))
    state = initial_state(eng, 1, decoders)
    chunks, first, tokens = [], None, {d: [] for d in decoders}
    for i in range(header["n_chunks"]):
        g = lambda name: arrays[f"chunk/{i}/{name}"]  # noqa: E731
        if i > 0:  # teacher-forced caches: each chunk is judged on the golden's inputs
            prev = lambda name: arrays[f"chunk/{i - 1}/{name}"]  # noqa: E731
            state = _with_caches(state, prev("cache_last_channel_next"), prev("cache_last_time_next"),
                                 prev("cache_last_channel_next_len"))
        x, length = g("audio_signal"), g("length")
        pre = state.pre_encode_cache.shape[2]
        state = _with_pre_encode(state, x[:, :, :pre].astype(state.pre_encode_cache.dtype))
        step, state = stream_step(eng, x[:, :, pre:], length - pre, state)
        outs = {}
        for name in ("outputs", "logprobs", "encoded_lengths", "cache_last_channel_next", "cache_last_time_next",
                     "cache_last_channel_next_len"):
            if f"chunk/{i}/{name}" in arrays:
                mine = step.ctc_logprobs if name == "logprobs" else step.encoder.get(name)
                outs[name] = compare(name, mine, g(name))
        report = ChunkReport(i, outs)
        chunks.append(report)
        for d in decoders:
            tokens[d] += (step.rnnt_tokens if d == "rnnt" else step.ctc_tokens)[0]
        if first is None and not report.ok:
            first = first_divergence(i, {}, outs, hint=False)
    golden_tokens = {d: header["tokens"][d] for d in decoders}
    first = first or token_divergence(golden_tokens, tokens)
    return CrosscheckReport(str(path), att, chunks, {"golden": golden_tokens, eng.name: tokens}, first,
                            reference="golden", candidate=eng.name)


def _with_caches(state, ccn, ctn, clen):
    import dataclasses

    return dataclasses.replace(state, cache_last_channel=ccn.astype(state.cache_last_channel.dtype),
                               cache_last_time=ctn.astype(state.cache_last_time.dtype), cache_last_channel_len=clen,
                               engine_state=None)


def _with_pre_encode(state, frames):
    import dataclasses

    return dataclasses.replace(state, pre_encode_cache=frames)
