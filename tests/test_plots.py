"""refimpl.plots: every figure holds the data it claims (checked through the matplotlib artists), and save()
writes a PNG whole or not at all."""

from __future__ import annotations

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from fixture_data import AUDIO, FIXTURES, folder

matplotlib.use("Agg")  # no display, whatever the machine has

from refimpl import plots  # noqa: E402
from refimpl.model.audio import load_audio  # noqa: E402
from refimpl.peers import sherpa_onnx  # noqa: E402
from refimpl.tools.conform import conform  # noqa: E402
from refimpl.tools.conform.core import ConformReport, Deviation  # noqa: E402
from refimpl.tools.crosscheck import crosscheck  # noqa: E402
from refimpl.tools.report import ChunkReport, Report  # noqa: E402
from refimpl.tools.tolerances import compare  # noqa: E402
from weights_tools import plan_onnx, streaming_params  # noqa: E402
from weights_tools.outputs import OutputError  # noqa: E402

FOX = AUDIO / "fox.wav"


def gids(ax, gid: str) -> list:
    return [p for p in ax.patches if p.get_gid() == gid]


# --------------------------------------------------------------------------------------------------------------
# divergence_heatmap
# --------------------------------------------------------------------------------------------------------------
def _report(over: bool = False, shape_mismatch: bool = False) -> Report:
    """Two chunks, two taps, two outputs (one exact); chunk 1's conv tap over tolerance when ``over``."""
    ref = np.ones((1, 4, 8), np.float32)
    chunks = []
    for i in range(2):
        bad = over and i == 1
        taps = {
            "encoder.layers.0.self_attn/output": compare("encoder.layers.0.self_attn/output", ref * (1 + 1e-7), ref),
            "encoder.layers.0.conv/output": compare("encoder.layers.0.conv/output", ref * (1.01 if bad else 1), ref),
        }
        outs = {
            "outputs": compare("outputs", np.zeros((1, 8, 3)) if shape_mismatch else ref, ref),
            "encoded_lengths": compare("encoded_lengths", np.array([4]), np.array([4])),
        }
        chunks.append(ChunkReport(i, outs, taps))
    first = {"chunk": 1, "tensor": "encoder.layers.0.conv/output", "layer": 0} if over else None
    return Report("m", (70, 13), chunks, {"onnxruntime": {"rnnt": [1]}, "refimpl": {"rnnt": [1]}}, first)


def test_divergence_matrix_rows_are_taps_in_signal_order_then_float_outputs():
    names, rel, bad = plots.divergence_matrix(_report(over=True))
    assert names == ["encoder.layers.0.self_attn/output", "encoder.layers.0.conv/output", "outputs"]
    assert rel.shape == bad.shape == (3, 2)
    assert bad.tolist() == [[False, False], [False, True], [False, False]]
    assert rel[1, 1] == pytest.approx(0.01, rel=1e-3) and rel[2, 0] == 0


def test_divergence_heatmap_shows_the_matrix_and_marks_what_is_over():
    report = _report(over=True)
    fig = plots.divergence_heatmap(report)
    ax = fig.axes[0]
    data = ax.images[0].get_array()
    _, rel, _ = plots.divergence_matrix(report)
    assert data.shape == (3, 2)
    assert np.allclose(data, np.log10(np.maximum(rel, plots.FLOOR)))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["L0 self_attn", "L0 conv", "outputs"]
    crosses = ax.collections[0].get_offsets()
    assert crosses.tolist() == [[1, 1]]  # chunk 1 (x), row 1 (y)
    box = gids(ax, "first_divergence")
    assert len(box) == 1 and box[0].get_xy() == (0.5, 0.5)
    assert "FAILED" in ax.get_title()


def test_divergence_heatmap_shows_a_shape_mismatch_and_refuses_an_empty_report():
    names, rel, _ = plots.divergence_matrix(_report(shape_mismatch=True))
    assert rel[names.index("outputs")].tolist() == [plots.SHAPE_MISMATCH] * 2
    empty = Report("m", (70, 13), [ChunkReport(0, {}, {})], {"onnxruntime": {}, "refimpl": {}}, None)
    with pytest.raises(ValueError, match="layers=True"):
        plots.divergence_heatmap(empty)


