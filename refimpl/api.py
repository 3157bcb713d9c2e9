"""The Python API behind the CLI: open an engine, make features, transcribe, score a NeMo manifest.

from refimpl import api
t = api.transcribe("tests/fixtures/audio/fox.wav", "tests/fixtures/hybrid/att-70-13")
print(t.text, t.tokens)

m = api.open_model("tests/fixtures/hybrid/model.nemo")                 # opened once
for att in api.lookaheads(m, "all"):                                   # every look-ahead the .nemo serves
    r = api.evaluate_manifest(api.read_manifest("manifest.json"), m, att_context_size=att)
    print(att, r["wer"], r["cer"])

Why one module over ~350 lines: one thin function per task the CLI offers (open, features, transcribe,
score a manifest); kept in one file, it reads as the index of what refimpl does.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jiwer
import numpy as np

from weights_tools import plan_onnx, read_nemo_config

from .model.audio import notice
from .runtime.engines import IMPLS, load_model, open_engine
from .runtime.features import features
from .runtime.live import Model
from .runtime.lookahead import parse_att_context_size
from .runtime.streaming import DECODERS
from .tools.contract import check_same_architecture, stateless_message

__all__ = [
    "DECODERS",
    "IMPLS",
    "ManifestEntry",
    "ManifestError",
    "Transcript",
    "evaluate_manifest",
    "features",
    "load_model",
    "lookaheads",
    "open_engine",
    "open_model",
    "parse_att_context_size",
    "read_manifest",
    "transcribe",
    "word_errors",
]

ALL = "all"  # lookaheads(model, "all"): every look-ahead the model serves


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
    audio_filepath: str | None = None  # the file transcribed (None for an array)
    notes: list = field(default_factory=list)  # the notices about this audio (resampled, truncated WAV, ...)

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
    resample: bool = False,
    channel: int | str | None = None,
    notes: list | None = None,
) -> Transcript | list[Transcript]:
    """Stream ``audio`` (path or array; a list of them -> a list of Transcripts) through ``model`` chunk by chunk
    and decode greedily, exactly as NeMo's cache-aware streaming does.

    ``model``: a path (opened here, see ``open_model``) or a ``Model`` already open (``engine``, ``weights``,
    ``impl``, ``backend``, ``dtype`` and ``threads`` are then its own); ``att_context_size``: the look-ahead (a
    .nemo serves each of its list); ``decoder``: "rnnt" or "ctc", by default the model's RNNT head if it has one,
    else its CTC head; ``order``: "block" (default for refimpl: chunks in blocks, the same results) or "step";
    ``resample``, ``channel``: a file at another rate, or with several channels, made mono at the model's rate
    instead of refused (``refimpl.model.audio.load_audio``). Notices go to ``notes`` (a list; None: as
    AudioWarnings), each transcript's own also to its ``notes``."""
    if decoder is not None and decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if isinstance(model, Model):
        m = model
    else:
        m = open_model(
            model,
            engine=engine,
            att_context_size=att_context_size,
            weights=weights,
            impl=impl,
            backend=backend,
            dtype=dtype,
            threads=threads,
            notes=notes,
        )
    one = dict(
        decoder=decoder, att_context_size=att_context_size, order=order, resample=resample, channel=channel, notes=notes
    )
    if isinstance(audio, (list, tuple)):
        return [_transcribe_one(a, m, **one) for a in audio]
    return _transcribe_one(audio, m, **one)


def open_model(
    model,
    *,
    engine="refimpl",
    att_context_size=None,
    weights=None,
    impl: str = "fast",
    backend: str | None = None,
    dtype=np.float32,
    threads: int = 1,
    notes: list | None = None,
) -> Model:
    """``model`` opened once for ``transcribe`` and ``evaluate_manifest``: ``engine`` "refimpl", "onnxruntime", or
    an engine already open (``open_engine``); ``weights``: refimpl's weights from another file of the same model
    (a .nemo, another export), checked to be the same architecture. An export without cache support is refused
    by onnxruntime; refimpl streams its weights anyway, with a note in ``notes``."""
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
    return m


def _transcribe_one(audio, m: Model, *, decoder, att_context_size, order, resample, channel, notes) -> Transcript:
    order = order or m.engine_for(att_context_size).orders[-1]
    own: list = []
    t0 = time.perf_counter()
    r = m.transcribe(
        audio,
        att_context_size=att_context_size,
        decoder=decoder,
        order=order,
        notices=own,
        resample=resample,
        channel=channel,
    )
    elapsed = time.perf_counter() - t0
    for n in own:
        notice(n, notes)
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
        audio_filepath=str(audio) if isinstance(audio, (str, Path)) else None,
        notes=own,
    )


def served_lookaheads(m: Model) -> list:
    """Every look-ahead ``m`` serves: a .nemo's whole att_context_size list (refimpl computes its masks), an ONNX
    encoder the one it was exported for."""
    enc = m.config.encoder
    if m.engine.name == "onnxruntime" or not enc.att_context_sizes:
        return [tuple(enc.att_context_size)]
    return [tuple(a) for a in enc.att_context_sizes]


def lookaheads(m: Model, asked=None) -> list:
    """The look-aheads to run, as (left, right) tuples: ``asked`` None -> the model's default one, "all" (or a
    list holding it) -> ``served_lookaheads(m)``, else each of a list of 'L,R' strings or pairs, once each."""
    if asked is None:
        return [tuple(m.config.encoder.att_context_size)]
    asked = [asked] if isinstance(asked, str) else list(asked)
    if ALL in asked:
        return served_lookaheads(m)
    return list(dict.fromkeys(parse_att_context_size(a) for a in asked))


