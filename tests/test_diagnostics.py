"""Cross-check and diagnostics: crosscheck finds the first divergence (perturbed weight, wrong cache feedback),
check-inputs names the offending input and the expected value, stateless exports are called out, golden files
round-trip and catch tampering."""

import json
import shutil

import numpy as np
import onnx
import pytest
from fixture_data import AUDIO, FIXTURES, mel_goldens, nemo_model
from onnx import numpy_helper

from refimpl.cli import main
from refimpl.runtime.engines import RefimplEngine
from refimpl.runtime.onnx_engine import OnnxEngine
from refimpl.tools.check_inputs import check_inputs
from refimpl.tools.crosscheck import crosscheck_engines

HYBRID = FIXTURES / "hybrid"
M13 = HYBRID / "att-70-13"
FOX = str(AUDIO / "fox.wav")


# --- crosscheck ---------------------------------------------------------------------------------------------
def test_crosscheck_cli_passes_and_writes_the_json_contract(tmp_path, capsys):
    """--report FILE writes the JSON report besides the text one (saying so on stderr); --json prints it instead."""
    out = tmp_path / "report.json"
    argv = ["crosscheck", FOX, "--model", str(HYBRID / "att-70-1"), "--layers", "--quiet"]
    assert main(argv + ["--report", str(out)]) == 0
    captured = capsys.readouterr()
    assert "first divergence: none" in captured.out and "result: OK" in captured.out
    assert captured.err.splitlines()[-1] == f"wrote {out}"
    d = json.loads(out.read_text())
    assert main(argv + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out) == d
    assert d["ok"] is True and d["first_divergence"] is None
    assert set(d["tokens"]) == {"refimpl", "onnxruntime"} and d["tokens"]["refimpl"] == d["tokens"]["onnxruntime"]
    ch = d["chunks"][0]
    assert ch["index"] == 0
    for name in (
        "outputs",
        "encoded_lengths",
        "cache_last_channel_next",
        "cache_last_time_next",
        "cache_last_channel_next_len",
        "decoder_joint.outputs",
        "decoder_joint.output_states_1",
        "decoder_joint.output_states_2",
    ):
        assert set(ch["outputs"][name]) == {"max_abs", "max_rel", "ok"}, name
    assert "encoder.layers.1/output" in ch["layers"]


def _perturbed_copy(tmp_path, name, scale):
    dst = tmp_path / "perturbed"
    shutil.copytree(M13, dst)
    model = onnx.load(str(M13 / "encoder-model.onnx"))
    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(scale), name))
            break
    else:
        raise AssertionError(f"{name} not in the graph")
    onnx.save(model, str(dst / "encoder-model.onnx"))
    return dst


@pytest.mark.parametrize("layers", [False, True])
def test_crosscheck_names_chunk_and_layer_of_a_perturbed_weight(tmp_path, capsys, layers):
    """A 1% change to one weight of layer 1 in a copy of the ONNX file, refimpl's weights from the .nemo."""
    dst = _perturbed_copy(tmp_path, "layers.1.norm_conv.weight", 1.01)
    out = tmp_path / "r.json"
    argv = [
        "crosscheck",
        FOX,
        "--model",
        str(dst),
        "--weights",
        str(HYBRID / "model.nemo"),
        "--report",
        str(out),
        "--quiet",
    ] + (["--layers"] if layers else [])
    assert main(argv) == 1
    fd = json.loads(out.read_text())["first_divergence"]
    assert fd["chunk"] == 0 and fd["layer"] == 1, fd
    assert fd["tensor"] == ("encoder.layers.1.conv/output" if layers else "cache_last_time_next")
    assert "first divergence: chunk 0, layer 1" in capsys.readouterr().out


def test_crosscheck_without_weights_flag_cannot_see_a_consistent_change(tmp_path):
    """Weights pulled from the perturbed graph itself agree with it: --weights is what makes the check
    independent of the graph under test."""
    dst = _perturbed_copy(tmp_path, "layers.1.norm_conv.weight", 1.01)
    assert main(["crosscheck", FOX, "--model", str(dst), "--quiet"]) == 0


