"""Pictures of refimpl's answers: where two engines part ways, how two front ends differ, which mel frames each
call of a runtime takes, what each deviation of a runtime costs.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global figure list, no GUI
backend: safe in a command line tool, a server or a test); ``save(fig, path)`` writes it as a PNG, atomically.
In a notebook, a Figure that ends a cell is shown once ``%matplotlib inline`` has run.

matplotlib is optional (``pip install 'refimpl[plots]'``) and imported when the first picture is made.

- ``divergence_heatmap(report)``: chunk x tap max_rel of a crosscheck ``Report`` (``crosscheck(..., layers=True)``)
- ``mel_comparison(a, b)``: two log-mels [n_mels, T] and their difference
- ``chunk_grid({label: windows}, n_frames=...)``: the mel frames each encoder call takes, one row per runtime
  (``nemo_windows``, ``sherpa_windows``, ``run_windows`` make the windows)
- ``conform_costs(conform_report)``: tokens and words each deviating stage changes
- ``waveform_tokens(samples, pieces, timestamps)``: the waveform with every token at its time

Why one module over ~350 lines: one function per picture; matplotlib is imported only here (the optional
``plots`` extra), so they stay together.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from weights_tools.outputs import atomic_write

from .model.taps import layer_of, signal_order
from .tools.conform.pipeline import STAGES

HOP_SECONDS = 0.01  # one mel frame (160 samples at 16 kHz)
TOLERANCE_COLOUR = "#d62728"
FLOOR = 1e-9  # max_rel shown at least this (0 has no logarithm)
SHAPE_MISMATCH = 1e3  # max_rel shown for a tensor of the wrong shape (its max_rel is inf)


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure  # optional: refimpl runs without it
    except ImportError as e:  # pragma: no cover - exercised only without matplotlib
        raise ImportError("refimpl.plots needs matplotlib: pip install 'refimpl[plots]'") from e
    return Figure(figsize=(width, height), layout="constrained")


def save(fig, path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` as a PNG, whole or not at all (``weights_tools.outputs.atomic_write``)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi), what="plot")


# --------------------------------------------------------------------------------------------------------------
# crosscheck
# --------------------------------------------------------------------------------------------------------------
def tap_label(name: str) -> str:
    """A tap or output name, short: ``encoder.layers.1.conv/output`` -> ``L1 conv``."""
    if name.startswith("encoder.pre_encode"):
        return "pre_encode"
    if name.startswith("encoder.pos_enc"):
        return "pos_enc" if name.endswith("output") else "pos_emb"
    i = layer_of(name)
    if i is None:
        return name
    module, what = name.split("/", 1)
    parts = module.split(".")
    block = parts[3] if len(parts) > 3 else "layer"
    block = {"layer": "output" if what == "output" else "input"}.get(block, block)
    return f"L{i} {block}" + (f" {what}" if len(parts) > 3 and what != "output" else "")


def divergence_matrix(report, *, outputs: bool = True) -> tuple:
    """(row names, [rows, chunks] max_rel, [rows, chunks] over tolerance) of a crosscheck Report: the layer taps in
    signal order, then (``outputs``) every float output the report compares (exact integer outputs left out). A
    tensor missing from a chunk is NaN; one of the wrong shape is ``SHAPE_MISMATCH``."""
    taps = signal_order({n for ch in report.chunks for n in ch.layers})
    outs = []
    if outputs:
        for ch in report.chunks:
            for n, c in ch.outputs.items():
                if (c.limit > 0 or math.isinf(c.max_rel)) and n not in outs:  # floats, and wrong shapes
                    outs.append(n)
    names = taps + outs
    if not names:
        raise ValueError("the report compares no float tensor (run crosscheck(..., layers=True) for the layer taps)")
    rel = np.full((len(names), len(report.chunks)), np.nan)
    bad = np.zeros(rel.shape, bool)
    for j, ch in enumerate(report.chunks):
        both = {**ch.layers, **ch.outputs}
        for i, n in enumerate(names):
            if n in both:
                c = both[n]
                rel[i, j] = SHAPE_MISMATCH if math.isinf(c.max_rel) else c.max_rel
                bad[i, j] = not c.ok
    return names, rel, bad


def divergence_heatmap(report, *, outputs: bool = True, tolerance: float = 1e-5):
    """Chunk x tap heat map of log10(max_rel) of a crosscheck ``Report``: rows are the layer taps in signal order
    (``crosscheck(..., layers=True)``) then the float outputs; the colour scale turns from blue to red at
    ``tolerance``; cells over their tolerance are crossed, the report's first divergence is boxed."""
    names, rel, bad = divergence_matrix(report, outputs=outputs)
    from matplotlib.colors import TwoSlopeNorm  # (matplotlib is imported by _figure below first)

    n_rows, n_chunks = rel.shape
    fig = _figure(min(3.2 + 0.28 * n_chunks, 16), 1.4 + 0.2 * n_rows)
    ax = fig.add_subplot()
    data = np.log10(np.maximum(rel, FLOOR))
    centre = math.log10(tolerance)
    top = max(float(np.nanmax(data)) if np.isfinite(data).any() else centre, centre + 1)
    norm = TwoSlopeNorm(vmin=math.log10(FLOOR), vcenter=centre, vmax=top)
    im = ax.imshow(data, aspect="auto", cmap="coolwarm", norm=norm, interpolation="nearest")
    ys, xs = np.nonzero(bad)
    if len(xs):
        ax.scatter(xs, ys, marker="x", s=18, c="black", linewidths=0.8, label="over tolerance")
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    fd = report.first_divergence
    if fd and fd.get("tensor") in names and fd.get("chunk") is not None:
        from matplotlib.patches import Rectangle

        i, j = names.index(fd["tensor"]), [ch.index for ch in report.chunks].index(fd["chunk"])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black", lw=2, gid="first_divergence"))
    ax.set_yticks(range(n_rows), [tap_label(n) for n in names], fontsize=7)
    step = max(1, n_chunks // 20)
    ax.set_xticks(range(0, n_chunks, step), [report.chunks[j].index for j in range(0, n_chunks, step)])
    ax.set_xlabel("chunk")
    ax.set_ylabel("tensor (signal order, top to bottom)")
    if outputs and len(names) > len(signal_order({n for ch in report.chunks for n in ch.layers})) > 0:
        ax.axhline(len(names) - sum(1 for n in names if "/" not in n) - 0.5, color="black", lw=0.8)
    cb = fig.colorbar(im, ax=ax, shrink=0.9)
    cb.set_label(f"log10 max_rel ({tolerance:g} = tolerance)")
    cb.ax.axhline(centre, color="black", lw=1)
    status = "OK" if report.ok else "FAILED"
    ax.set_title(
        f"{report.candidate} vs {report.reference}, att_context_size {list(report.att_context_size)}: {status}",
        fontsize=9,
    )
    return fig


# --------------------------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------------------------
def _mel(a, name: str) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a log-mel [n_mels, T], found shape {list(a.shape)}")
    return a


def mel_comparison(
    a,
    b,
    *,
    labels=("NeMo", "runtime"),
    hop_seconds: float = HOP_SECONDS,
    diff_limit: float | None = None,
    same_scale: bool = True,
    units=("ln mel power", "ln mel power"),
    title: str | None = None,
):
    """Two log-mels [n_mels, T] (NeMo's layout; pass ``feats.T`` for a [T, n_mels] array) on one colour scale
    (``same_scale=False``: each on its own, for normalised features), and ``b - a`` below them on a symmetric scale
    (``diff_limit``, default the 99th percentile of |b - a|); ``units`` label the two colour bars. The longer one is
    cut to the shorter; the time axis is in seconds."""
    a, b = _mel(a, labels[0]), _mel(b, labels[1])
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{labels[0]} has {a.shape[0]} mel bins, {labels[1]} {b.shape[0]}")
    t = min(a.shape[1], b.shape[1])
    a, b = a[:, :t], b[:, :t]
    d = b - a
    lim = diff_limit if diff_limit is not None else max(float(np.percentile(np.abs(d), 99)), 1e-3)
    ranges = [(float(np.percentile(m, 1)), float(m.max())) for m in (a, b)]
    if same_scale:
        ranges = [(min(r[0] for r in ranges), max(r[1] for r in ranges))] * 2
    fig = _figure(10, 6.4)
    axes = fig.subplots(3, 1, sharex=True)
    extent = (0, t * hop_seconds, -0.5, a.shape[0] - 0.5)
    for ax, m, lab, (lo, hi), unit in zip(axes[:2], (a, b), labels, ranges, units):
        im = ax.imshow(m, origin="lower", aspect="auto", extent=extent, vmin=lo, vmax=hi, cmap="magma")
        ax.set_title(f"{lab}: mean {m.mean():.2f}, std {m.std():.2f}", fontsize=9, loc="left")
        ax.set_ylabel("mel bin")
        fig.colorbar(im, ax=ax, pad=0.01).set_label(unit)
    im = axes[2].imshow(d, origin="lower", aspect="auto", extent=extent, vmin=-lim, vmax=lim, cmap="RdBu_r")
    axes[2].set_title(
        f"{labels[1]} - {labels[0]}: median |diff| {np.median(np.abs(d)):.3g}, max {np.abs(d).max():.3g}",
        fontsize=9,
        loc="left",
    )
    axes[2].set_ylabel("mel bin")
    axes[2].set_xlabel("time (s)")
    fig.colorbar(im, ax=axes[2], pad=0.01).set_label("difference")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------------------
# chunk schedules
# --------------------------------------------------------------------------------------------------------------
def nemo_windows(n_frames: int, params) -> list:
    """NeMo's calls over ``n_frames`` mel frames (``refimpl.runtime.chunking.chunk_schedule`` for
    ``StreamingParams`` ``params``) as windows (start, new_start, stop): frames [start, new_start) are the
    pre-encode cache (negative: the zero frames before the audio), [new_start, stop) the new frames."""
    from .runtime.chunking import chunk_schedule

    pre = params.pre_encode_cache_size
    return [(c.start - pre, c.start, c.start + int(c.n_new[0])) for c in chunk_schedule([n_frames], params)]


def sherpa_windows(frames_ready: int, window_size: int, chunk_shift: int) -> list:
    """sherpa-onnx's calls (``refimpl.peers.sherpa_onnx.window_starts``) as windows (start, new_start, stop): its
    first ``window_size - chunk_shift`` frames of each window are the pre-encode cache, real frames even in the
    first window."""
    from .peers.sherpa_onnx import window_starts

    pre = window_size - chunk_shift
    return [(s, s + pre, s + window_size) for s in window_starts(frames_ready, window_size, chunk_shift)]


def run_windows(run) -> list:
    """The calls of a ``refimpl.tools.conform.pipeline.Run`` as windows (start, new_start, stop)."""
    return [(c.start, c.new_start, c.new_start + c.n_new) for c in run.calls]


def chunk_grid(rows: dict, *, n_frames: int, hop_seconds: float = HOP_SECONDS, title: str | None = None):
    """The mel frames every encoder call takes, one band per runtime: ``rows`` maps a label to its windows
    (start, new_start, stop) (``nemo_windows``, ``sherpa_windows``, ``run_windows``). Calls alternate between two
    lanes so that overlaps show; the pre-encode cache is hatched (grey where it is zeros before the audio), the new
    frames solid, frames past ``n_frames`` (padding) pale; audio after the last new frame, never decoded, is red.
    Patches carry gids "zeros", "context", "new", "padding", "unheard" (for tests)."""
    from matplotlib.patches import Patch, Rectangle

    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
    fig = _figure(11, 1.0 + 1.1 * len(rows))
    ax = fig.add_subplot()
    lo = min([w[0] for ws in rows.values() for w in ws] + [0])
    hi = max([w[2] for ws in rows.values() for w in ws] + [n_frames])
    band = 1.0
    for r, (label, windows) in enumerate(rows.items()):
        base = (len(rows) - 1 - r) * band * 1.4
        col = colours[r % len(colours)]
        for k, (start, new_start, stop) in enumerate(windows):
            y, h = base + (0.5 if k % 2 else 0.0) * band, 0.45 * band

            def box(x0, x1, gid, y=y, h=h, **style):
                if x1 > x0:
                    ax.add_patch(Rectangle((x0, y), x1 - x0, h, gid=gid, **style))

            box(start, min(new_start, 0), "zeros", fc="#bbbbbb", ec="#666666", hatch="///", lw=0.5)
            box(max(start, 0), min(new_start, n_frames), "context", fc="white", ec=col, hatch="///", lw=0.8)
            box(max(new_start, 0), min(stop, n_frames), "new", fc=col, ec="black", lw=0.5)
            box(max(new_start, n_frames), stop, "padding", fc=col, ec="black", lw=0.5, alpha=0.3)
        heard = max([w[2] for w in windows], default=0)
        if heard < n_frames:
            ax.add_patch(
                Rectangle(
                    (heard, base),
                    n_frames - heard,
                    band * 0.95,
                    fc="none",
                    ec=TOLERANCE_COLOUR,
                    lw=1.5,
                    hatch="xx",
                    gid="unheard",
                )
            )
            ax.text(
                n_frames,
                base + band,
                f"{(n_frames - heard) * hop_seconds:.2f} s never decoded ",
                ha="right",
                va="bottom",
                fontsize=8,
                color=TOLERANCE_COLOUR,
            )
        ax.text(
            lo - 0.01 * (hi - lo),
            base + 0.47 * band,
            f"{label}\n{len(windows)} calls",
            ha="right",
            va="center",
            fontsize=9,
        )
    ax.axvline(0, color="black", lw=0.8)
    ax.axvline(n_frames, color="black", lw=0.8, ls="--")
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.set_ylim(-0.2, (len(rows) - 1) * band * 1.4 + band * 1.25)
    ax.set_yticks([])
    ax.set_xlabel(f"mel frame ({hop_seconds * 1000:g} ms each); dashed line: end of the audio")
    sec = ax.secondary_xaxis("top", functions=(lambda f: f * hop_seconds, lambda s: s / hop_seconds))
    sec.set_xlabel("time (s)")
    ax.legend(
        handles=[
            Patch(fc="#bbbbbb", ec="#666666", hatch="///", label="pre-encode cache: zero frames"),
            Patch(fc="white", ec="black", hatch="///", label="pre-encode cache: real frames"),
            Patch(fc="#777777", ec="black", label="new frames (decoded)"),
            Patch(fc="none", ec=TOLERANCE_COLOUR, hatch="xx", label="audio never decoded"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.22),
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    if title:
        ax.set_title(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------------------
# conform
# --------------------------------------------------------------------------------------------------------------
def conform_costs(report):
    """What each stage of a ``refimpl.tools.conform`` report costs on its audio: per stage, the tokens and words
    NeMo's transcript changes when that stage alone is the runtime's (bars), and the words the runtime stays away
    from NeMo when that stage alone is fixed (hatched); stages that match NeMo are marked "matches"."""
    fig = _figure(9, 3.8)
    ax = fig.add_subplot()
    dev = {}
    for d in report.deviations:
        dev.setdefault(d.stage, d)  # a stage's cost is measured once, whatever it found there
    clean = {c["stage"] for c in report.clean}
    x = np.arange(len(STAGES))
    w = 0.27

    def val(d, key, which="effect"):
        e = getattr(d, which) if d is not None else None
        v = None if e is None else e.get(key)
        return np.nan if v is None else float(v)

    tokens = np.array([val(dev.get(s), "tokens_changed") for s in STAGES])
    words = np.array([val(dev.get(s), "words_changed") for s in STAGES])
    fixed = np.array([val(dev.get(s), "words_changed", "if_fixed") for s in STAGES])
    d = np.array([s in dev for s in STAGES])
    ax.bar(x[d] - w, np.nan_to_num(tokens[d]), w, color="#1f77b4", label="tokens changed: this stage alone, in NeMo's")
    ax.bar(x[d], np.nan_to_num(words[d]), w, color="#ff7f0e", label="words changed: this stage alone, in NeMo's")
    ax.bar(
        x[d] + w,
        np.nan_to_num(fixed[d]),
        w,
        fc="white",
        ec="#2ca02c",
        hatch="//",
        label="words still changed: the runtime with this stage fixed",
    )
    top = max(1.0, float(np.nanmax(np.concatenate([tokens, words, fixed, [0]]))))
    for i, s in enumerate(STAGES):
        if s in dev:
            ax.text(i, -0.09 * top, "DEVIATES", ha="center", va="top", fontsize=7, color=TOLERANCE_COLOUR)
            for off, v in ((-w, tokens[i]), (0, words[i]), (w, fixed[i])):
                if np.isfinite(v):
                    ax.text(i + off, v + 0.02 * top, f"{v:g}", ha="center", va="bottom", fontsize=7)
        else:
            ax.text(
                i,
                -0.09 * top,
                "matches" if s in clean else "n/a",
                ha="center",
                va="top",
                fontsize=7,
                color="#2ca02c" if s in clean else "#777777",
            )
    ax.set_xticks(x, STAGES, fontsize=8)
    ax.set_xlim(-0.6, len(STAGES) - 0.4)
    ax.set_ylim(-0.2 * top, top * 1.15)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("edit distance to NeMo's transcript")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= top * 1.15])  # the space below 0 holds the labels
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    total = _distance(report)
    ax.set_title(
        f"conform {report.runtime}, {report.seconds:.1f} s: {len(report.deviations)} deviation(s); the runtime's "
        f"transcript is {total} from NeMo's",
        fontsize=9,
    )
    return fig


def _distance(report) -> str:
    from rapidfuzz.distance import Levenshtein

    got = report.runtime_result.get("tokens")
    if got is None:
        return "nothing (it cannot run the folder)"
    t = Levenshtein.distance(report.nemo["tokens"], got)
    wd = Levenshtein.distance(report.nemo["text"].split(), (report.runtime_result["text"] or "").split())
    return f"{t} token{'s' if t != 1 else ''} / {wd} word{'s' if wd != 1 else ''}"


# --------------------------------------------------------------------------------------------------------------
# transcripts
# --------------------------------------------------------------------------------------------------------------
def waveform_tokens(
    samples,
    pieces,
    timestamps,
    *,
    sample_rate: int = 16000,
    chunk_seconds: float | None = None,
    title: str | None = None,
):
    """The waveform with a line and label at every token's time (``Result.timestamps``: the start of the token's
    encoder frame, in seconds); ``chunk_seconds`` draws the chunk borders."""
    x = np.asarray(samples, np.float64).reshape(-1)
    if len(pieces) != len(timestamps):
        raise ValueError(f"{len(pieces)} pieces but {len(timestamps)} timestamps")
    fig = _figure(11, 2.8)
    ax = fig.add_subplot()
    t = np.arange(len(x)) / sample_rate
    ax.plot(t, x, lw=0.4, color="#555555")
    peak = float(np.abs(x).max()) or 1.0
    if chunk_seconds:
        for k in np.arange(chunk_seconds, t[-1] if len(t) else 0, chunk_seconds):
            ax.axvline(k, color=TOLERANCE_COLOUR, lw=0.9, ls=":", gid="chunk")
    for k, (p, s) in enumerate(zip(pieces, timestamps)):
        ax.axvline(s, color="#1f77b4", lw=0.9, gid="token")
        ax.text(
            s,
            peak * (1.05 + 0.15 * (k % 2)),
            " " + p.replace("\u2581", ""),
            fontsize=8,
            ha="left",
            va="bottom",
            color="#1f77b4",
            bbox=dict(fc="white", ec="none", pad=0.5),
        )
    ax.set_ylim(-1.1 * peak, 1.45 * peak)
    ax.set_xlim(0, t[-1] if len(t) else 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    if title:
        ax.set_title(title, fontsize=9)
    return fig
