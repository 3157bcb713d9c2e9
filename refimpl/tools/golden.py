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
from typing import Any, cast

import numpy as np
import onnxruntime

from weights_tools import find_export

from .. import __version__
from ..runtime.engines import open_engine
from ..runtime.features import features
from ..runtime.lookahead import parse_att_context_size
from ..runtime.loop import iter_stream
from ..runtime.onnx_engine import OnnxEngine
from ..runtime.streaming import Tokens, available_decoders
from ..runtime.tokenizer import Tokenizer
from .contract import stateless_message
from .crosscheck import compare_outputs, outputs_of
from .report import ChunkReport, Report, first_divergence, token_divergence
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
    if Path(model).suffix == ".nemo":
        return {Path(model).name: _sha256(Path(model))}
    e = find_export(model)
    return {p.name: _sha256(p) for p in (e.encoder, e.decoder_joint, e.ctc, e.tokenizer) if p is not None}


def record(model, audio, out, *, att_context_size=None, threads: int = 1) -> dict:
    """Stream ``audio`` through onnxruntime on ``model`` and write the golden file ``out``. Returns the header."""
    engine = OnnxEngine(model, att_context_size=parse_att_context_size(att_context_size), threads=threads)
    if not engine.has_cache_io:
        raise ValueError(stateless_message(engine.files.encoder or engine.files.ctc))
    mel, seconds = features(audio, engine.config)
    decoders = available_decoders(engine)
    arrays, tokens, n_chunks = {}, Tokens.empty(decoders, 1), 0
    for c, step, _ in iter_stream(engine, mel, decoders=decoders):
        arrays[f"chunk/{c.index}/audio_signal"] = step.audio_signal
        arrays[f"chunk/{c.index}/length"] = step.length
        for name, value in step.encoder.items():
            arrays[f"chunk/{c.index}/{name}"] = value
        tokens.add(step)
        n_chunks += 1
    toks = {d: tokens.of(d) for d in decoders}
    tok = Tokenizer(engine.config.tokenizer_model) if engine.config.tokenizer_model else None
    header = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"refimpl": __version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
        "model": {"path": str(model), "files": _model_files(model)},
        "audio": (
            {"path": str(audio), "sha256": _sha256(Path(audio))} if isinstance(audio, (str, Path)) else {"path": None}
        )
        | {"seconds": seconds},
        "att_context_size": list(engine.config.encoder.att_context_size),
        "decoders": list(decoders),
        "n_chunks": n_chunks,
        "features": "refimpl.model.preprocessing.log_mel (NeMo >= 2.5 front end), stored per chunk as audio_signal",
        "cache_inputs": "zeros at chunk 0, then chunk i-1's *_next outputs",
        "tokens": toks,
        "text": {d: tok.decode(t) if tok else None for d, t in toks.items()},
    }
    for d, t in toks.items():
        arrays[f"tokens/{d}"] = np.asarray(t, np.int64)
    arrays["__header__"] = np.array(json.dumps(header))
    np.savez_compressed(out, **cast(dict[str, Any], arrays))
    return header