class _NoLengthFeedback:
    """An onnxruntime engine driven by a runtime that never feeds cache_last_channel_len back."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def encoder(self, audio_signal, length, ccache, tcache, clen, **kw):
        return self.engine.encoder(audio_signal, length, ccache, tcache, np.zeros_like(clen), **kw)


class _LayerFirstFeedback(_NoLengthFeedback):
    """...or one that swaps the cache's layer and batch axes when feeding it back (B == n_layers == 2)."""

    def encoder(self, audio_signal, length, ccache, tcache, clen, **kw):
        return self.engine.encoder(
            audio_signal, length, ccache.transpose(1, 0, 2, 3), tcache.transpose(1, 0, 2, 3), clen, **kw
        )


def test_crosscheck_catches_caches_fed_back_wrong():
    config, weights = nemo_model("hybrid")
    cand = RefimplEngine(config, weights, att_context_size=(70, 13))
    report = crosscheck_engines(_NoLengthFeedback(OnnxEngine(M13)), cand, mel_goldens()["north_wind/mel"])
    assert not report.ok
    assert report.chunks[0].ok  # chunk 0 has an empty cache either way
    fd = report.first_divergence
    # layer 0's attention input (its cache row) does not depend on the mask; its output, hence the conv cache, does
    assert (fd["chunk"], fd["layer"], fd["tensor"]) == (1, 0, "cache_last_time_next"), fd


def test_layer_first_feedback_runs_silently_when_batch_equals_n_layers():
    """Why check-inputs warns when B == n_layers: onnxruntime accepts the swapped cache and computes garbage."""
    from refimpl.runtime.loop import run_stream

    mel = mel_goldens()["north_wind/mel"]
    mel = np.stack([mel, mel[:, ::-1].copy()])
    good = run_stream(OnnxEngine(M13), mel, keep_steps=True)
    bad = run_stream(_LayerFirstFeedback(OnnxEngine(M13)), mel, keep_steps=True)
    assert np.array_equal(good.steps[0].encoder["outputs"], bad.steps[0].encoder["outputs"])
    assert not np.allclose(good.steps[1].encoder["outputs"], bad.steps[1].encoder["outputs"], atol=1e-3)


# --- check-inputs -------------------------------------------------------------------------------------------
def _inputs(
    t=121,
    cache=70,
    conv=8,
    b=1,
    layer_first=False,
    time_major=False,
    length=None,
    clen=0,
    length_dtype=np.int64,
    clen_dtype=np.int64,
):
    x = np.zeros((b, t, 80) if time_major else (b, 80, t), np.float32)
    cc = np.zeros((2, b, cache, 64) if layer_first else (b, 2, cache, 64), np.float32)
    tc = np.zeros((2, b, 64, conv) if layer_first else (b, 2, 64, conv), np.float32)
    return {
        "audio_signal": x,
        "length": np.full(b, t if length is None else length, length_dtype),
        "cache_last_channel": cc,
        "cache_last_time": tc,
        "cache_last_channel_len": np.full(b, clen, clen_dtype),
    }


def _problems(report, name):
    return " | ".join(p.message for p in report.problems if p.input == name and p.severity == "error")


def test_check_inputs_accepts_a_right_call():
    r = check_inputs(M13, _inputs())
    assert r.ok and not r.problems and r.output_shapes["outputs"] == [1, 64, 14]


def test_check_inputs_time_major_features():
    r = check_inputs(M13, _inputs(time_major=True))
    assert "[B, 80, T]" in _problems(r, "audio_signal") and "transpose(0, 2, 1)" in _problems(r, "audio_signal")
    assert "audio_signal axis 1 is 121" in r.explanation and "time-major [B, T, 80]" in r.explanation
    assert "transpose to [B, 80, T]" in r.explanation


