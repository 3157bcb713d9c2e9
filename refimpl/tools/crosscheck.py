"""Run onnxruntime (on NeMo's export) and refimpl side by side, chunk by chunk, and find where they part ways.

Both engines are driven by the same driver (``refimpl.streaming``) over the same chunks; each carries and
feeds back its own caches, so a difference in either the arithmetic or the state handling shows up at the
first chunk it affects. Per chunk, every encoder output and cache output is compared under the tolerance
table; every decoder_joint call onnxruntime made is replayed through refimpl on the same inputs (logits and
LSTM states compared); with ``layers=True`` each layer's intermediate tensors are compared too. The report
names the first chunk, tensor, layer and frame over tolerance.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..runtime.chunking import chunk_schedule
from .taps import layer_of, tap_order
from ..runtime.streaming import available_decoders, initial_state, stream_step
from .tolerances import compare, tolerance_for

ENCODER_OUTPUTS = ("outputs", "logprobs", "encoded_lengths", "cache_last_channel_next", "cache_last_time_next",
                   "cache_last_channel_next_len")
DECODER_OUTPUTS = ("decoder_joint.outputs", "decoder_joint.output_states_1", "decoder_joint.output_states_2")


@dataclass
class ChunkReport:
    index: int
    outputs: dict  # name -> Comparison
    layers: dict = field(default_factory=dict)  # tap name -> Comparison

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.outputs.values()) and all(c.ok for c in self.layers.values())


@dataclass
class CrosscheckReport:
    model: str
    att_context_size: tuple
    chunks: list
    tokens: dict  # engine -> decoder -> list of token ids
    first_divergence: dict | None
    dropped_tail_frames: int = 0
    mode: str = "streaming"  # or "offline": an export without cache support, compared in one call
    reference: str = "onnxruntime"  # keys of `tokens`
    candidate: str = "refimpl"

    @property
    def tokens_ok(self) -> bool:
        ref, cand = self.tokens[self.reference], self.tokens[self.candidate]
        return all(ref[d] == cand.get(d) for d in ref)

    @property
    def ok(self) -> bool:
        return self.first_divergence is None and self.tokens_ok

    def worst(self) -> dict:
        """name -> (max_abs, max_rel) over all chunks."""
        out = {}
        for ch in self.chunks:
            for name, c in list(ch.outputs.items()) + list(ch.layers.items()):
                a, r = out.get(name, (0.0, 0.0))
                out[name] = (max(a, c.max_abs), max(r, c.max_rel))
        return out

    def as_dict(self) -> dict:
        return {"ok": self.ok, "model": self.model, "mode": self.mode, "att_context_size": list(self.att_context_size),
                "chunks": [{"index": ch.index, "outputs": {k: v.as_dict() for k, v in ch.outputs.items()},
                            **({"layers": {k: v.as_dict() for k, v in ch.layers.items()}} if ch.layers else {})}
                           for ch in self.chunks],
                "first_divergence": self.first_divergence, "tokens": self.tokens}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)


class _Recorder:
    """Wraps an engine's decoder_joint and keeps every call's inputs and outputs (for replay)."""

    def __init__(self, engine):
        self.engine = engine
        self.calls = []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def decoder_joint(self, frames, tokens, h, c):
        out = self.engine.decoder_joint(frames, tokens, h, c)
        self.calls.append(((frames, tokens, h, c), out))
        return out


def _replay_decoder(calls, engine) -> dict:
    """refimpl's decoder_joint replayed on every call onnxruntime made in this chunk: per output, the worst
    comparison (the first failing one, else the largest max_rel)."""
    worst = {}
    for inputs, expected in calls:
        got = engine.decoder_joint(*inputs)
        for name, key, a, r in zip(DECODER_OUTPUTS, ("decoder_logits", "lstm_state", "lstm_state"), got, expected):
            cmp = compare(name, a, r, tolerance_for(key))
            prev = worst.get(name)
            if prev is None or (prev.ok and (not cmp.ok or cmp.max_rel > prev.max_rel)):
                worst[name] = cmp
    return worst


def _locate(name: str, cmp, step_len: int | None) -> dict:
    """Where in the tensor the first over-tolerance element is: layer and frame (and stream)."""
    idx = cmp.first_index
    loc = {"tensor": name, "max_abs": cmp.max_abs, "max_rel": cmp.max_rel, "limit": cmp.limit}
    if cmp.detail:
        loc["detail"] = cmp.detail
    if idx is None:
        return loc
    loc["stream"] = idx[0]
    if name in ("cache_last_channel_next",):  # [B, L, C, d]
        loc.update(layer=idx[1], frame=idx[2], frame_meaning="row of the attention cache")
    elif name == "cache_last_time_next":  # [B, L, d, K-1]
        loc.update(layer=idx[1], frame=idx[3], frame_meaning="column of the conv cache")
    elif name == "outputs":  # [B, d, T]
        loc.update(frame=idx[2], frame_meaning="encoder frame of this chunk")
    elif name == "logprobs":  # [B, T, V+1]
        loc.update(frame=idx[1], frame_meaning="encoder frame of this chunk")
    elif "/" in name:  # taps [B, T, d]
        loc.update(layer=layer_of(name), frame=idx[1], frame_meaning="encoder frame of this chunk"
                   + (" (before the pre-encode drop)" if "pre_encode" in name else ""))
    return loc


def crosscheck_engines(reference, candidate, mel, *, model: str = "", decoders=("rnnt", "ctc"), layers: bool = False,
                       on_chunk=None) -> CrosscheckReport:
    """``reference`` (OnnxEngine) vs ``candidate`` (RefimplEngine) on one stream of mel [feat_in, F] or
    [1, feat_in, F]. ``on_chunk(i, n_chunks)`` is called after each chunk (progress)."""
    mel = np.asarray(mel, np.float32)
    mel = mel[None] if mel.ndim == 2 else mel
    decoders = tuple(d for d in available_decoders(reference, decoders) if d in available_decoders(candidate))
    ref = _Recorder(reference)
    state_r = initial_state(ref, 1, decoders)
    state_c = initial_state(candidate, 1, decoders)
    tokens = {"onnxruntime": {d: [] for d in decoders}, "refimpl": {d: [] for d in decoders}}
    schedule = chunk_schedule([mel.shape[2]], reference.params)
    chunks, first = [], None
    for chunk in schedule:
        frames = mel[:, :, chunk.start: chunk.start + chunk.width]
        taps_r, taps_c = ({}, {}) if layers else (None, None)
        ref.calls = []
        step_r, state_r = stream_step(ref, frames, chunk.n_new, state_r, taps=taps_r)
        step_c, state_c = stream_step(candidate, frames, chunk.n_new, state_c, taps=taps_c)
        outs = {}
        for name in ENCODER_OUTPUTS:
            if name not in step_r.encoder:
                continue
            mine = step_c.ctc_logprobs if name == "logprobs" else step_c.encoder.get(name)
            outs[name] = compare(name, mine, step_r.encoder[name])
        if "ctc" in decoders and "logprobs" not in step_r.encoder and reference.has_ctc:
            outs["logprobs"] = compare("logprobs", step_c.ctc_logprobs, step_r.ctc_logprobs)
        outs.update(_replay_decoder(ref.calls, candidate))
        taps = {name: compare(name, taps_c[name], taps_r[name]) for name in tap_order(taps_r)} if layers else {}
        report = ChunkReport(chunk.index, outs, taps)
        chunks.append(report)
        for d in decoders:
            for engine, step in (("onnxruntime", step_r), ("refimpl", step_c)):
                tokens[engine][d] += (step.rnnt_tokens if d == "rnnt" else step.ctc_tokens)[0]
        if first is None and not report.ok:
            first = first_divergence(chunk.index, taps, outs)
        if on_chunk is not None:
            on_chunk(chunk.index, len(schedule))
    first = first or token_divergence(tokens["onnxruntime"], tokens["refimpl"])
    dropped = int(mel.shape[2] - sum(int(c.n_new[0]) for c in schedule))
    return CrosscheckReport(model, tuple(candidate.config.encoder.att_context_size), chunks, tokens, first, dropped)


def first_divergence(chunk: int, taps: dict, outs: dict, *, hint: bool = True) -> dict:
    """The earliest place in the signal path that is over tolerance in this chunk: the first layer tap in
    signal order; else the lowest layer whose cache output differs (attention cache before conv cache: the
    attention input is read before the convolution in a layer); else the first output."""
    bad_taps = [n for n in taps if not taps[n].ok]
    bad = [n for n in outs if not outs[n].ok]
    if bad_taps:
        name, cmp = bad_taps[0], taps[bad_taps[0]]
    else:
        caches = [(_locate(n, outs[n], None).get("layer", 1 << 30), i, n)
                  for i, n in enumerate(("cache_last_channel_next", "cache_last_time_next")) if n in bad]
        name = min(caches)[2] if caches else bad[0]
        cmp = outs[name]
    loc = {"chunk": chunk, **_locate(name, cmp, None), "also": [n for n in bad_taps + bad if n != name]}
    if hint and not taps and "layer" not in loc:
        loc["hint"] = "rerun with --layers to locate the layer and sub-block"
    return loc


def token_divergence(ref: dict, cand: dict) -> dict | None:
    """Where two token sequences first differ, when every tensor was within tolerance (an argmax near-tie)."""
    for d in ref:
        r, c = ref[d], cand.get(d, [])
        if r != c:
            pos = next((i for i, (a, b) in enumerate(zip(r, c)) if a != b), min(len(r), len(c)))
            return {"tensor": f"{d}_tokens", "token_index": pos,
                    "detail": f"{d} token sequences differ from position {pos} although every compared tensor is "
                              f"within tolerance (an argmax near-tie)"}
    return None


def crosscheck_offline(reference, candidate, mel, *, model: str = "", decoders=("rnnt", "ctc")) -> CrosscheckReport:
    """For an encoder exported without cache support: one whole-utterance call on each engine (the function
    such a graph computes), compared like one chunk; greedy decoding over every frame."""
    from ..model.ctc import greedy_ctc
    from ..model.rnnt import greedy_rnnt, initial_rnnt_state

    mel = np.asarray(mel, np.float32)
    mel = mel[None] if mel.ndim == 2 else mel
    length = np.array([mel.shape[2]], np.int64)
    decoders = tuple(d for d in available_decoders(reference, decoders) if d in available_decoders(candidate))
    ref = _Recorder(reference)
    enc_r = ref.encoder(mel, length, None, None, None)
    enc_c = candidate.encoder(mel, length, None, None, None)
    outs = {name: compare(name, enc_c[name] if name != "logprobs" else candidate.ctc(enc_c["outputs"]), v)
            for name, v in enc_r.items()}
    tokens = {"onnxruntime": {}, "refimpl": {}}
    for engine, enc, key in ((ref, enc_r, "onnxruntime"), (candidate, enc_c, "refimpl")):
        n = enc["encoded_lengths"]
        if "rnnt" in decoders:
            toks, _ = greedy_rnnt(enc["outputs"], n, initial_rnnt_state(engine.config.rnnt, 1, engine.dtype),
                                  engine.decoder_joint, blank_id=engine.config.blank_id,
                                  max_symbols=engine.config.rnnt.max_symbols)
            tokens[key]["rnnt"] = toks[0]
        if "ctc" in decoders:
            lp = enc["logprobs"] if "logprobs" in enc else engine.ctc(enc["outputs"])
            tokens[key]["ctc"] = greedy_ctc(lp, n, np.full(1, engine.config.blank_id), blank_id=engine.config.blank_id)[0][0]
    outs.update(_replay_decoder(ref.calls, candidate))
    chunk = ChunkReport(0, outs)
    first = None
    if not chunk.ok:
        first = first_divergence(0, {}, outs)
    return CrosscheckReport(model, tuple(candidate.config.encoder.att_context_size), [chunk], tokens, first,
                            mode="offline")


def crosscheck(audio, model, *, att_context_size=None, weights=None, layers: bool = False, dtype=np.float32,
               backend: str = "numba", threads: int = 1, decoders=("rnnt", "ctc"), on_chunk=None,
               notices: list | None = None, path: str = "plain") -> CrosscheckReport:
    """onnxruntime on ``model`` (NeMo's export) vs refimpl (weights from ``weights`` if given — a .nemo or
    another export of the same model — else from ``model``) on ``audio`` (a path or a 1-D array)."""
    from ..api import features, load_model, make_refimpl_engine, parse_att_context_size
    from .contract import check_same_architecture, stateless_message
    from ..runtime.engines import OnnxEngine

    att = parse_att_context_size(att_context_size)
    ref = OnnxEngine(model, att_context_size=att, threads=threads, taps=layers)
    config, w = load_model(weights if weights is not None else model)
    if weights is not None:
        check_same_architecture(ref.config, config, str(model), str(weights))
        if config.encoder.att_context_sizes is None:  # another export of the same model: the graph under test
            import dataclasses  # proves the model serves its look-ahead too
            both = tuple(dict.fromkeys([config.encoder.att_context_size, ref.config.encoder.att_context_size]))
            config = dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, att_context_sizes=both))
    cand = make_refimpl_engine(config, w, att_context_size=ref.config.encoder.att_context_size if ref.has_cache_io
                               else None, backend=backend, dtype=dtype, path=path)
    mel, _ = features(audio, cand.config, w)
    if not ref.has_cache_io:
        if notices is not None:
            notices.append(stateless_message(ref.files.encoder or ref.files.ctc)
                           + " Comparing one whole-utterance call instead (what this graph computes).")
        return crosscheck_offline(ref, cand, mel, model=str(model), decoders=decoders)
    return crosscheck_engines(ref, cand, mel, model=str(model), decoders=decoders, layers=layers, on_chunk=on_chunk)


def format_report(report: CrosscheckReport, *, texts: dict | None = None) -> str:
    """Human-readable: one line per chunk, the worst per tensor, the first divergence, the tokens."""
    lines = [f"crosscheck {report.model}: att_context_size {list(report.att_context_size)}, "
             f"{len(report.chunks)} chunk(s){' (offline: one whole-utterance call)' if report.mode == 'offline' else ''}"]
    lines.append(f"{'chunk':>5}  {'worst max_rel':>13}  {'in tensor':<44} status")
    for ch in report.chunks:
        items = list(ch.outputs.items()) + list(ch.layers.items())
        name, cmp = max(items, key=lambda kv: (not kv[1].ok, kv[1].max_rel))
        lines.append(f"{ch.index:>5}  {cmp.max_rel:>13.2e}  {name:<44} {'ok' if ch.ok else 'OVER TOLERANCE'}")
    lines.append("worst over all chunks:           max_abs    max_rel   limit")
    limits = {}
    for ch in report.chunks:
        for n, c in list(ch.outputs.items()) + list(ch.layers.items()):
            limits[n] = c.limit
    for name, (a, r) in report.worst().items():
        if "/" in name:
            continue  # per-layer taps: summarised below
        lines.append(f"  {name:<31} {a:9.2e}  {r:9.2e}  {'exact' if limits[name] == 0 else f'{limits[name]:.0e}'}")
    taps = {n: v for n, v in report.worst().items() if "/" in n}
    if taps:
        n, (a, r) = max(taps.items(), key=lambda kv: kv[1][1])
        lines.append(f"  {len(taps)} layer taps; worst {n}: max_abs {a:.2e}, max_rel {r:.2e}")
    fd = report.first_divergence
    if fd is None:
        lines.append("first divergence: none (every tensor of every chunk within tolerance)")
    else:
        where = ", ".join(f"{k} {fd[k]}" for k in ("chunk", "layer", "frame", "stream") if k in fd)
        extra = (f" ({fd.get('frame_meaning')})" if "frame_meaning" in fd else "")
        if "max_rel" in fd:
            lines.append(f"first divergence: {where}: {fd['tensor']} max_rel {fd['max_rel']:.2e} > {fd['limit']:.0e}"
                         f" (max_abs {fd['max_abs']:.2e}){extra}")
        else:
            lines.append(f"first divergence: {fd['tensor']}: {fd.get('detail', '')}")
        if fd.get("also"):
            lines.append(f"  also over tolerance in that chunk: {', '.join(fd['also'][:8])}"
                         f"{' ...' if len(fd['also']) > 8 else ''}")
        if fd.get("hint"):
            lines.append(f"  {fd['hint']}")
    ref, cand = report.reference, report.candidate
    for d in report.tokens[ref]:
        r, c = report.tokens[ref][d], report.tokens[cand].get(d, [])
        same = "identical" if r == c else "DIFFERENT"
        lines.append(f"tokens ({d}): {same}: {ref} {len(r)}, {cand} {len(c)}")
        if texts:
            lines.append(f"  {ref}: {texts[ref][d]!r}")
            if r != c:
                lines.append(f"  {cand}: {texts[cand][d]!r}")
    lines.append("result: " + ("OK" if report.ok else "FAILED"))
    return "\n".join(lines)
