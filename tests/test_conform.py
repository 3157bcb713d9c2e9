"""refimpl conform: each stage's deviation is found where it exists and not where it does not.

References: NeMo's own streaming goldens (NeMo's side must reproduce them), the real sherpa-onnx and onnx-asr
packages (conform runs them and the emulation must give their tokens), and runtimes built to differ from NeMo's
pipeline in exactly one stage (conform must name that stage and no other).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from fixture_data import AUDIO, FIXTURES, MODELS, folder, stream_golden

from refimpl import cli
from refimpl.model.audio import load_audio
from refimpl.peers import sherpa_onnx
from refimpl.tools.conform import ConformError, conform
from refimpl.tools.conform.core import attribute
from refimpl.tools.conform.graphs import sherpa_graph
from refimpl.tools.conform.runtimes import load_user_features, open_model, open_runtime

PEERS = FIXTURES / "peers" / "hybrid"
HELLO = AUDIO / "hello.wav"
FOX = AUDIO / "fox.wav"


def stages(report) -> list:
    return sorted({d.stage for d in report.deviations})


# --------------------------------------------------------------------------------------------------------------
# the control: NeMo's export driven as NeMo streams is clean, and NeMo's side is NeMo
# --------------------------------------------------------------------------------------------------------------
CONTROL = [(m, att) for m, spec in MODELS.items() for att in spec["modes"]]


@pytest.mark.parametrize("model,att", CONTROL, ids=[f"{m}-{a[0]}-{a[1]}" for m, a in CONTROL])
def test_nemo_control_is_clean_on_every_fixture(model, att):
    clip = MODELS[model]["clips"][-1]
    r = conform(AUDIO / f"{clip}.wav", folder(model, att), "nemo")
    assert r.ok, [d.what for d in r.deviations]
    assert r.deviations == [] and r.runtime_result["tokens"] == r.nemo["tokens"]
    assert {c["stage"] for c in r.clean} == {
        "features",
        "normalization",
        "first_chunk",
        "chunking",
        "last_chunk",
        "decoding",
        "graph",
    }
    g = stream_golden(model, att, clip)
    if r.head == "rnnt" and "rnnt/tokens" in g:  # NeMo's side is NeMo's own streaming result
        assert r.nemo["tokens"] == [int(t) for t in g["rnnt/tokens"].reshape(-1)]
    graph = next(c for c in r.clean if c["stage"] == "graph")["measure"]
    assert graph["max_rel"] <= 3e-6  # FIXTURE_WORST_REL: onnxruntime vs refimpl on every call


@pytest.mark.parametrize("name", ["sherpa-att-70-13", "sherpa-ctc-att-70-13"])
def test_nemo_control_through_sherpa_graphs_is_clean(name):
    """sherpa's graphs are NeMo's export: driven as NeMo streams, they give NeMo's tokens."""
    r = conform(FOX, PEERS / name, "nemo")
    assert r.ok and r.deviations == []


def test_control_refuses_a_stateless_export():
    with pytest.raises(ConformError, match="cache support"):
        conform(HELLO, PEERS / "onnx-asr-rnnt", "nemo")


# --------------------------------------------------------------------------------------------------------------
# sherpa-onnx: features and first chunk always; last chunk without enough padding; graph when int8
# --------------------------------------------------------------------------------------------------------------
def test_sherpa_attribution_and_the_package():
    r = conform(FOX, PEERS / "sherpa-att-70-13", "sherpa-onnx")
    assert r.engine == "package" and r.emulation["matches_package"] is True
    assert stages(r) == ["features", "first_chunk"]
    assert not r.ok and r.runtime_result["tokens"] != r.nemo["tokens"]
    feats = next(d for d in r.deviations if d.stage == "features").measure["diagnosis"]
    assert feats["offset_frames"] == 0.5 and feats["floor_kind"] == "kaldi"
    assert feats["looks_like"] == "kaldi-native-fbank" and feats["normalisation"] == "none"
    assert 0.3 < feats["median_abs"] < 1.0  # half a hop: the issue measured 0.5-0.6 (feature std ~4.5)
    first = next(d for d in r.deviations if d.stage == "first_chunk")
    assert first.measure["pre_encode_frames"] == 9 and first.measure["runtime_first_window"] == [0, 121]
    graph = next(c for c in r.clean if c["stage"] == "graph")["measure"]
    assert graph["max_rel"] <= 3e-6
    for d in r.deviations:  # every cost measured both ways
        assert d.effect["tokens_changed"] is not None and d.if_fixed is not None