def test_check_inputs_wrong_number_of_frames_and_the_20_by_70_error():
    """9 mel frames where 121 are needed, with a 20-row cache: onnxruntime's 'Where ... 20 by 70', explained."""
    r = check_inputs(M13, _inputs(t=9, cache=20))
    msg = _problems(r, "audio_signal")
    assert "9 mel frames" in msg and "121 mel frames are needed" in msg and "9 pre-encode" in msg
    assert "exactly 70" in _problems(r, "cache_last_channel") and "20 by 70" in _problems(r, "cache_last_channel")
    assert "20 by 70" in r.onnxruntime_error
    assert "cache_last_channel has 20 rows where the export needs exactly 70" in r.explanation
    assert "gives no encoder frame" in r.explanation


def test_check_inputs_short_chunk_alone_explains_invalid_input_shape():
    r = check_inputs(M13, _inputs(t=9))
    assert "Invalid input shape" in r.onnxruntime_error
    assert "gives no encoder frame" in r.explanation and "121" in r.explanation


def test_check_inputs_missing_pre_encode_cache():
    r = check_inputs(M13, _inputs(t=112))
    msg = _problems(r, "audio_signal")
    assert "without its 9 pre-encode frames" in msg and "13 encoder frames instead of 14" in msg
    assert r.onnxruntime_error is None  # onnxruntime runs it silently: only the check catches it
    r = check_inputs(M13, _inputs(t=105))
    assert "eager first chunk" in _problems(r, "audio_signal") and "12 encoder frames" in _problems(r, "audio_signal")


def test_check_inputs_more_than_one_chunk_per_call():
    r = check_inputs(M13, _inputs(t=233))
    assert "more than one chunk (121)" in _problems(r, "audio_signal") and "28" in _problems(r, "audio_signal")


def test_check_inputs_layer_first_caches():
    r = check_inputs(M13, _inputs(layer_first=True))
    for name in ("cache_last_channel", "cache_last_time"):
        assert "layer-first" in _problems(r, name) and "transpose(1, 0, 2, 3)" in _problems(r, name)
    assert "[1, 2, 70, 64]" in _problems(r, "cache_last_channel")
    assert "layer-first" in r.explanation
    r = check_inputs(M13, _inputs(layer_first=True, b=2))  # B == n_layers: same shape, onnxruntime runs it
    assert any(p.severity == "warning" and "equals n_layers" in p.message for p in r.problems)


def test_check_inputs_wrong_conv_cache_length():
    r = check_inputs(M13, _inputs(conv=7))
    assert "exactly 8" in _problems(r, "cache_last_time") and "13 by 14" in _problems(r, "cache_last_time")
    assert "13 by 14" in r.onnxruntime_error and "cache_last_time" in r.explanation and "exactly 8" in r.explanation


def test_check_inputs_length_dtypes_and_values():
    r = check_inputs(M13, _inputs(length_dtype=np.int32))
    assert "expected int64, found int32" in _problems(r, "length")
    assert "int32 where the graph expects int64" in r.explanation and "length" in r.explanation
    r = check_inputs(M13, _inputs(clen_dtype=np.int32))
    assert "expected int64, found int32" in _problems(r, "cache_last_channel_len")
    r = check_inputs(M13, _inputs(clen=80))
    assert "0..70" in _problems(r, "cache_last_channel_len")
    r = check_inputs(M13, _inputs(clen=14), first_chunk=True)
    assert "must be 0 at the first chunk" in _problems(r, "cache_last_channel_len")
    r = check_inputs(M13, _inputs(length=200))
    assert "more than the 121 frames" in _problems(r, "length")
    inputs = _inputs()
    inputs["cache_last_channel"][:] = 1.0
    r = check_inputs(M13, inputs)
    assert any("feed back cache_last_channel_next_len" in p.message for p in r.problems)


