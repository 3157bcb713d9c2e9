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
    res = bench.step_mode({"a": Fake("a", eng), "b": Fake("b", eng)}, mel, decoders=(), warmup=1, block=3)
    n = res["a"]["chunks"]
    assert len(res["a"]["step"]) == len(res["b"]["step"]) == n - 1 and len(res["a"]["warmup_step"]) == 1
    assert order[: 2 + 3 * 2] == ["a", "b"] + ["b"] * 3 + ["a"] * 3  # warm-up round, then blocks, order alternating


def test_run_bench_smoke():
    """Every mode on both engines, the ratios at modes.<mode>.ratio / encoder_ratio, fresh-process memory."""
    r = bench.run_bench(
        folder("hybrid", (70, 13)), AUDIO / "fox.wav", seconds=8, warmup=1, repeats=2, subprocesses=True, cold_jit=False
    )
    assert r["att_context_size"] == [70, 13] and r["decoders"] == ["rnnt"]
    assert set(r["modes"]) == {"file", "step", "live"}
    for mode, key in (("file", "total"), ("step", "step"), ("live", "latency")):
        m = r["modes"][mode]
        assert m["ratio"] > 0 and m["encoder_ratio"] > 0 and m["p90_ratio"] > 0
        for e in m["engines"].values():
            assert e[key]["median_ms"] >= e["encoder"]["median_ms"] > 0
    f = r["modes"]["file"]["engines"]
    assert f["refimpl"]["order"] == "block" and f["onnxruntime"]["order"] == "step"
    assert f["refimpl"]["tokens"] == f["onnxruntime"]["tokens"]  # the same transcript, however it was evaluated
    assert r["modes"]["step"]["engines"]["refimpl"]["chunks"] == r["modes"]["step"]["engines"]["onnxruntime"]["chunks"]
    for name in ("onnxruntime", "refimpl"):
        fp = r["engines"][name]["fresh_process"]
        assert fp["peak_rss_mb"] >= fp["rss_after_imports_mb"] > 0 and fp["load_seconds"] > 0
    assert r["load_ratio"] > 0 and r["floor"]["ms_per_step"] > 0
    text = bench.format_report(r)
    for words in ("file mode", "step mode", "live mode", "peak RSS", "floor", "decoding ms"):
        assert words in text, words
    json.dumps(r)


@pytest.mark.parametrize("extra", [["--impl", "plain", "--mode", "step"], ["--decoder", "ctc", "--mode", "file,live"]])
def test_bench_cli(extra, capsys):
    """``refimpl bench`` is registered on the CLI; --json prints the run_bench dict."""
    args = build_parser().parse_args(["bench", "--model", "m", "--audio", "a.wav", *extra])
    assert args.func is bench.cmd_bench
    model = folder("hybrid", (70, 0)) if "ctc" not in extra else folder("hybrid", (70, 13)).parent / "ctc-att-70-13"
    argv = [
        "bench",
        "--model",
        str(model),
        "--audio",
        str(AUDIO / "fox.wav"),
        "--seconds",
        "3",
        "--repeats",
        "1",
        "--no-subprocess",
        "--json",
        *extra,
    ]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["refimpl_impl"] == ("plain" if "plain" in extra else "fast")
    assert r["decoders"] == (["ctc"] if "ctc" in extra else ["rnnt"])
    assert set(r["modes"]) == ({"step"} if "plain" in extra else {"file", "live"})


@pytest.mark.parametrize(
    "bad,words",
    [
        (["--seconds", "0"], "must be > 0"),
        (["--threads", "0"], "must be > 0"),
        (["--threads", "999"], "at most"),
        (["--mode", "fast"], "modes are file"),
    ],
)
def test_bench_options_are_checked_when_parsed(bad, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--model", "m", "--audio", "a.wav", *bad])
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_batch_mode():
    """--mode batch: N streams in one step against one stream, per engine, with the encoder apart."""
    r = bench.run_bench(
        folder("hybrid", (70, 0)),
        AUDIO / "fox.wav",
        seconds=4,
        warmup=1,
        modes=("batch",),
        streams=3,
        subprocesses=False,
        floor=False,
    )
    m = r["modes"]["batch"]
    assert set(r["modes"]) == {"batch"} and m["streams"] == 3 and m["ratio"] > 0
    for e in m["engines"].values():
        assert e["batch"]["n"] == e["one"]["n"] > 0
        assert e["batch_over_one"] == pytest.approx(e["batch"]["median_ms"] / e["one"]["median_ms"])
        assert e["batch"]["median_ms"] >= e["batch_encoder"]["median_ms"] > 0
    text = bench.format_report(r)
    assert "batch mode (3 streams" in text and "encoder alone: 3 streams / one" in text
