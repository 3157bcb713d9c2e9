"""The one report type of refimpl's comparisons (crosscheck, golden verify): per chunk, every tensor compared
under the tolerance table; the token sequences; the first place the two sides part ways, located in the
signal path (chunk, layer, frame, stream); and its text form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..model.taps import layer_of


@dataclass
class ChunkReport:
    index: int
    outputs: dict  # name -> Comparison
    layers: dict = field(default_factory=dict)  # tap name -> Comparison

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.outputs.values()) and all(c.ok for c in self.layers.values())


@dataclass
class Report:
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
        out: dict = {}
        for ch in self.chunks:
            for name, c in list(ch.outputs.items()) + list(ch.layers.items()):
                a, r = out.get(name, (0.0, 0.0))
                out[name] = (max(a, c.max_abs), max(r, c.max_rel))
        return out

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "model": self.model,
            "mode": self.mode,
            "att_context_size": list(self.att_context_size),
            "chunks": [
                {
                    "index": ch.index,
                    "outputs": {k: v.as_dict() for k, v in ch.outputs.items()},
                    **({"layers": {k: v.as_dict() for k, v in ch.layers.items()}} if ch.layers else {}),
                }
                for ch in self.chunks
            ],
            "first_divergence": self.first_divergence,
            "tokens": self.tokens,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)


def _locate(name: str, cmp) -> dict:
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
        loc.update(
            layer=layer_of(name),
            frame=idx[1],
            frame_meaning="encoder frame of this chunk"
            + (" (before the pre-encode drop)" if "pre_encode" in name else ""),
        )
    return loc


def first_divergence(chunk: int, taps: dict, outs: dict, *, hint: bool = True) -> dict:
    """The earliest place in the signal path that is over tolerance in this chunk: the first layer tap in
    signal order; else the lowest layer whose cache output differs (attention cache before conv cache: the
    attention input is read before the convolution in a layer); else the first output."""
    bad_taps = [n for n in taps if not taps[n].ok]
    bad = [n for n in outs if not outs[n].ok]
    if bad_taps:
        name, cmp = bad_taps[0], taps[bad_taps[0]]
    else:
        caches = [
            (_locate(n, outs[n]).get("layer", 1 << 30), i, n)
            for i, n in enumerate(("cache_last_channel_next", "cache_last_time_next"))
            if n in bad
        ]
        name = min(caches)[2] if caches else bad[0]
        cmp = outs[name]
    loc = {"chunk": chunk, **_locate(name, cmp), "also": [n for n in bad_taps + bad if n != name]}
    if hint and not taps and "layer" not in loc:
        loc["hint"] = "rerun with --layers to locate the layer and sub-block"
    return loc


def token_divergence(ref: dict, cand: dict) -> dict | None:
    """Where two token sequences first differ, when every tensor was within tolerance (an argmax near-tie)."""
    for d in ref:
        r, c = ref[d], cand.get(d, [])
        if r != c:
            pos = next((i for i, (a, b) in enumerate(zip(r, c)) if a != b), min(len(r), len(c)))
            return {
                "tensor": f"{d}_tokens",
                "token_index": pos,
                "detail": f"{d} token sequences differ from position {pos} although every compared tensor is "
                f"within tolerance (an argmax near-tie)",
            }
    return None


def format_report(report: Report, *, texts: dict | None = None) -> str:
    """Human-readable: one line per chunk, the worst per tensor, the first divergence, the tokens."""
    lines = [
        f"crosscheck {report.model}: att_context_size {list(report.att_context_size)}, "
        f"{len(report.chunks)} chunk(s){' (offline: one whole-utterance call)' if report.mode == 'offline' else ''}"
    ]
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
        extra = f" ({fd.get('frame_meaning')})" if "frame_meaning" in fd else ""
        if "max_rel" in fd:
            lines.append(
                f"first divergence: {where}: {fd['tensor']} max_rel {fd['max_rel']:.2e} > {fd['limit']:.0e}"
                f" (max_abs {fd['max_abs']:.2e}){extra}"
            )
        else:
            lines.append(f"first divergence: {fd['tensor']}: {fd.get('detail', '')}")
        if fd.get("also"):
            lines.append(
                f"  also over tolerance in that chunk: {', '.join(fd['also'][:8])}"
                f"{' ...' if len(fd['also']) > 8 else ''}"
            )
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