@pytest.mark.parametrize("pad", [0.0, 0.66, 2.0])
def test_sherpa_last_chunk_and_the_padding_that_fixes_it(pad):
    x = load_audio(AUDIO / "north_wind.wav")
    r = conform(x, PEERS / "sherpa-att-70-13", "sherpa-onnx", tail_padding_seconds=pad)
    sched = sherpa_onnx.schedule(len(x), 121, 112, tail_padding_seconds=pad)
    last = [d for d in r.deviations if d.stage == "last_chunk"]
    measure = last[0].measure if last else next(c for c in r.clean if c["stage"] == "last_chunk")["measure"]
    assert measure["nemo_unheard_seconds"] < 0.08  # NeMo leaves only a tail of < 8 frames
    if sched.unheard_seconds > measure["nemo_unheard_seconds"]:
        assert last, f"{sched.unheard_seconds} s unheard but no last_chunk deviation"
        need = last[0].measure["padding_needed_seconds"]
        assert last[0].measure["unheard_seconds"] == pytest.approx(sched.unheard_seconds, abs=1e-4)
        assert sherpa_onnx.schedule(len(x), 121, 112, tail_padding_seconds=need).unheard_samples == 0
        fixed = conform(x, PEERS / "sherpa-att-70-13", "sherpa-onnx", tail_padding_seconds=need)
        assert "last_chunk" not in stages(fixed)
    else:
        assert not last
    assert r.emulation["matches_package"] is True


def test_sherpa_int8_graph_deviates_and_float_weights_show_the_whole_cost():
    r = conform(HELLO, PEERS / "sherpa-att-70-13-int8", "sherpa-onnx", weights=FIXTURES / "hybrid" / "model.nemo")
    assert "graph" in stages(r)
    g = next(d for d in r.deviations if d.stage == "graph").measure
    assert g["max_rel"] > 1e-3  # int8: far outside float32 rounding (measured 0.015)
    r2 = conform(HELLO, PEERS / "sherpa-att-70-13-int8", "sherpa-onnx")
    assert any("dequantized" in n for n in r2.notes)


def test_sherpa_on_nemos_own_export_is_emulated_with_the_models_window():
    r = conform(HELLO, folder("hybrid", (70, 6)), "sherpa-onnx")
    assert r.engine == "emulation" and "window_size 65 and chunk_shift 56" in r.why_emulation
    assert stages(r) == ["features", "first_chunk"]


# --------------------------------------------------------------------------------------------------------------
# onnx-asr: normalisation and offline chunking; CTC also decoding; cache-aware exports not at all
# --------------------------------------------------------------------------------------------------------------
def test_onnx_asr_rnnt():
    r = conform(FOX, PEERS / "onnx-asr-rnnt", "onnx-asr")
    assert r.engine == "package" and r.emulation["matches_package"] is True
    assert stages(r) == ["chunking", "normalization"]
    feats = next(c for c in r.clean if c["stage"] == "features")["measure"]
    assert feats["max_rel"] <= 2e-5  # nemo80 (float64 spectrum) vs NeMo: float rounding, the 'mel' tolerance
    norm = next(d for d in r.deviations if d.stage == "normalization")
    assert "normalize NA" in norm.fix


def test_onnx_asr_ctc_drops_the_last_frame():
    r = conform(FOX, PEERS / "onnx-asr-ctc", "onnx-asr")
    assert stages(r) == ["chunking", "decoding", "normalization"]
    d = next(d for d in r.deviations if d.stage == "decoding").measure
    assert d["frames_valid"] - d["frames_decoded"] == 1


