"""Golden files for a user's own deployment: record onnxruntime's per-chunk inputs and outputs once, verify any
engine (a re-export, an optimised or quantised graph, refimpl) against them later.

Format (an .npz, versioned): ``__header__`` holds JSON (format, version, versions of the tools, sha256 of the
model files and the audio, settings, final tokens and text); per chunk i ``chunk/<i>/audio_signal`` and
``chunk/<i>/length`` (the encoder inputs) and onnxruntime's outputs ``chunk/<i>/<name>``; ``tokens/<decoder>``.
The cache inputs of chunk i are not stored: they are zeros at chunk 0 and chunk i-1's ``*_next`` outputs.

Writing is atomic (``weights_tools.outputs.atomic_write``): the file at ``out`` is exactly the path given (no
``.npz`` appended) and is never seen half-written, even by a second ``record`` racing to the same path. Reading
checks the header and every recorded array before anything runs: a truncated, edited or foreign file is a
GoldenFormatError naming what is wrong, never a traceback and never a comparison that passes on missing data.

Why one module over ~350 lines: recording, the file format's checks and verification are one contract; a
reader who changes one must see the other two.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime

from weights_tools import find_export
from weights_tools.errors import one_line
from weights_tools.outputs import atomic_write, output_path

from .. import __version__
from ..runtime.engines import open_engine
from ..runtime.features import features
from ..runtime.lookahead import parse_att_context_size
from ..runtime.loop import iter_stream
from ..runtime.onnx_engine import OnnxEngine
from ..runtime.streaming import DECODERS, Tokens, available_decoders
from ..runtime.tokenizer import Tokenizer
from .contract import stateless_message
from .crosscheck import compare_outputs, outputs_of
from .report import ChunkReport, Report, first_divergence, token_divergence
from .tolerances import compare

FORMAT = "refimpl-golden"
VERSION = 1
# Every recorded chunk holds these arrays, plus the encoder's first output ("outputs", or "logprobs" for a CTC
# single-graph export). Verification compares exactly what is recorded, so a missing one is a format error.
CHUNK_ARRAYS = (
    "audio_signal",
    "length",
    "encoded_lengths",
    "cache_last_channel_next",
    "cache_last_time_next",
    "cache_last_channel_next_len",
)
FIRST_OUTPUTS = ("outputs", "logprobs")
_CHUNK_KEY = re.compile(r"chunk/(\d+)/(.+)")


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


def record(model, audio, out, *, att_context_size=None, threads: int = 1, notices: list | None = None) -> dict:
    """Stream ``audio`` through onnxruntime on ``model`` and write the golden file ``out`` (exactly that path,
    atomically). Returns the header."""
    out = output_path(out, what="golden file", example="golden.npz")  # refused before anything runs
    engine = OnnxEngine(model, att_context_size=parse_att_context_size(att_context_size), threads=threads)
    if not engine.has_cache_io:
        raise ValueError(stateless_message(engine.files.encoder or engine.files.ctc))
    mel, seconds = features(audio, engine.config, notices=notices)
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
    atomic_write(out, lambda f: np.savez_compressed(f, **cast(dict[str, Any], arrays)), what="golden file")
    return header


def read_golden(path) -> tuple:
    """(header, arrays) of a golden file; GoldenFormatError with the reason if it is not one we can read: not a
    zip, truncated, a header that is not this format's (wrong type, version, fields), or recorded arrays missing,
    surplus or of the wrong kind."""
    p = Path(path)
    try:
        is_file = p.is_file()
    except OSError as e:  # ENAMETOOLONG, ELOOP, ...
        raise GoldenFormatError(f"golden file {str(p)!r} cannot be opened: {e.strerror or e}") from None
    if not is_file:
        raise FileNotFoundError(f"{p}: no such golden file (make one with `refimpl golden record`)")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise GoldenFormatError(
            f"{p} is not an .npz (zip) file: it starts with {magic!r}; pass the file written by `refimpl golden record`"
        )
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, zlib.error, EOFError, ValueError ...: all mean an unreadable file
        raise GoldenFormatError(
            f"{p} ({p.stat().st_size} bytes) is not a readable .npz ({type(e).__name__}: {one_line(e)}); it is "
            f"truncated or corrupted: record it again"
        ) from None
    if "__header__" not in arrays:
        raise GoldenFormatError(
            f"{p} has no __header__: not a refimpl golden file (record one with `refimpl golden record`)"
        )
    try:
        header = json.loads(str(arrays.pop("__header__")))
    except json.JSONDecodeError as e:
        raise GoldenFormatError(f"{p}: its header is not valid JSON ({one_line(e)})") from None
    _check_header(p, header)
    _check_arrays(p, header, arrays)
    return header, arrays


def _check_header(p: Path, header) -> None:
    if not isinstance(header, dict):
        raise GoldenFormatError(
            f"{p}: its header is a JSON {type(header).__name__}, expected an object with format {FORMAT!r} and "
            f"version {VERSION}: not a file written by `refimpl golden record`; record it again"
        )
    if header.get("format") != FORMAT:
        raise GoldenFormatError(f"{p}: format {header.get('format')!r}, expected {FORMAT!r}")
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise GoldenFormatError(
            f"{p}: golden format version {version!r} is a {type(version).__name__}, expected the integer "
            f"{VERSION}: the header was edited or written by another tool; record it again"
        )
    if version != VERSION:
        raise GoldenFormatError(
            f"{p}: golden format version {version}, this refimpl reads version "
            f"{VERSION}: {'upgrade refimpl' if version > VERSION else 'record it again'}"
        )

    def bad(field: str, found, expected: str):
        return GoldenFormatError(
            f"{p}: header field {field!r} is {found!r}, expected {expected}: the file was changed after recording; "
            f"record it again"
        )

    n = header.get("n_chunks")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise bad("n_chunks", n, "a positive integer")
    att = header.get("att_context_size")
    if not (
        isinstance(att, list) and len(att) == 2 and all(isinstance(a, int) and not isinstance(a, bool) for a in att)
    ):
        raise bad("att_context_size", att, "[left, right] integers")
    decoders = header.get("decoders")
    if not (isinstance(decoders, list) and decoders and all(d in DECODERS for d in decoders)):
        raise bad("decoders", decoders, f"a non-empty list of {list(DECODERS)}")
    tokens = header.get("tokens")
    if not isinstance(tokens, dict):
        raise bad("tokens", tokens, "an object {decoder: [token ids]}")
    for d in decoders:
        t = tokens.get(d)
        if not (isinstance(t, list) and all(isinstance(k, int) and not isinstance(k, bool) for k in t)):
            raise bad(f"tokens.{d}", t, "a list of token ids")
    model = header.get("model")
    if not (isinstance(model, dict) and isinstance(model.get("files"), dict)):
        raise bad("model", model, "an object with the recorded model 'files' and their sha256")


def _check_arrays(p: Path, header: dict, arrays: dict) -> None:
    """Every chunk the header counts holds every recorded array (and no chunk beyond them), of the right kind."""
    n = header["n_chunks"]
    missing, beyond = [], set()
    for key in arrays:
        m = _CHUNK_KEY.fullmatch(key)
        if m and int(m.group(1)) >= n:
            beyond.add(int(m.group(1)))
    for i in range(n):
        missing += [f"chunk/{i}/{name}" for name in CHUNK_ARRAYS if f"chunk/{i}/{name}" not in arrays]
        if not any(f"chunk/{i}/{name}" in arrays for name in FIRST_OUTPUTS):
            missing.append(f"chunk/{i}/outputs (or logprobs)")
    if missing:
        shown = ", ".join(missing[:4]) + (f", ... ({len(missing) - 4} more)" if len(missing) > 4 else "")
        raise GoldenFormatError(
            f"{p}: {len(missing)} recorded array(s) of the {n} chunks the header counts are missing: {shown}; the "
            f"file was changed after recording (nothing to compare them with): record it again"
        )
    if beyond:
        raise GoldenFormatError(
            f"{p}: it holds chunk(s) {sorted(beyond)[:4]} beyond the {n} chunks its header counts (n_chunks was "
            f"changed after recording): record it again"
        )
    for i in range(n):
        x, length = arrays[f"chunk/{i}/audio_signal"], arrays[f"chunk/{i}/length"]
        if x.ndim != 3 or x.dtype.kind != "f" or x.shape[0] != 1:
            raise GoldenFormatError(
                f"{p}: chunk/{i}/audio_signal is {x.dtype} {list(x.shape)}, expected float [1, feat_in, T]: "
                f"record it again"
            )
        if length.shape != (1,) or length.dtype.kind not in "iu" or not 0 <= int(length[0]) <= x.shape[2]:
            raise GoldenFormatError(
                f"{p}: chunk/{i}/length is {length.dtype} {length.tolist()}, expected one integer in 0..{x.shape[2]} "
                f"(the frames of audio_signal): record it again"
            )
        for name in ("encoded_lengths", "cache_last_channel_next_len"):
            a = arrays[f"chunk/{i}/{name}"]
            if a.shape != (1,) or a.dtype.kind not in "iu":
                raise GoldenFormatError(
                    f"{p}: chunk/{i}/{name} is {a.dtype} {list(a.shape)}, expected one integer: record it again"
                )
    for d in header["decoders"]:
        stored = arrays.get(f"tokens/{d}")
        if stored is not None and stored.tolist() != header["tokens"][d]:
            raise GoldenFormatError(
                f"{p}: tokens/{d} ({len(stored)} tokens) disagrees with the header's tokens.{d} "
                f"({len(header['tokens'][d])}): the file was changed after recording; record it again"
            )


def _check_against_engine(p, arrays: dict, n_chunks: int, eng) -> None:
    """The recorded chunks fit the model they are verified on (else its engine would fail half-way)."""
    enc, s = eng.config.encoder, eng.streaming
    want = {
        "cache_last_channel_next": [1, enc.n_layers, s.last_channel_cache_size, enc.d_model],
        "cache_last_time_next": [1, enc.n_layers, enc.d_model, s.conv_cache_size],
    }
    for i in range(n_chunks):
        x = arrays[f"chunk/{i}/audio_signal"]
        if x.shape[1] != enc.feat_in or int(arrays[f"chunk/{i}/length"][0]) < s.pre_encode_cache_size:
            raise GoldenFormatError(
                f"{p}: chunk/{i}/audio_signal {list(x.shape)} (length {int(arrays[f'chunk/{i}/length'][0])}) "
                f"does not fit this model ({enc.feat_in} mel bins, {s.pre_encode_cache_size} pre-encode frames): "
                f"the golden was recorded on another model"
            )
        for name, shape in want.items():
            a = arrays[f"chunk/{i}/{name}"]
            if list(a.shape) != shape or a.dtype.kind != "f":
                raise GoldenFormatError(
                    f"{p}: chunk/{i}/{name} is {a.dtype} {list(a.shape)}, this model's is float32 {shape}: the "
                    f"golden was recorded on another model or edited"
                )


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
    _check_against_engine(golden_file, arrays, n_chunks, eng)
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
