"""refimpl bench on a fixture model: it runs, interleaves, and reports every figure (no timing assertions)."""

import json

import numpy as np
import pytest
from fixture_data import AUDIO, folder

from refimpl.cli import build_parser, main
from refimpl.tools import bench


def test_bench_audio_is_the_clip_repeated():
    x = bench.bench_audio(10.0, AUDIO / "north_wind.wav")
    assert x.shape == (160000,) and x.dtype == np.float32
    one = bench.bench_audio(None, AUDIO / "north_wind.wav")
    assert np.array_equal(x[: len(one)], one[: len(x)])
    assert np.array_equal(x[len(one) : 2 * len(one)], one[: len(x) - len(one)])


def test_interleaving_alternates_engines_and_blocks():
    order = []

    class Fake:
        def __init__(self, name, inner):
            self.name, self._inner = name, inner

        def __getattr__(self, k):
            return getattr(self._inner, k)

        def encoder(self, *a, **kw):
            order.append(self.name)
            return self._inner.encoder(*a, **kw)

    from fixture_data import mel_goldens, nemo_model

    from refimpl.runtime.engines import RefimplEngine

    config, weights = nemo_model("hybrid")
    eng = RefimplEngine(config, weights, att_context_size=(70, 1), impl="fast")
    mel = mel_goldens()["fox/mel"][None]
    res = bench.stream_interleaved({"a": Fake("a", eng), "b": Fake("b", eng)}, mel, decoders=(), warmup=1, block=3)
    n = res["a"]["chunks"]
    assert len(res["a"]["step"]) == len(res["b"]["step"]) == n - 1 and len(res["a"]["warmup_step"]) == 1
    assert order[: 2 + 3 * 2] == ["a", "b"] + ["b"] * 3 + ["a"] * 3  # warm-up round, then blocks, order alternating


def test_run_bench_smoke():
    r = bench.run_bench(
        folder("hybrid", (70, 13)), AUDIO / "fox.wav", seconds=8, warmup=1, subprocesses=True, cold_jit=False
    )
    assert r["att_context_size"] == [70, 13] and r["decoders"] == ["rnnt"] and r["timed_chunks"] == r["chunks"] - 1
    for name in ("onnxruntime", "refimpl"):
        e = r["engines"][name]
        assert e["step"]["median_ms"] >= e["encoder"]["median_ms"] > 0
        assert e["fresh_process"]["peak_rss_mb"] >= e["fresh_process"]["rss_after_imports_mb"] > 0
        assert e["fresh_process"]["load_seconds"] > 0
    assert set(r["ratios"]) == {"step_median", "step_p90", "encoder_median", "load"}
    assert r["floor"]["ms_per_chunk"] > 0
    text = bench.format_report(r)
    assert "ms/chunk median" in text and "peak RSS" in text and "floor" in text
    json.dumps(r)


@pytest.mark.parametrize("extra", [["--impl", "plain"], ["--decoder", "ctc", "--block", "2"]])
def test_bench_cli(extra, capsys):
    """``refimpl bench`` is registered on the CLI; --json prints the run_bench dict."""
    args = build_parser().parse_args(["bench", "--model", "m", "--audio", "a.wav", *extra])
    assert args.func is bench.cmd_bench
    model = (
        folder("hybrid", (70, 0)) if "--decoder" not in extra else folder("hybrid", (70, 13)).parent / "ctc-att-70-13"
    )
    assert (
        main(
            [
                "bench",
                "--model",
                str(model),
                "--audio",
                str(AUDIO / "fox.wav"),
                "--seconds",
                "3",
                "--no-subprocess",
                "--json",
                *extra,
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["refimpl_impl"] == ("plain" if "plain" in extra else "fast")
    assert r["decoders"] == (["ctc"] if "ctc" in extra else ["rnnt"])