def test_divergence_heatmap_of_a_real_crosscheck():
    report = crosscheck(FOX, folder("hybrid", (70, 13)), layers=True)
    fig = plots.divergence_heatmap(report)
    data = fig.axes[0].images[0].get_array()
    n_taps = len(report.chunks[0].layers)
    n_float_outputs = sum(1 for c in report.chunks[0].outputs.values() if c.limit > 0)
    assert data.shape == (n_taps + n_float_outputs, len(report.chunks))
    assert report.ok and np.nanmax(data) < np.log10(1e-5)  # every cell under the tolerance
    assert not fig.axes[0].collections  # nothing crossed


# --------------------------------------------------------------------------------------------------------------
# mel_comparison
# --------------------------------------------------------------------------------------------------------------
def test_mel_comparison_draws_both_and_their_difference_cut_to_the_shorter():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((80, 50)).astype(np.float32)
    b = a[:, :40] + 0.5
    fig = plots.mel_comparison(a[None], b, labels=("A", "B"))
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 3
    assert images[0].get_array().shape == (80, 40)
    assert np.allclose(images[2].get_array(), 0.5)
    assert images[0].get_clim() == images[1].get_clim()  # one colour scale for both
    assert images[0].get_extent()[1] == pytest.approx(0.4)  # 40 frames of 10 ms
    assert fig.axes[2].get_title(loc="left").startswith("B - A: median |diff| 0.5")
    own = plots.mel_comparison(a, b * 10, same_scale=False)
    own_images = [ax.images[0] for ax in own.axes if ax.images]
    assert own_images[0].get_clim() != own_images[1].get_clim()


def test_mel_comparison_refuses_mismatched_bins():
    with pytest.raises(ValueError, match="mel bins"):
        plots.mel_comparison(np.zeros((80, 10)), np.zeros((64, 10)))
    with pytest.raises(ValueError, match=r"\[n_mels, T\]"):
        plots.mel_comparison(np.zeros(10), np.zeros((80, 10)))


# --------------------------------------------------------------------------------------------------------------
# chunk_grid
# --------------------------------------------------------------------------------------------------------------
def test_nemo_and_sherpa_windows():
    p = streaming_params(plan_onnx(folder("hybrid", (70, 13))).config.encoder)
    nemo = plots.nemo_windows(345, p)
    assert nemo[0] == (-9, 0, 112) and nemo[-1] == (327, 336, 345)  # zeros first, a partial last chunk
    assert plots.nemo_windows(340, p)[-1] == (215, 224, 336)  # 4 frames left: fewer than s = 8, not run (NeMo)
    sherpa = plots.sherpa_windows(340, p.window, p.chunk_size)
    assert sherpa == [(0, 9, 121), (112, 121, 233)]  # real frames first; 233 + 121 >= 340: no third window


def test_chunk_grid_draws_every_window_and_the_unheard_tail():
    p = streaming_params(plan_onnx(folder("hybrid", (70, 13))).config.encoder)
    x = load_audio(FOX)
    n = len(x) // 160
    rows = {
        "NeMo": plots.nemo_windows(n, p),
        "sherpa": plots.sherpa_windows(sherpa_onnx.frames_ready(len(x)), p.window, p.chunk_size),
    }
    fig = plots.chunk_grid(rows, n_frames=n, title="t")
    ax = fig.axes[0]
    assert len(gids(ax, "new")) == len(rows["NeMo"]) + len(rows["sherpa"])
    assert len(gids(ax, "zeros")) == 1  # NeMo's first call only
    assert len(gids(ax, "context")) == len(rows["NeMo"]) - 1 + len(rows["sherpa"])
    unheard = {u.get_x(): u.get_width() for u in gids(ax, "unheard")}
    s = sherpa_onnx.schedule(len(x), p.window, p.chunk_size)
    heard = {label: windows[-1][2] for label, windows in rows.items()}
    assert s.unheard_samples > 0 and heard["sherpa"] == s.frames_fed
    assert unheard == {h: n - h for h in heard.values() if h < n}  # one red box per row that misses the end


def test_chunk_grid_draws_padding_past_the_end():
    fig = plots.chunk_grid({"r": [(0, 9, 121), (112, 121, 233)]}, n_frames=200)
    ax = fig.axes[0]
    pad = gids(ax, "padding")
    assert len(pad) == 1 and (pad[0].get_x(), pad[0].get_width()) == (200, 33)
    assert not gids(ax, "unheard")