def test_onnx_asr_cannot_run_a_cache_aware_export():
    r = conform(HELLO, folder("hybrid", (70, 13)), "onnx-asr")
    assert not r.ok and r.folder_error and "Required inputs" in r.folder_error
    assert r.deviations[0].effect["tokens_changed"] == len(r.nemo["tokens"])


# --------------------------------------------------------------------------------------------------------------
# one stage at a time: a runtime that is NeMo's except in one stage is found deviating in that stage only
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nemo_sides():
    side = open_model(PEERS / "sherpa-att-70-13")
    ctc = open_model(PEERS / "sherpa-ctc-att-70-13")
    return {
        "rnnt": (side, open_runtime("nemo", PEERS / "sherpa-att-70-13", side)),
        "ctc": (ctc, open_runtime("nemo", PEERS / "sherpa-ctc-att-70-13", ctc)),
    }


def _one_stage(stage: str, side, base):
    rt = base.runtime
    kaldi = lambda x: (sherpa_onnx.features(x), sherpa_onnx.frames_ready(len(x)))  # noqa: E731
    change = {
        "features": dict(features=kaldi),
        "normalization": dict(normalization="per_feature"),
        "first_chunk": dict(first_chunk="frames"),
        "chunking": dict(window=rt.window + 8, shift=rt.shift + 8),
        "last_chunk": dict(last_chunk="strict"),
        "decoding": dict(decoding="sherpa-onnx"),  # decodes every output frame, encoded_lengths ignored
        "graph": dict(graph=_int8_graph()),
    }[stage]
    return dataclasses.replace(base, runtime=dataclasses.replace(rt, **change))


def _int8_graph():
    from refimpl.peers.sherpa_runner import OrtSherpaModel

    return sherpa_graph(OrtSherpaModel(PEERS / "sherpa-att-70-13-int8"))


@pytest.mark.parametrize(
    "stage", ["features", "normalization", "first_chunk", "chunking", "last_chunk", "decoding", "graph"]
)
def test_each_stage_is_found_alone(stage, nemo_sides):
    side, base = nemo_sides["rnnt"]
    x = load_audio(AUDIO / "north_wind.wav")
    r = attribute(x, side, _one_stage(stage, side, base))
    assert stages(r) == [stage], [d.what for d in r.deviations]
    d = r.deviations[0]
    assert d.fix and d.effect["tokens_changed"] is not None
    assert d.if_fixed == {"tokens_changed": 0, "words_changed": 0}  # NeMo's stage back: NeMo's result exactly
    # the stage alone in NeMo's pipeline is the whole runtime here
    assert d.effect["tokens_changed"] == _distance(r.nemo["tokens"], r.runtime_result["tokens"])


def _distance(a, b):
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(a, b)


# --------------------------------------------------------------------------------------------------------------
# --features: a user's front end diagnosed against NeMo's log-mel
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nemo_mel():
    side = open_model(folder("hybrid", (70, 13)))
    x = load_audio(FOX)
    mel, valid = side.model.features(x)
    return side, x, mel[:valid]


def _diagnosis(tmp_path, arr, **extra):
    p = tmp_path / "feats.npz"
    np.savez(p, features=arr, **extra)
    r = conform(FOX, folder("hybrid", (70, 13)), "nemo", features=p)
    dev = [d for d in r.deviations if d.stage == "features"]
    return r, (dev[0].measure["diagnosis"] if dev else None)


def test_features_nemos_own_log_mel_is_clean_in_either_layout(tmp_path, nemo_mel):
    _, _, mel = nemo_mel
    for arr in (mel, mel.T, mel.T[None]):
        r, diag = _diagnosis(tmp_path, arr)
        assert diag is None and r.ok


