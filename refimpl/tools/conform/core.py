"""``conform``: does a runtime compute what NeMo computes on this audio, and if not, which stage parts ways, by
how much, and what it costs.

1. NeMo's pipeline (every stage NeMo's, on refimpl's arithmetic) and the runtime (the real package when it can
   run the folder, and always refimpl's emulation of it: ``pipeline.run`` with every stage the runtime's).
2. Each of the seven stages is measured on its own terms (features: |diff| of log-mel; first chunk: what the
   first call's pre-encode frames hold; last chunk: audio never decoded; decoding: frames decoded; graph: the
   graphs' outputs against NeMo's arithmetic on the same inputs). A stage deviates when its measure is outside
   float rounding (the tolerance table) or its rule differs where it applies.
3. The cost of each deviation, in tokens and words on this audio, two ways: the stage alone put into NeMo's
   pipeline (``alone``), and NeMo's stage put back into the runtime's (``if_fixed``: what fixing it recovers).

Why one module over ~350 lines: the attribution (which stage deviates, by how much, what it costs) is one
algorithm over the pipeline's stages; its report is its output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

from ...model.audio import load_audio
from ...peers import sherpa_onnx
from ..tolerances import compare
from .features_diag import diagnose
from .pipeline import NEMO, RUNTIME, STAGES, Incompatible, Run, plan, run, with_stage
from .runtimes import ConformError, folder_kind, load_user_features, open_model, open_runtime

SCHEMA = "refimpl.conform/1"


@dataclass
class Deviation:
    stage: str
    what: str
    measure: dict
    fix: str
    effect: dict  # {"tokens_changed", "words_changed"} with this stage alone the runtime's in NeMo's pipeline
    if_fixed: dict | None = None  # distance to NeMo of the runtime's pipeline with this stage NeMo's

    def as_dict(self) -> dict:
        return {
            "stage": self.stage,
            "what": self.what,
            "measure": self.measure,
            "fix": self.fix,
            "effect": self.effect,
            "if_fixed": self.if_fixed,
        }


@dataclass
class ConformReport:
    runtime: str
    engine: str  # "package" | "emulation"
    why_emulation: str | None
    model: str
    audio: str
    seconds: float
    head: str
    att_context_size: tuple
    nemo: dict  # {"tokens", "text"}
    runtime_result: dict  # {"tokens", "text"}
    emulation: dict  # {"tokens", "text", "matches_package"}
    deviations: list
    clean: list  # stages measured and found to match NeMo, with their measure
    folder_error: str | None = None
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.folder_error is None and not self.deviations and self.nemo["tokens"] == self.runtime_result["tokens"]
        )

    def as_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "runtime": self.runtime,
            "ok": self.ok,
            "engine": self.engine,
            "why_emulation": self.why_emulation,
            "model": self.model,
            "audio": self.audio,
            "seconds": self.seconds,
            "head": self.head,
            "att_context_size": list(self.att_context_size),
            "deviations": [d.as_dict() for d in self.deviations],
            "clean": self.clean,
            "text": {"nemo": self.nemo["text"], "runtime": self.runtime_result["text"]},
            "tokens": {"nemo": self.nemo["tokens"], "runtime": self.runtime_result["tokens"]},
            "emulation": self.emulation,
            "folder_error": self.folder_error,
            "notes": self.notes,
        }


def distance(side, a_tokens, b_tokens) -> dict:
    """Token and word edit distances (substitutions + deletions + insertions) between two results."""
    wa, wb = side.text(a_tokens).split(), side.text(b_tokens).split()
    return {"tokens_changed": Levenshtein.distance(a_tokens, b_tokens), "words_changed": Levenshtein.distance(wa, wb)}


def conform(
    audio,
    model,
    runtime: str,
    *,
    features=None,
    weights=None,
    head=None,
    tail_padding_seconds=None,
    impl: str = "fast",
    threads: int = 1,
    use_package: bool = True,
    resample: bool = False,
    channel: int | str | None = None,
    notices: list | None = None,
) -> ConformReport:
    """Check ``runtime`` on ``audio`` (a file path or 16 kHz samples) with the model folder ``model``. A file at
    another rate or with several channels is refused unless ``resample`` / ``channel`` (N or "mean") say what to
    do (``refimpl.model.audio.load_audio``); notices about the audio go to ``notices`` (None: AudioWarnings)."""
    samples = (
        load_audio(audio, resample=resample, channel=channel, notices=notices)
        if isinstance(audio, (str, Path))
        else np.asarray(audio, np.float32).reshape(-1)
    )
    side = open_model(model, weights=weights, head=head, impl=impl)
    rts = open_runtime(
        runtime, model, side, tail_padding_seconds=tail_padding_seconds, threads=threads, use_package=use_package
    )
    user = load_user_features(features, side.config.encoder.feat_in) if features is not None else None
    return attribute(
        samples,
        side,
        rts,
        user=user,
        features_path=features,
        model_name=str(model),
        audio_name=str(audio) if isinstance(audio, (str, Path)) else "(samples)",
    )


def attribute(samples, side, rts, *, user=None, features_path=None, model_name="", audio_name="") -> ConformReport:
    """The comparison itself, for a NeMo side (``runtimes.open_model``) and a runtime side (``open_runtime``, or
    any ``RuntimeSide`` whose ``Runtime`` differs from NeMo's in the stages under test)."""
    m, rt = side.model, rts.runtime
    runtime, features = rt.name, features_path
    nemo = run(samples, plan(), m, rt)
    nemo_res = {"tokens": nemo.tokens, "text": side.text(nemo.tokens)}
    base = dict(
        runtime=runtime,
        why_emulation=rts.why_emulation,
        model=model_name,
        audio=audio_name,
        seconds=len(samples) / 16000,
        head=side.head,
        att_context_size=side.att_context_size,
        nemo=nemo_res,
        notes=list(side.notes) + list(rts.notes),
    )
    if rts.folder_error is not None:
        return ConformReport(
            engine=rts.engine,
            runtime_result={"tokens": None, "text": None},
            emulation={"tokens": None, "text": None, "matches_package": None},
            deviations=[
                Deviation(
                    "graph",
                    f"{runtime} cannot run this folder: {rts.folder_error}",
                    {"runs": False},
                    _cannot_load_fix(runtime),
                    {"tokens_changed": len(nemo.tokens), "words_changed": len(nemo_res["text"].split())},
                )
            ],
            clean=[],
            folder_error=rts.folder_error,
            **base,
        )
    full = plan(all=RUNTIME)
    if user is not None:
        full_run = run(samples, full, m, rt, user_features=user)
    else:
        full_run = run(samples, full, m, rt)
    emu = {"tokens": full_run.tokens, "text": rts.text(full_run.tokens), "matches_package": None}
    result = emu
    if rts.run_package is not None and user is None:
        pkg_tokens = rts.run_package(samples)
        emu["matches_package"] = pkg_tokens == full_run.tokens
        result = {"tokens": pkg_tokens, "text": rts.text(pkg_tokens)}
        if not emu["matches_package"]:
            base["notes"].append(
                f"refimpl's emulation of {runtime} gives {len(full_run.tokens)} tokens where the package gives "
                f"{len(pkg_tokens)} ({Levenshtein.distance(pkg_tokens, full_run.tokens)} differ): the attribution "
                f"below is of the emulation"
            )
    elif user is not None:
        base["notes"].append(f"--features given: the runtime's features stage is {features} (the package is not run)")

    ctx = _Context(samples, side, rts, nemo, full_run, user, features)
    deviations, clean = [], []
    for stage in STAGES:
        found = MEASURES[stage](ctx)
        for dev in found["deviations"]:
            dev.effect, dev.if_fixed = ctx.effects(stage)
            deviations.append(dev)
        if not found["deviations"] and found.get("measure") is not None:
            clean.append({"stage": stage, "measure": found["measure"]})
    return ConformReport(
        engine=rts.engine, runtime_result=result, emulation=emu, deviations=deviations, clean=clean, **base
    )


def _cannot_load_fix(runtime: str) -> str:
    if runtime == "onnx-asr":
        return (
            "for onnx-asr, export without cache support (model.export('model.onnx') with cache_support False) and "
            "write its vocab.txt as 'token id' lines; to stream, use an export with cache support in sherpa-onnx "
            "or your own loop"
        )
    return "give a folder in this runtime's layout"


class _Context:
    def __init__(self, samples, side, rts, nemo: Run, full: Run, user, features_path):
        self.samples, self.side, self.rts, self.nemo, self.full = samples, side, rts, nemo, full
        self.user, self.features_path = user, features_path
        self.m, self.rt = side.model, rts.runtime

    def run(self, p) -> Run | None:
        try:
            return run(self.samples, p, self.m, self.rt, user_features=self.user)
        except Incompatible:
            return None

    def effects(self, stage: str) -> tuple:
        alone = self.run(plan(**{stage: RUNTIME}))
        fixed = self.run(with_stage(plan(all=RUNTIME), stage, NEMO))
        eff = None if alone is None else distance(self.side, self.nemo.tokens, alone.tokens)
        if eff is None:
            eff = {
                "tokens_changed": None,
                "words_changed": None,
                "why": "this stage cannot run alone in NeMo's pipeline (a stateless graph cannot stream)",
            }
        fix = None if fixed is None else distance(self.side, self.nemo.tokens, fixed.tokens)
        return eff, fix


# --------------------------------------------------------------------------------------------------------------
# the measure of each stage
# --------------------------------------------------------------------------------------------------------------
def _features(ctx: _Context) -> dict:
    rt, m = ctx.rt, ctx.m
    if rt.features is None and ctx.user is None:
        return {"deviations": [], "measure": {"same_function": True}}
    feats, n_valid = ctx.user if ctx.user is not None else rt.features(ctx.samples)
    feats = feats[:n_valid]
    mel, valid = m.features(ctx.samples)
    d = diagnose(feats, ctx.samples, m.features, head=ctx.side.head)
    n = min(feats.shape[0], valid)
    cmp = compare("mel", feats[:n], mel[:n])
    measure = {
        "frames": d.frames,
        "nemo_frames": d.nemo_frames,
        "median_abs": d.median_abs,
        "max_abs": d.max_abs,
        "max_rel": cmp.max_rel,
        "tolerance_rel": cmp.limit,
        "feature_std": d.feature_std,
        "diagnosis": d.as_dict(),
    }
    if cmp.ok and d.frames == d.nemo_frames:
        return {"deviations": [], "measure": measure}
    who = f"{ctx.features_path}" if ctx.user is not None else f"{rt.name}'s front end"
    findings = d.findings() or [f"differs by median {d.median_abs:.3g}, max {d.max_abs:.3g}"]
    what = (
        f"{who}: median |diff log-mel| {d.median_abs:.2g} (max {d.max_abs:.2g}; NeMo's features have std "
        f"{d.feature_std:.2g}) at the same frame index; " + "; ".join(findings)
    )
    return {"deviations": [Deviation("features", what, measure, d.fix() or "compute NeMo's log-mel", {})]}


def _normalization(ctx: _Context) -> dict:
    rt, m = ctx.rt, ctx.m
    measure = {"runtime": rt.normalization, "model": m.normalization}
    if rt.normalization == m.normalization:
        return {"deviations": [], "measure": measure}
    from .pipeline import per_feature

    mel, valid = m.features(ctx.samples)
    moved = np.abs(per_feature(mel, valid)[:valid] - mel[:valid]) if rt.normalization == "per_feature" else None
    if moved is not None:
        measure["median_abs"] = float(np.median(moved))
    what = (
        f"{rt.name} normalises its features {rt.normalization} (each mel bin to mean 0, std 1 over the utterance); "
        f"the model was trained with normalize {m.normalization}"
        + (f": the features move by median {measure['median_abs']:.2g}" if moved is not None else "")
    )
    fix = (
        f"do not normalise: this model was trained with normalize {m.normalization}"
        if m.normalization == "NA"
        else f"normalise {m.normalization}, as the model was trained"
    )
    return {"deviations": [Deviation("normalization", what, measure, fix, {})]}


def _first_chunk(ctx: _Context) -> dict:
    rt, m = ctx.rt, ctx.m
    if rt.window is None:  # offline: no chunks
        return {"deviations": [], "measure": None}
    pre = (rt.window - rt.shift) if rt.window else m.window - m.shift
    measure = {
        "runtime_first_window": [0, rt.window] if rt.first_chunk == "frames" else [-pre, m.shift],
        "pre_encode_frames": pre,
    }
    if rt.first_chunk != "frames":
        return {"deviations": [], "measure": measure}
    what = (
        f"the first window is mel frames [0, {rt.window}): frames 0..{pre - 1} ({pre * 10} ms) are its pre-encode "
        f"cache (NeMo feeds {pre} zero frames there) and are never decoded; every chunk border sits {pre} frames "
        f"({pre * 10} ms) later than NeMo's"
    )
    fix = (
        f"start with {pre} zero frames: the first call's audio_signal is [{pre} zeros | frames 0..{m.shift - 1}], "
        f"later calls [the {pre} frames before the chunk | the chunk's {m.shift}]"
    )
    return {"deviations": [Deviation("first_chunk", what, measure, fix, {})]}


def _chunking(ctx: _Context) -> dict:
    rt, m, full = ctx.rt, ctx.m, ctx.full
    devs = []
    if rt.length == "offline":
        measure = {"calls": 1, "nemo_calls": len(ctx.nemo.calls), "frames": full.valid_frames}
        what = (
            f"{rt.name} runs the whole utterance in one call ({full.valid_frames} frames) on a stateless export, "
            f"where NeMo streams {len(ctx.nemo.calls)} chunks. The export keeps the look-ahead "
            f"{list(ctx.side.att_context_size)} in its attention mask, but NeMo's streaming equals one offline pass "
            f"over [{m.window - m.shift} zero frames | features] with the first "
            f"{m.drop_extra_pre_encoded} subsampled frames dropped: offline, the "
            f"subsampling grid sits one mel frame earlier and the first chunk's edge is padded differently"
        )
        fix = (
            "to get NeMo's streaming result, export with cache support and stream it with the caches carried "
            "(sherpa-onnx with NeMo's first chunk, or your own loop); onnx-asr gives NeMo's offline result at best"
        )
        return {"deviations": [Deviation("chunking", what, measure, fix, {})]}
    measure = {"window": rt.window, "shift": rt.shift, "nemo_window": m.window, "nemo_shift": m.shift}
    if (rt.window, rt.shift) != (m.window, m.shift):
        what = (
            f"windows of {rt.window} mel frames advancing {rt.shift}; the model's look-ahead "
            f"{list(ctx.side.att_context_size)} needs {m.window} advancing {m.shift}"
        )
        devs.append(Deviation("chunking", what, measure, f"use window_size {m.window} and chunk_shift {m.shift}", {}))
    padded = [c for c in full.calls if c.length != (c.new_start - c.start) + c.n_new]
    measure["calls_length_not_valid"] = len(padded)
    if padded:
        c = padded[0]
        what = (
            f"{len(padded)} call(s) say length {c.length} for a window holding {c.new_start - c.start + c.n_new} "
            f"real frames (call {c.index}): the padding is encoded as audio"
        )
        devs.append(Deviation("chunking", what, measure, "pass length = pre-encode frames + real new frames", {}))
    info = ctx.side.peer_info
    for chk in info.mismatches if info is not None else []:
        devs.append(
            Deviation(
                "chunking" if chk.key in ("window_size", "chunk_shift") else "graph",
                chk.message(info.folder.path.name),
                {"key": chk.key, "metadata": chk.metadata, "graph": chk.graph},
                f"write {chk.key}={chk.graph!r} in the metadata",
                {},
            )
        )
    return {"deviations": devs, "measure": measure}


def _last_chunk(ctx: _Context) -> dict:
    rt, full, nemo = ctx.rt, ctx.full, ctx.nemo
    measure = {
        "unheard_seconds": round(full.unheard_seconds, 4),
        "nemo_unheard_seconds": round(nemo.unheard_seconds, 4),
        "tail_padding_seconds": rt.tail_padding_seconds,
    }
    if rt.last_chunk != "strict" or full.unheard_seconds <= nemo.unheard_seconds + 1e-9:
        return {"deviations": [], "measure": measure}
    assert rt.window is not None and rt.shift is not None
    need = _padding_needed(len(ctx.samples), rt.window, rt.shift)
    worst = _padding_worst(rt.window, rt.shift)
    measure |= {"padding_needed_seconds": need, "padding_needed_any_length_seconds": worst}
    pad = f"{rt.tail_padding_seconds:g} s of tail padding" if rt.tail_padding_seconds else "no tail padding"
    what = (
        f"a window runs only while its end is strictly before the frames ready, so the last partial chunk never "
        f"runs: with {pad}, the last {full.unheard_seconds:.3g} s of audio are never decoded (NeMo: "
        f"{nemo.unheard_seconds:.3g} s, its last chunk runs partial)"
    )
    fix = f"pad >= {need:g} s of silence at the end of this audio (>= {worst:g} s covers any length)"
    return {"deviations": [Deviation("last_chunk", what, measure, fix, {})]}


def _padding_needed(n: int, window: int, shift: int) -> float:
    """Least tail padding (10 ms steps) after which sherpa's walk leaves no audio unheard."""
    for k in range(0, 4 * window):
        pad = k / 100
        if sherpa_onnx.schedule(n, window, shift, tail_padding_seconds=pad).unheard_samples == 0:
            return pad
    return float("nan")


def _padding_worst(window: int, shift: int) -> float:
    """The padding that covers every length: the worst case over one shift's worth of lengths."""
    base = 160 * (window + 4 * shift)
    return max(_padding_needed(base + 160 * j + r, window, shift) for j in range(shift + 1) for r in (0, 80))


def _decoding(ctx: _Context) -> dict:
    rt, m, full, nemo = ctx.rt, ctx.m, ctx.full, ctx.nemo
    decoded = sum(c.decoded_frames for c in full.calls)
    valid = sum(
        min(c.encoded_length, c.first.shape[2] if ctx.side.head == "rnnt" else c.first.shape[1]) for c in full.calls
    )
    measure = {
        "frames_decoded": decoded,
        "frames_valid": valid,
        "max_symbols": rt.max_symbols,
        "nemo_max_symbols": m.max_symbols,
    }
    devs = []
    if decoded != valid:
        what = f"{rt.name} decodes {decoded} encoder frames where the graph says {valid} are valid" + (
            " (CTC: (n - 1) // subsampling + 1 frames, one fewer than the causal subsampling gives)"
            if rt.decoding == "onnx-asr" and ctx.side.head == "ctc"
            else ""
        )
        devs.append(Deviation("decoding", what, measure, "decode exactly encoded_lengths frames of each call", {}))
    if ctx.side.head == "rnnt" and rt.max_symbols != m.max_symbols:
        cap = min(rt.max_symbols, m.max_symbols)
        per_frame = np.bincount(nemo.token_frames) if nemo.token_frames else np.zeros(1, int)
        hits = int((per_frame >= cap).sum())
        measure["frames_at_cap"] = hits
        if hits:
            devs.append(
                Deviation(
                    "decoding",
                    f"at most {rt.max_symbols} tokens per frame (NeMo: {m.max_symbols}); {hits} frame(s) reach {cap}",
                    measure,
                    f"allow {m.max_symbols} symbols per frame",
                    {},
                )
            )
    return {"deviations": devs, "measure": measure}


def _graph(ctx: _Context) -> dict:
    full = ctx.full
    ref = ctx.run(with_stage(plan(all=RUNTIME), "graph", NEMO))
    if ref is None or len(ref.calls) != len(full.calls):
        return {"deviations": [], "measure": None}
    name = "outputs" if ctx.side.head == "rnnt" else "logprobs"
    worst = None
    for a, b in zip(full.calls, ref.calls):
        n = min(a.encoded_length, b.encoded_length)
        sl = (slice(None), slice(None), slice(0, n)) if name == "outputs" else (slice(None), slice(0, n))
        cmp = compare(name, a.first[sl], b.first[sl])
        if worst is None or cmp.max_rel > worst[0].max_rel:
            worst = (cmp, a.index)
    assert worst is not None
    cmp, index = worst
    measure = {
        "tensor": name,
        "max_rel": cmp.max_rel,
        "max_abs": cmp.max_abs,
        "tolerance_rel": cmp.limit,
        "worst_call": index,
        "calls": len(full.calls),
    }
    if cmp.ok:
        return {"deviations": [], "measure": measure}
    info = ctx.side.peer_info
    quant = info is not None and info.folder.quantized
    what = (
        f"{ctx.rt.graph.label} against NeMo's arithmetic on the same {len(full.calls)} inputs: {name} max rel "
        f"{cmp.max_rel:.2g} (max abs {cmp.max_abs:.2g}; float32 rounding stays under {cmp.limit:g}), worst in call "
        f"{index}" + (": int8 weights and dynamically quantized activations" if quant else "")
    )
    fix = (
        "use the float32 graphs (or accept the quantization cost below)"
        if quant
        else f"the graph does not compute NeMo's function: refimpl crosscheck --model {ctx.side.weights_from}"
    )
    return {"deviations": [Deviation("graph", what, measure, fix, {})]}


MEASURES = {
    "features": _features,
    "normalization": _normalization,
    "first_chunk": _first_chunk,
    "chunking": _chunking,
    "last_chunk": _last_chunk,
    "decoding": _decoding,
    "graph": _graph,
}

__all__ = ["conform", "ConformReport", "Deviation", "ConformError", "SCHEMA", "folder_kind"]
