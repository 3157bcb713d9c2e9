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

from .chunking import chunk_schedule
from .onnx_taps import layer_of, tap_order
from .streaming import available_decoders, initial_state, stream_step
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

    @property
    def tokens_ok(self) -> bool:
        ref, cand = self.tokens["onnxruntime"], self.tokens["refimpl"]
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
        return {"ok": self.ok, "model": self.model, "att_context_size": list(self.att_context_size),
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
            bad = [(n, c) for n, c in list(taps.items()) + list(outs.items()) if not c.ok]
            name, cmp = bad[0]
            first = {"chunk": chunk.index, **_locate(name, cmp, None),
                     "also": [n for n, _ in bad[1:]]}
        if on_chunk is not None:
            on_chunk(chunk.index, len(schedule))
    if first is None:
        for d in decoders:
            r, c = tokens["onnxruntime"][d], tokens["refimpl"][d]
            if r != c:
                pos = next((i for i, (a, b) in enumerate(zip(r, c)) if a != b), min(len(r), len(c)))
                first = {"tensor": f"{d}_tokens", "token_index": pos,
                         "detail": f"token sequences differ from position {pos} although every tensor is within "
                                   f"tolerance (an argmax near-tie)"}
                break
    dropped = int(mel.shape[2] - sum(int(c.n_new[0]) for c in schedule))
    return CrosscheckReport(model, tuple(candidate.config.encoder.att_context_size), chunks, tokens, first, dropped)