# --- NeMo manifests -------------------------------------------------------------------------------------------


class ManifestError(ValueError):
    """A manifest line refimpl cannot score: the message names the file and the line."""


@dataclass(frozen=True)
class ManifestEntry:
    """One line of a NeMo manifest: ``audio_filepath`` (resolved), ``text`` (the reference), ``duration``."""

    line: int
    audio_filepath: Path
    text: str
    duration: float | None = None


MANIFEST_EXAMPLE = '{"audio_filepath": "audio/1.wav", "duration": 3.2, "text": "the reference words"}'


def read_manifest(path) -> list:
    """NeMo's manifest (JSON lines with ``audio_filepath``, ``duration``, ``text``) -> ManifestEntry list. A
    relative ``audio_filepath`` is resolved against the manifest's folder, as NeMo does; blank lines are skipped.
    A bad JSON line, a line without ``text`` or ``audio_filepath``, or an audio file that does not exist is a
    ManifestError naming the line (FileNotFoundError for a missing manifest)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"manifest {str(p)!r} does not exist")
    if p.is_dir():
        raise ManifestError(f"manifest {str(p)!r} is a folder; pass NeMo's manifest file (JSON lines)")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ManifestError(
            f"manifest {str(p)!r} is not UTF-8 text (byte {e.start}); NeMo's manifest is JSON lines such as "
            f"{MANIFEST_EXAMPLE}"
        ) from None
    entries = [_manifest_entry(p, i, line) for i, line in enumerate(lines, 1) if line.strip()]
    if not entries:
        raise ManifestError(f"manifest {str(p)!r} holds no entries; each line is one JSON object: {MANIFEST_EXAMPLE}")
    return entries


def _manifest_entry(manifest: Path, i: int, line: str) -> ManifestEntry:
    where = f"manifest {str(manifest)!r} line {i}"
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(
            f"{where} is not JSON ({e.msg} at column {e.colno}); each line is one JSON object: {MANIFEST_EXAMPLE}"
        ) from None
    if not isinstance(d, dict):
        raise ManifestError(f"{where} is a JSON {type(d).__name__}, expected an object: {MANIFEST_EXAMPLE}")
    for key, why in (("audio_filepath", "the audio file"), ("text", "the reference transcript WER is measured on")):
        if key not in d:
            raise ManifestError(
                f"{where} has no {key!r} ({why}); found keys {sorted(d)}: add it, e.g. {MANIFEST_EXAMPLE}"
            )
        if not isinstance(d[key], str):
            raise ManifestError(f"{where}: {key!r} is a JSON {type(d[key]).__name__}, expected a string")
    audio = Path(d["audio_filepath"])
    resolved = audio if audio.is_absolute() else manifest.parent / audio
    if not resolved.is_file():
        relative = "" if audio.is_absolute() else " (a relative path is resolved against the manifest's folder)"
        raise ManifestError(
            f"{where}: audio_filepath {d['audio_filepath']!r} -> {str(resolved)!r} does not exist{relative}"
        )
    duration = d.get("duration")
    return ManifestEntry(i, resolved, d["text"], float(duration) if isinstance(duration, (int, float)) else None)


def word_errors(references: list, hypotheses: list) -> dict:
    """Corpus WER and CER of ``hypotheses`` against ``references`` (jiwer, on the texts as they are: NeMo's
    manifests hold normalised text), with the word counts behind the WER."""
    w = jiwer.process_words(list(references), list(hypotheses))
    c = jiwer.process_characters(list(references), list(hypotheses))
    return {
        "wer": float(w.wer),
        "cer": float(c.cer),
        "words": int(w.hits + w.substitutions + w.deletions),
        "errors": {
            "substitutions": int(w.substitutions),
            "deletions": int(w.deletions),
            "insertions": int(w.insertions),
        },
    }


def evaluate_manifest(
    entries,
    m: Model,
    *,
    att_context_size=None,
    decoder: str | None = None,
    order: str | None = None,
    resample: bool = False,
    channel: int | str | None = None,
    notes: list | None = None,
    on_entry=None,
) -> dict:
    """Transcribe every manifest entry at one look-ahead and score it: {"att_context_size", "decoder", "wer",
    "cer", "words", "errors", "per_entry": [{"line", "audio_filepath", "duration", "text", "pred_text" (NeMo's
    name for the hypothesis), "wer", "cer", "words", "errors", "notes"}]}. ``on_entry(entry, transcript)`` is
    called as each is done."""
    per_entry, transcripts = [], []
    for e in entries:
        t = _transcribe_one(
            str(e.audio_filepath),
            m,
            decoder=decoder,
            att_context_size=att_context_size,
            order=order,
            resample=resample,
            channel=channel,
            notes=notes,
        )
        transcripts.append(t)
        per_entry.append(
            {
                "line": e.line,
                "audio_filepath": str(e.audio_filepath),
                "duration": e.duration,
                "text": e.text,
                "pred_text": t.text,
                **word_errors([e.text], [t.text]),
                "notes": t.notes,
            }
        )
        if on_entry is not None:
            on_entry(e, t)
    return {
        "att_context_size": transcripts[0].att_context_size,
        "decoder": transcripts[0].decoder,
        **word_errors([e.text for e in entries], [t.text for t in transcripts]),
        "per_entry": per_entry,
    }


def _config_of(path):
    """A model's config without reading its weights."""
    return read_nemo_config(path) if Path(path).suffix == ".nemo" else plan_onnx(path).config