# --------------------------------------------------------------------------------------------------------------
# conform_costs
# --------------------------------------------------------------------------------------------------------------
def _conform_report() -> ConformReport:
    dev = [
        Deviation(
            "features",
            "f",
            {},
            "fix",
            {"tokens_changed": 2, "words_changed": 1},
            {"tokens_changed": 0, "words_changed": 0},
        ),
        Deviation("last_chunk", "l", {}, "fix", {"tokens_changed": 3, "words_changed": 2}, None),
    ]
    clean = [{"stage": s, "measure": {}} for s in ("normalization", "chunking", "decoding", "graph")]
    return ConformReport(
        runtime="sherpa-onnx",
        engine="emulation",
        why_emulation="test",
        model="m",
        audio="a",
        seconds=1.0,
        head="rnnt",
        att_context_size=(70, 13),
        nemo={"tokens": [1, 2, 3], "text": "a b c"},
        runtime_result={"tokens": [1], "text": "a"},
        emulation={"tokens": [1], "text": "a", "matches_package": None},
        deviations=dev,
        clean=clean,
    )


def test_conform_costs_bars_are_the_reported_costs():
    fig = plots.conform_costs(_conform_report())
    ax = fig.axes[0]
    bars = {c.get_label(): [b.get_height() for b in c] for c in ax.containers}
    tokens = next(v for k, v in bars.items() if k.startswith("tokens changed"))
    words = next(v for k, v in bars.items() if k.startswith("words changed"))
    fixed = next(v for k, v in bars.items() if k.startswith("words still"))
    assert tokens == [2, 3] and words == [1, 2] and fixed == [0, 0]  # features, last_chunk (None drawn as 0)
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("DEVIATES") == 2 and labels.count("matches") == 4 and labels.count("n/a") == 1
    assert [t.get_text() for t in ax.get_xticklabels()] == list(plots.STAGES)
    assert "2 tokens / 2 words" in ax.get_title()


def test_conform_costs_of_a_real_report():
    r = conform(AUDIO / "hello.wav", folder("hybrid", (70, 13)), "sherpa-onnx")
    fig = plots.conform_costs(r)
    assert sum(t.get_text() == "DEVIATES" for t in fig.axes[0].texts) == len({d.stage for d in r.deviations})


# --------------------------------------------------------------------------------------------------------------
# waveform_tokens, save, no pyplot
# --------------------------------------------------------------------------------------------------------------
def test_waveform_tokens_one_line_per_token():
    x = np.sin(np.arange(16000) / 10).astype(np.float32)
    fig = plots.waveform_tokens(x, ["▁a", "b", "▁c"], [0.1, 0.3, 0.5], chunk_seconds=0.25)
    ax = fig.axes[0]
    tokens = [ln for ln in ax.lines if ln.get_gid() == "token"]
    assert [ln.get_xdata()[0] for ln in tokens] == [0.1, 0.3, 0.5]
    assert len([ln for ln in ax.lines if ln.get_gid() == "chunk"]) == 3  # 0.25, 0.5, 0.75
    assert [t.get_text().strip() for t in ax.texts] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="timestamps"):
        plots.waveform_tokens(x, ["a"], [0.1, 0.2])


def test_save_writes_a_png_atomically(tmp_path):
    fig = plots.mel_comparison(np.zeros((80, 10)), np.ones((80, 10)))
    out = plots.save(fig, tmp_path / "mel.png")
    assert out == tmp_path / "mel.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mel.png"]  # no temporary left behind
    with pytest.raises(OutputError, match="does not exist"):
        plots.save(fig, tmp_path / "missing" / "mel.png")
    with pytest.raises(OutputError, match="is a folder"):
        plots.save(fig, tmp_path)


def test_plots_never_import_pyplot():
    """A command line tool or a server can draw without a GUI backend: the figures are pyplot-free."""
    code = (
        "import sys, numpy as np\n"
        "from refimpl import plots\n"
        "plots.mel_comparison(np.zeros((80, 10)), np.ones((80, 10)))\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=FIXTURES)
    assert out.stdout.strip() == "False"