def test_check_inputs_cli(tmp_path, capsys):
    f = tmp_path / "in.npz"
    np.savez(f, **_inputs(t=9, cache=20))
    assert main(["check-inputs", "--model", str(M13), str(f)]) == 1
    out = capsys.readouterr().out
    assert "ERROR   cache_last_channel" in out and "which means:" in out and "20 by 70" in out
    np.savez(f, **_inputs())
    assert main(["check-inputs", "--model", str(M13), str(f)]) == 0
    assert main(["check-inputs", "--model", str(M13), str(tmp_path / "missing.npz")]) == 2


# --- stateless exports --------------------------------------------------------------------------------------
def test_stateless_export_is_called_out_by_every_command(tmp_path, capsys):
    nocache = str(HYBRID / "nocache")
    assert main(["inspect", "--model", nocache]) == 0
    assert "WARNING" in capsys.readouterr().out
    assert main(["transcribe", FOX, "--model", nocache, "--engine", "onnxruntime"]) == 2
    err = capsys.readouterr().err
    assert "WITHOUT cache support" in err and "cannot stream" in err and "set_export_config" in err
    assert main(["golden", "record", "--model", nocache, "--audio", FOX, "-o", str(tmp_path / "g.npz")]) == 2
    assert "WITHOUT cache support" in capsys.readouterr().err
    assert main(["crosscheck", FOX, "--model", nocache, "--quiet"]) == 0  # compared offline, said up front
    out = capsys.readouterr()
    assert "WITHOUT cache support" in out.err and "offline" in out.out
    assert main(["transcribe", FOX, "--model", nocache]) == 0  # refimpl streams the weights, with a note
    assert "WITHOUT cache support" in capsys.readouterr().err
    r = check_inputs(
        HYBRID / "nocache-ctc", {"audio_signal": np.zeros((1, 80, 121), np.float32), "length": np.array([121])}
    )
    assert r.stateless and r.ok