def test_features_diagnoses_kaldi_normalised_shifted_and_scaled(tmp_path, nemo_mel):
    side, x, mel = nemo_mel
    _, d = _diagnosis(tmp_path, sherpa_onnx.features(x))
    assert d["offset_frames"] == 0.5 and d["floor_kind"] == "kaldi" and d["looks_like"] == "kaldi-native-fbank"
    norm = (mel - mel.mean(0)) / (mel.std(0, ddof=1) + 1e-5)
    _, d = _diagnosis(tmp_path, norm)
    assert d["normalisation"] == "per_feature" and d["offset_frames"] == 0
    _, d = _diagnosis(tmp_path, np.concatenate([mel[1:], mel[-1:]]))  # one frame early
    assert d["offset_frames"] == 1.0
    _, d = _diagnosis(tmp_path, mel / np.log(10))
    assert "log10" in d["scaling"]
    loud, valid = side.model.features(x * 32768)
    _, d = _diagnosis(tmp_path, loud[:valid])
    assert "int16" in d["scaling"]


@pytest.mark.parametrize(
    "arr,match",
    [
        (np.zeros((50, 81), np.float32), r"\[T, 80\] or \[80, T\].*found \[50, 81\]"),
        (np.zeros((80, 80), np.float32), "either layout"),
        (np.full((50, 80), np.nan, np.float32), "NaN"),
        (np.zeros((50, 80), np.int16), "float"),
    ],
)
def test_features_file_errors_name_what_was_found(tmp_path, arr, match):
    p = tmp_path / "f.npz"
    np.savez(p, features=arr)
    with pytest.raises(ConformError, match=match):
        load_user_features(p, 80)


def test_features_layout_entry_decides(tmp_path):
    p = tmp_path / "f.npz"
    np.savez(p, features=np.zeros((80, 80), np.float32), layout="FT")
    mel, n = load_user_features(p, 80)
    assert mel.shape == (80, 80) and n == 80
    with pytest.raises(ConformError, match="no such file"):
        load_user_features(tmp_path / "missing.npz", 80)


# --------------------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------------------
def test_cli_exit_codes_and_json(tmp_path, capsys):
    out = tmp_path / "c.json"
    argv = ["conform", str(HELLO), "--model", str(PEERS / "sherpa-att-70-13"), "--runtime", "sherpa-onnx"]
    assert cli.main(argv + ["--json"]) == 1  # the JSON report on stdout instead of the text
    printed = json.loads(capsys.readouterr().out)
    rc = cli.main(argv + ["--report", str(out)])  # the text report, and the JSON one written to FILE
    assert rc == 1
    d = json.loads(out.read_text())
    assert d == printed
    assert {"runtime", "ok", "engine", "deviations", "text", "tokens"} <= set(d)
    assert d["runtime"] == "sherpa-onnx" and d["ok"] is False and d["engine"] == "package"
    assert set(d["text"]) == {"nemo", "runtime"} and set(d["tokens"]) == {"nemo", "runtime"}
    for dev in d["deviations"]:
        assert {"stage", "what", "measure", "fix", "effect"} <= set(dev)
        assert set(dev["effect"]) >= {"tokens_changed", "words_changed"}
    captured = capsys.readouterr()
    assert "first_chunk" in captured.out and captured.err.splitlines()[-1] == f"wrote {out}"
    assert cli.main(["conform", str(HELLO), "--model", str(folder("hybrid", (70, 13))), "--runtime", "nemo"]) == 0


def test_cli_bad_input_is_a_message_not_a_traceback(tmp_path, capsys):
    rc = cli.main(["conform", str(HELLO), "--model", str(PEERS / "onnx-asr-rnnt"), "--runtime", "sherpa-onnx"])
    assert rc == 2 and "stateless export" in capsys.readouterr().err
    rc = cli.main(
        [
            "conform",
            str(HELLO),
            "--model",
            str(folder("hybrid", (70, 13))),
            "--runtime",
            "nemo",
            "--report",
            str(tmp_path),
        ]
    )
    assert rc == 2 and "is a folder" in capsys.readouterr().err
    rc = cli.main(
        ["conform", str(HELLO), "--model", str(folder("hybrid", (70, 13))), "--runtime", "nemo", "--tail-padding", "1"]
    )
    assert rc == 2 and "applies to sherpa-onnx" in capsys.readouterr().err
