"""`refimpl transcribe`: text and JSON output on both engines, and bad input exits 2 with a clear message."""

import json

import numpy as np
import soundfile as sf
from fixture_data import AUDIO, FIXTURES, stream_golden

from refimpl.cli import main

MODEL = str(FIXTURES / "hybrid" / "att-70-13")
NEMO = str(FIXTURES / "hybrid" / "model.nemo")


def _json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_transcribe_json_on_both_engines(capsys):
    golden = stream_golden("hybrid", (70, 13), "fox")
    outs = [
        _json(capsys, "transcribe", str(AUDIO / "fox.wav"), "--model", MODEL, "--engine", e, "--json")
        for e in ("refimpl", "onnxruntime")
    ]
    for d, engine in zip(outs, ("refimpl", "onnxruntime")):
        assert set(d) == {
            "text",
            "tokens",
            "att_context_size",
            "decoder",
            "engine",
            "chunks",
            "order",
            "timestamps",
            "dropped_tail_frames",
            "audio_seconds",
            "seconds",
            "audio_filepath",
            "notes",
        }
        assert d["audio_filepath"] == str(AUDIO / "fox.wav") and d["notes"] == []
        assert d["engine"] == engine and d["decoder"] == "rnnt" and d["att_context_size"] == [70, 13]
        assert d["chunks"] == int(golden["n_chunks"])
        assert abs(d["audio_seconds"] - 55016 / 16000) < 1e-9
    # the features are refimpl's own (not NeMo's), so tokens may only differ if a feature difference flips an
    # argmax; on this clip they are NeMo's exactly
    assert outs[0]["tokens"] == outs[1]["tokens"] == golden["rnnt/tokens"].tolist()
    assert outs[0]["text"] == str(golden["rnnt/text"])


def test_transcribe_other_lookahead_and_ctc_from_the_nemo(capsys):
    d = _json(
        capsys,
        "transcribe",
        str(AUDIO / "hello.wav"),
        "--model",
        NEMO,
        "--att-context-size",
        "70,0",
        "--decoder",
        "ctc",
        "--backend",
        "numpy",
        "--json",
    )
    assert d["att_context_size"] == [70, 0] and d["decoder"] == "ctc"
    assert d["text"] == str(stream_golden("hybrid", (70, 0), "hello")["ctc/text"])
    assert main(["transcribe", str(AUDIO / "hello.wav"), "--model", NEMO]) == 0
    assert capsys.readouterr().out.strip() == str(stream_golden("hybrid", (70, 13), "hello")["rnnt/text"])


def test_transcribe_bad_input_exits_2(capsys, tmp_path):
    wav = tmp_path / "loud.wav"
    sf.write(wav, np.zeros(4410, np.float32), 44100)
    assert main(["transcribe", str(wav), "--model", MODEL]) == 2
    err = capsys.readouterr().err
    assert "44100 Hz" in err and "16000 Hz" in err and "Traceback" not in err
    assert (
        main(
            [
                "transcribe",
                str(AUDIO / "fox.wav"),
                "--model",
                MODEL,
                "--engine",
                "onnxruntime",
                "--att-context-size",
                "70,6",
            ]
        )
        == 2
    )
    assert "exported for att_context_size [70, 13], not [70, 6]" in capsys.readouterr().err
    assert (
        main(["transcribe", str(AUDIO / "fox.wav"), "--model", MODEL, "--decoder", "ctc", "--engine", "onnxruntime"])
        == 2
    )
    assert "no CTC head" in capsys.readouterr().err
    assert main(["transcribe", str(AUDIO / "fox.wav"), "--model", str(tmp_path)]) == 2
    assert "no encoder found" in capsys.readouterr().err