def read_golden(path) -> tuple:
    """(header, arrays) of a golden file; GoldenFormatError with the reason if it is not one we can read."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such golden file (make one with `refimpl golden record`)")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise GoldenFormatError(
            f"{p} is not an .npz (zip) file: it starts with {magic!r}; pass the file written by `refimpl golden record`"
        )
    try:
        z = np.load(p, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise GoldenFormatError(f"{p} is not a readable .npz ({e}); it may be truncated: record it again") from None
    if "__header__" not in arrays:
        raise GoldenFormatError(
            f"{p} has no __header__: not a refimpl golden file (record one with `refimpl golden record`)"
        )
    try:
        header = json.loads(str(arrays.pop("__header__")))
    except json.JSONDecodeError as e:
        raise GoldenFormatError(f"{p}: its header is not valid JSON ({e})") from None
    if header.get("format") != FORMAT:
        raise GoldenFormatError(f"{p}: format {header.get('format')!r}, expected {FORMAT!r}")
    if header.get("version") != VERSION:
        raise GoldenFormatError(
            f"{p}: golden format version {header.get('version')}, this refimpl reads version "
            f"{VERSION}: {'upgrade refimpl' if (header.get('version') or 0) > VERSION else 'record it again'}"
        )
    return header, arrays


def _recorded_mel(arrays: dict, n_chunks: int, pre: int) -> np.ndarray:
    """The mel frames the recorded chunks took as new frames, in order: [1, feat_in, F] (the stream's input)."""
    parts = []
    for i in range(n_chunks):
        x, length = arrays[f"chunk/{i}/audio_signal"], int(arrays[f"chunk/{i}/length"][0])
        parts.append(x[:, :, pre:length])
    return np.concatenate(parts, axis=2)


def verify(
    golden_file,
    model,
    *,
    engine: str = "onnxruntime",
    weights=None,
    impl: str = "plain",
    backend: str | None = None,
    dtype=np.float32,
    threads: int = 1,
    notes: list | None = None,
) -> Report:
    """Replay a golden file's chunks through ``engine`` on ``model`` and compare like crosscheck: the chunk
    inputs the driver rebuilds from the recorded frames against the recorded ones, every output of every chunk
    (cache inputs taken from the golden, so each chunk is judged on its own), then the tokens decoded from the
    engine's own outputs. ``impl`` chooses refimpl's implementation (plain NumPy reference by default)."""
    header, arrays = read_golden(golden_file)
    att = tuple(header["att_context_size"])
    eng = open_engine(
        model,
        engine=engine,
        weights=weights,
        att_context_size=att,
        impl=impl,
        backend=backend,
        dtype=dtype,
        threads=threads,
    )
    if notes is not None:
        now = _model_files(model)
        if now != header["model"]["files"]:
            notes.append(
                f"the model files are not the recorded ones ({header['model']['path']}): sha256 "
                f"{sorted(now.items())} vs {sorted(header['model']['files'].items())}; comparing numbers"
            )
    decoders = tuple(d for d in header["decoders"] if d in available_decoders(eng))
    n_chunks = header["n_chunks"]
    mel = _recorded_mel(arrays, n_chunks, eng.streaming.pre_encode_cache_size)

    def teacher_forced(chunk, state):  # each chunk is judged on the golden's inputs
        if chunk.index == 0:
            return state
        prev = lambda name: arrays[f"chunk/{chunk.index - 1}/{name}"]  # noqa: E731
        return state.with_caches(
            prev("cache_last_channel_next"), prev("cache_last_time_next"), prev("cache_last_channel_next_len")
        )

    chunks, first, tokens = [], None, Tokens.empty(decoders, 1)
    for chunk, step, _ in iter_stream(eng, mel, decoders=decoders, prepare=teacher_forced):
        i = chunk.index
        recorded = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"chunk/{i}/")}
        outs = {
            "audio_signal": compare("audio_signal", step.audio_signal, recorded["audio_signal"]),
            "length": compare("length", step.length, recorded["length"]),
        }
        outs.update(compare_outputs(outputs_of(step.encoder, step.decoded), recorded))
        report = ChunkReport(i, outs)
        chunks.append(report)
        tokens.add(step)
        if first is None and not report.ok:
            first = first_divergence(i, {}, outs, hint=False)
    if len(chunks) != n_chunks:
        raise GoldenFormatError(
            f"{golden_file}: the header says {n_chunks} chunks but the recorded frames make "
            f"{len(chunks)}: the file was changed after recording; record it again"
        )
    golden_tokens = {d: header["tokens"][d] for d in decoders}
    mine = {d: tokens.of(d) for d in decoders}
    first = first or token_divergence(golden_tokens, mine)
    return Report(
        str(golden_file),
        att,
        chunks,
        {"golden": golden_tokens, eng.name: mine},
        first,
        reference="golden",
        candidate=eng.name,
    )
