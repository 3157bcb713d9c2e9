"""Every model kind: the CTC-only (EncDecCTCModelBPE) and RNNT-only (EncDecRNNTBPEModel) fixtures load from the
.nemo and from their exports with the heads they have (named by weights_tools, never guessed), transcribe picks
that head, asking for the other one is a clear error, and stateless exports name the fix. (Their per-chunk
agreement with NeMo and onnxruntime is in test_runtime_nemo / test_runtime_onnx / test_fast / test_layers_nemo,
which run every model of fixture_data.MODELS.)"""

import dataclasses
import json

import onnx
import pytest
from fixture_data import AUDIO, FIXTURES, MODELS, collapse_ctc, folder, stream_golden

import weights_tools as wt
from refimpl import api
from refimpl.cli import main as refimpl_main
from weights_tools.cli import main as wt_main
from weights_tools.nemo_load import nemo_shapes
from weights_tools.schema import check_against

KINDS = {"ctc": ("ctc", "decoder"), "rnnt": ("rnnt", None)}  # model -> (its one head, where a CTC head lives)


@pytest.mark.parametrize("model", KINDS)
def test_heads_and_ctc_module_are_named_by_the_loader(model):
    head, module = KINDS[model]
    sources = [wt.load_nemo(FIXTURES / model / "model.nemo")]
    sources += [wt.load_onnx(folder(model, att)) for att in MODELS[model]["modes"]]
    for config, weights in sources:
        assert config.heads == (head,)
        if module is not None:
            assert config.ctc.module == module and set(weights[module]) == {"decoder_layers"}
            assert "ctc_decoder" not in weights
        else:
            assert config.ctc is None and set(weights) >= {"encoder", "decoder", "joint"}
    hybrid, _ = wt.load_nemo(FIXTURES / "hybrid" / "model.nemo")
    assert hybrid.ctc.module == "ctc_decoder" and wt.plan_onnx(
        FIXTURES / "hybrid" / "ctc-att-70-13"
    ).config.ctc.module == ("ctc_decoder")


def test_ctc_module_is_validated(tmp_path):
    """By the config (only NeMo's two places), against the weights (the schema check), and in the graph."""
    with pytest.raises(wt.ConfigError, match=r"'decoder_head'.*expected one of \('ctc_decoder', 'decoder'\)"):
        wt.CTCConfig(vocab_size=40, module="decoder_head")
    config, _ = wt.load_nemo(FIXTURES / "hybrid" / "model.nemo")
    with pytest.raises(wt.ConfigError, match="prediction network under 'decoder'"):
        dataclasses.replace(config, ctc=wt.CTCConfig(vocab_size=128, module="decoder"))
    config, weights = wt.load_nemo(FIXTURES / "ctc" / "model.nemo")
    flat = wt.flatten(weights)
    wrong = dataclasses.replace(config, ctc=wt.CTCConfig(vocab_size=40, module="ctc_decoder"))
    with pytest.raises(wt.WeightNotFoundError, match=r"missing: ctc_decoder.decoder_layers.0.weight"):
        check_against(nemo_shapes(wrong, flat), flat, "ctc/model.nemo")
    model = onnx.load(str(folder("ctc", (70, 13)) / "model.onnx"))
    for init in model.graph.initializer:
        if init.name.startswith("decoder.decoder_layers.0."):
            old = init.name
            init.name = "head." + old[len("decoder.") :]
            for node in model.graph.node:
                node.input[:] = [init.name if i == old else i for i in node.input]
    onnx.save(model, str(tmp_path / "model.onnx"))
    with pytest.raises(wt.ModelLoadError, match=r"'head.decoder_layers.0.weight'; NeMo's exports name it"):
        wt.load_onnx(tmp_path)


def test_ctc_only_onnx_with_its_nemo():
    """The graph and the .nemo agree (the CTC module too), and the .nemo supplies the look-ahead list."""
    config = wt.plan_onnx(folder("ctc", (70, 0)), nemo=FIXTURES / "ctc" / "model.nemo").config
    assert config.encoder.att_context_sizes == ((70, 13), (70, 0)) and config.ctc.module == "decoder"


def _transcribe(capsys, *argv):
    assert refimpl_main(["transcribe", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("model", KINDS)
def test_transcribe_picks_the_head_the_model_has(capsys, model):
    """Export folder (both engines) and .nemo: the one head, with NeMo's own streaming text. The features are
    refimpl's log-mel of the WAV (NeMo's goldens start from NeMo's mel), which on these clips gives the same
    tokens."""
    head = KINDS[model][0]
    att = MODELS[model]["modes"][0]
    g = stream_golden(model, att, "hello")
    wav = str(AUDIO / "hello.wav")
    for argv in (
        [wav, "--model", str(folder(model, att))],
        [wav, "--model", str(folder(model, att)), "--engine", "onnxruntime"],
        [wav, "--model", str(FIXTURES / model / "model.nemo"), "--backend", "numpy"],
    ):
        d = _transcribe(capsys, *argv)
        assert d["decoder"] == head and d["att_context_size"] == list(att)
        assert d["text"] == str(g[f"{head}/text"])
    t = api.transcribe(wav, FIXTURES / model / "model.nemo", att_context_size=MODELS[model]["modes"][-1], impl="plain")
    g = stream_golden(model, MODELS[model]["modes"][-1], "hello")
    if head == "rnnt":
        assert t.tokens == g["rnnt/tokens"].tolist()
    else:
        assert t.tokens == collapse_ctc(
            g["ctc/frame_argmax"], wt.read_nemo_config(FIXTURES / model / "model.nemo").blank_id
        )


@pytest.mark.parametrize("model,other", [("ctc", "rnnt"), ("rnnt", "ctc")])
def test_asking_for_the_head_a_model_lacks_exits_2(capsys, model, other):
    argv = ["transcribe", str(AUDIO / "hello.wav"), "--model", str(FIXTURES / model / "model.nemo"), "--decoder", other]
    assert refimpl_main(argv) == 2
    err = capsys.readouterr().err
    assert f"has no {other.upper()} head" in err and f"it has: {model}" in err and "Traceback" not in err


@pytest.mark.parametrize("stateless", ["ctc/nocache", "hybrid/nocache", "hybrid/nocache-ctc"])
def test_inspect_of_a_stateless_export_names_the_fix(capsys, stateless):
    fix = "model.set_export_config({'cache_support': 'True'})"
    assert wt_main(["inspect", "--model", str(FIXTURES / stateless)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("WARNING: ") and "WITHOUT cache support" in out and fix in out
    assert wt_main(["inspect", "--model", str(FIXTURES / stateless), "--json"]) == 0
    (warning,) = json.loads(capsys.readouterr().out)["warnings"]
    assert fix in warning
    assert refimpl_main(["inspect", "--model", str(FIXTURES / stateless)]) == 0
    assert fix in capsys.readouterr().out
    assert wt_main(["inspect", "--model", str(folder("ctc", (70, 13))), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []


def test_stateless_ctc_export_crosschecks_as_one_offline_call(capsys):
    """A CTC graph without cache support returns only 'logprobs'; its lengths are the subsampled input lengths
    (was: KeyError 'encoded_lengths')."""
    assert (
        refimpl_main(["crosscheck", str(AUDIO / "hello.wav"), "--model", str(FIXTURES / "ctc" / "nocache"), "--quiet"])
        == 0
    )
    captured = capsys.readouterr()
    assert "result: OK" in captured.out and "WITHOUT cache support" in captured.err
