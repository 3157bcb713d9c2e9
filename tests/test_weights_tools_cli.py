"""weights-tools CLI and the I/O contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import weights_tools as wt
from weights_tools.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
HYBRID = FIXTURES / "hybrid"


def test_io_contract_of_an_rnnt_export():
    rows = wt.io_contract(HYBRID / "att-70-13")
    by = {(r["role"], r["kind"], r["name"]): r for r in rows}
    assert len(rows) == 10 + 9  # encoder 5 in + 5 out, decoder_joint 5 in + 4 out
    audio = by[("encoder", "input", "audio_signal")]
    assert audio["dtype"] == "float32" and audio["shape"][1] == 80 and isinstance(audio["shape"][2], str)
    assert audio["layout"].startswith("[B, feat_in, T]")
    assert by[("encoder", "input", "length")]["dtype"] == "int64"
    cache = by[("encoder", "input", "cache_last_channel")]
    assert cache["shape"][1:2] == [2] and cache["shape"][3] == 64 and "layer-first" in cache["layout"]
    assert by[("decoder_joint", "input", "targets")]["dtype"] == "int32"
    assert by[("decoder_joint", "output", "outputs")]["shape"][3] == 129
    assert all(r["meaning"] and r["layout"] != "?" for r in rows)


def test_io_contract_of_ctc_and_nocache_exports():
    ctc = {r["name"]: r for r in wt.io_contract(HYBRID / "ctc-att-70-13")}
    assert ctc["logprobs"]["shape"][2] == 129 and ctc["logprobs"]["role"] == "encoder+ctc"
    nocache = wt.io_contract(HYBRID / "nocache")
    assert {r["name"] for r in nocache if r["role"] == "encoder"} == {
        "audio_signal",
        "length",
        "outputs",
        "encoded_lengths",
    }


def test_streaming_numbers():
    config = wt.read_nemo_config(HYBRID / "model.nemo")
    n = wt.streaming_numbers(config)  # default look-ahead [70, 13], subsampling 8
    assert n["mel_frames_per_call (audio_signal T)"] == 121 and n["encoder_frames_per_call (valid_out_len = R+1)"] == 14
    assert n["new_mel_frames_per_call (chunk_size = s*(R+1))"] == 112 and n["drop_extra_pre_encoded"] == 2
    assert n["lookahead_ms"] == 1040 and n["cache_last_time_frames (conv left context)"] == 8
    v = wt.streaming_numbers(config.with_att_context_size((70, 0)))
    assert v["mel_frames_per_call (audio_signal T)"] == 17


def test_inspect_text(capsys):
    assert main(["inspect", "--model", str(FIXTURES / "variant" / "att-24-0")]) == 0
    out = capsys.readouterr().out
    assert "att_context_size: (24, 0)" in out and "conv_norm_type: folded_batch_norm" in out
    assert "mel_frames_per_call (audio_signal T): 9" in out  # 5 pre-encode + 4 * 1
    assert "chunked mask chunk size (R+1): 1" in out and "cache_last_channel_next Slice (cache size): 24" in out
    assert "decoder_joint-model.onnx input  input_states_1" in out


def test_inspect_json_with_nemo(capsys):
    assert main(["inspect", "--model", str(HYBRID / "nocache"), "--nemo", str(HYBRID / "model.nemo"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    enc = report["config"]["encoder"]
    assert enc["has_cache_io"] is False and enc["att_context_size"] == [70, 13]
    assert enc["att_context_sizes"] == [[70, 13], [70, 6], [70, 1], [70, 0]]
    assert report["streaming"]["mel_frames_per_call (audio_signal T)"] == 121
    assert {r["name"] for r in report["io_contract"]} >= {"audio_signal", "encoder_outputs"}


def test_inspect_a_nemo(capsys):
    assert main(["inspect", "--model", str(FIXTURES / "variant" / "model.nemo")]) == 0
    out = capsys.readouterr().out
    assert "conv_norm_type: batch_norm" in out and "att_context_sizes: ((24, 3), (24, 0))" in out


def test_extract(tmp_path, capsys):
    out = tmp_path / "w.npz"
    assert main(["extract", "--model", str(HYBRID / "att-70-0"), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    _, weights = wt.load_onnx(HYBRID / "att-70-0")
    flat = wt.flatten(weights)
    with np.load(out) as z:
        assert set(z.files) == set(flat)
        assert all(np.array_equal(z[n], flat[n]) for n in flat)


def test_errors_are_one_line_on_stderr_with_exit_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("nothing here")
    assert main(["inspect", "--model", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith("weights-tools: error: ") and "no encoder found" in err and "\n" not in err
    assert "Traceback" not in captured.err
    assert (
        main(
            [
                "extract",
                "--model",
                str(HYBRID / "nocache"),
                "--nemo",
                str(FIXTURES / "variant" / "model.nemo"),
                "-o",
                str(tmp_path / "x.npz"),
            ]
        )
        == 2
    )
    assert "does not match" in capsys.readouterr().err