# --- golden files -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("golden") / "g.npz"
    assert main(["golden", "record", "--model", str(HYBRID / "att-70-6"), "--audio", FOX, "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("engine", ["onnxruntime", "refimpl"])
def test_golden_round_trip_on_both_engines(golden_file, engine, capsys):
    assert main(["golden", "verify", str(golden_file), "--model", str(HYBRID / "att-70-6"), "--engine", engine]) == 0
    out = capsys.readouterr().out
    assert "result: OK" in out and "identical" in out


def test_golden_verify_json_and_report(golden_file, tmp_path, capsys):
    """--json prints the report as JSON instead of the text; --report FILE also writes it, its path checked first."""
    argv = ["golden", "verify", str(golden_file), "--model", str(HYBRID / "att-70-6")]
    assert main(argv + ["--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is True and d["first_divergence"] is None
    out = tmp_path / "verify.json"
    assert main(argv + ["--report", str(out)]) == 0
    captured = capsys.readouterr()
    assert "result: OK" in captured.out and captured.err.splitlines()[-1] == f"wrote {out}"
    assert json.loads(out.read_text())["ok"] is True
    assert main(argv + ["--report", str(tmp_path / "no" / "verify.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_golden_verify_with_weights_from_the_nemo(golden_file):
    assert (
        main(["golden", "verify", str(golden_file), "--model", str(HYBRID / "model.nemo"), "--engine", "refimpl"]) == 0
    )


def test_tampered_golden_fails_with_a_readable_report(golden_file, tmp_path, capsys):
    z = dict(np.load(golden_file))
    z["chunk/3/outputs"][0, 5, 2] += 0.05
    bad = tmp_path / "tampered.npz"
    np.savez(bad, **z)
    assert main(["golden", "verify", str(bad), "--model", str(HYBRID / "att-70-6")]) == 1
    out = capsys.readouterr().out
    assert "first divergence: chunk 3, frame 2, stream 0: outputs" in out and "result: FAILED" in out
    z = dict(np.load(golden_file))
    z["tokens/rnnt"] = z["tokens/rnnt"][:-1]
    header = json.loads(str(z["__header__"]))
    header["tokens"]["rnnt"] = header["tokens"]["rnnt"][:-1]
    z["__header__"] = np.array(json.dumps(header))
    np.savez(bad, **z)
    assert main(["golden", "verify", str(bad), "--model", str(HYBRID / "att-70-6")]) == 1
    assert "tokens (rnnt): DIFFERENT" in capsys.readouterr().out


def test_golden_format_errors(golden_file, tmp_path, capsys):
    z = dict(np.load(golden_file))
    header = json.loads(str(z["__header__"]))
    header["version"] = 99
    z["__header__"] = np.array(json.dumps(header))
    np.savez(tmp_path / "v99.npz", **z)
    assert main(["golden", "verify", str(tmp_path / "v99.npz"), "--model", str(HYBRID / "att-70-6")]) == 2
    assert "version 99, this refimpl reads version 1: upgrade refimpl" in capsys.readouterr().err
    (tmp_path / "x.json").write_text("{}")
    assert main(["golden", "verify", str(tmp_path / "x.json"), "--model", str(HYBRID / "att-70-6")]) == 2
    assert "not an .npz" in capsys.readouterr().err
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    assert main(["golden", "verify", str(tmp_path / "plain.npz"), "--model", str(HYBRID / "att-70-6")]) == 2
    assert "no __header__" in capsys.readouterr().err
    assert main(["golden", "verify", str(golden_file), "--model", str(HYBRID / "att-70-13")]) == 2
    assert "exported for att_context_size [70, 13], not [70, 6]" in capsys.readouterr().err


def test_inspect_prints_the_contract(capsys):
    assert main(["inspect", "--model", str(M13)]) == 0
    out = capsys.readouterr().out
    assert "mel_frames_per_call        = 121" in out and "encoder_frames_per_call    = 14" in out
    assert "[B, 2, 70, 64]" in out and "cache_last_channel_len       int64    0" in out
    assert main(["inspect", "--model", str(HYBRID / "model.nemo"), "--att-context-size", "70,0"]) == 0
    assert "mel_frames_per_call        = 17" in capsys.readouterr().out
    assert main(["inspect", "--model", str(M13), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["contract"]["encoder"]["audio_signal"]["later"] == ["B", 80, 121]


def test_crosscheck_weights_from_another_export_of_the_same_model(capsys):
    assert main(["crosscheck", FOX, "--model", str(M13), "--weights", str(HYBRID / "att-70-0"), "--quiet"]) == 0
    capsys.readouterr()
    assert (
        main(["crosscheck", FOX, "--model", str(M13), "--weights", str(FIXTURES / "variant" / "att-24-0"), "--quiet"])
        == 2
    )
    err = capsys.readouterr().err
    assert "is not the model of" in err and "d_model: 64 vs 48" in err


def test_fast_path_behind_every_command(tmp_path, capsys):
    """--impl fast (refimpl.fast) passes the same checks as the plain reference."""
    assert main(["crosscheck", FOX, "--model", str(HYBRID / "att-70-0"), "--impl", "fast", "--layers", "--quiet"]) == 0
    capsys.readouterr()
    g = tmp_path / "g.npz"
    assert main(["golden", "record", "--model", str(HYBRID / "att-70-1"), "--audio", FOX, "-o", str(g)]) == 0
    assert (
        main(["golden", "verify", str(g), "--model", str(HYBRID / "att-70-1"), "--engine", "refimpl", "--impl", "fast"])
        == 0
    )
    capsys.readouterr()
    for impl in ("fast", "plain"):
        assert (
            main(
                [
                    "transcribe",
                    FOX,
                    "--model",
                    str(HYBRID / "model.nemo"),
                    "--att-context-size",
                    "70,1",
                    "--impl",
                    impl,
                    "--json",
                ]
            )
            == 0
        )
        d = json.loads(capsys.readouterr().out)
        from fixture_data import stream_golden

        assert d["tokens"] == stream_golden("hybrid", (70, 1), "fox")["rnnt/tokens"].tolist()
