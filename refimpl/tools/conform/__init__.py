"""``refimpl conform``: a peer runtime (sherpa-onnx, onnx-asr) or NeMo's own export driven as NeMo streams,
checked against NeMo's exact pipeline stage by stage (``core``), with the runtimes' stages emulated in
``refimpl.peers`` and combined in one switchable pipeline (``pipeline``)."""

from __future__ import annotations

import json

from .core import SCHEMA, ConformReport, Deviation, conform
from .pipeline import STAGES
from .runtimes import RUNTIMES, ConformError

__all__ = ["conform", "ConformReport", "Deviation", "ConformError", "RUNTIMES", "STAGES", "SCHEMA", "format_report"]


def _effect(e: dict | None) -> str:
    if e is None or e.get("tokens_changed") is None:
        return "n/a"
    return f"{e['tokens_changed']} tokens, {e['words_changed']} words"


def format_report(r: ConformReport) -> str:
    engine = "the real package" if r.engine == "package" else f"refimpl's emulation ({r.why_emulation})"
    lines = [
        f"conform {r.runtime} on {r.model}: {r.audio} ({r.seconds:.2f} s), head {r.head.upper()}, "
        f"att_context_size {list(r.att_context_size)}",
        f"  {r.runtime} ran as {engine}",
        f"  NeMo    : {r.nemo['text']!r} ({len(r.nemo['tokens'])} tokens)",
    ]
    if r.folder_error is not None:
        lines.append(f"  {r.runtime}: cannot run this folder")
    else:
        same = r.runtime_result["tokens"] == r.nemo["tokens"]
        lines.append(
            f"  {r.runtime:<8}: {r.runtime_result['text']!r} ({len(r.runtime_result['tokens'])} tokens"
            f"{', identical' if same else ''})"
        )
        if r.emulation.get("matches_package") is not None:
            lines.append(
                "  refimpl's emulation "
                + ("gives the package's tokens" if r.emulation["matches_package"] else "DIFFERS from the package")
            )
    if not r.deviations:
        lines.append("no deviation: every stage computes what NeMo computes")
    else:
        lines.append(f"{len(r.deviations)} deviation(s); cost = tokens/words changed against NeMo's result:")
        for d in r.deviations:
            lines.append(f"  [{d.stage}] {d.what}")
            lines.append(
                f"      cost alone in NeMo's pipeline: {_effect(d.effect)}; "
                f"runtime with it fixed: {_effect(d.if_fixed)} from NeMo"
            )
            lines.append(f"      fix: {d.fix}")
    if r.clean:
        lines.append("stages that match NeMo: " + ", ".join(_clean(c) for c in r.clean))
    for n in r.notes:
        lines.append(f"note: {n}")
    lines.append(f"result: {'OK' if r.ok else 'DEVIATES'}")
    return "\n".join(lines)


def _clean(c: dict) -> str:
    m = c["measure"] or {}
    if c["stage"] == "graph" and "max_rel" in m:
        return f"graph (max rel {m['max_rel']:.1e} <= {m['tolerance_rel']:g})"
    if c["stage"] == "features" and "max_rel" in m:
        return f"features (max rel {m['max_rel']:.1e})"
    if c["stage"] == "last_chunk" and "unheard_seconds" in m:
        return f"last_chunk ({m['unheard_seconds']:g} s unheard, NeMo {m['nemo_unheard_seconds']:g} s)"
    return c["stage"]


def to_json(r: ConformReport) -> str:
    return json.dumps(r.as_dict(), indent=2, default=float)
