"""weights_tools on bad input: every error names the file or thing at fault, what was expected, what was found."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import weights_tools as wt
from weights_tools.torch_pickle import load_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
HYBRID = FIXTURES / "hybrid"


def copy_export(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=False)
    return dst


def test_truncated_onnx(tmp_path):
    d = copy_export(HYBRID / "att-70-13", tmp_path / "m")
    enc = d / "encoder-model.onnx"
    data = enc.read_bytes()
    enc.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(wt.CorruptFileError) as e:
        wt.load_onnx(d)
    msg = str(e.value)
    assert "encoder-model.onnx" in msg and f"{len(data) * 2 // 3} bytes" in msg
    assert "truncated" in msg and "unexpected end of data" in msg and "re-download" in msg.lower()


def test_not_an_onnx_file(tmp_path):
    d = copy_export(HYBRID / "att-70-13", tmp_path / "m")
    (d / "encoder-model.onnx").write_bytes(b"<html><body>404 Not Found</body></html>\n")
    with pytest.raises(
        wt.CorruptFileError,
        match=r"encoder-model.onnx \(40 bytes, starting b'<html>.*not a "
        r"readable ONNX model.*re-download or re-export",
    ):
        wt.load_onnx(d)


def test_folder_without_encoder_lists_what_it_found(tmp_path):
    shutil.copy(HYBRID / "att-70-13" / "decoder_joint-model.onnx", tmp_path)
    shutil.copy(HYBRID / "tokenizer.model", tmp_path)
    with pytest.raises(wt.ModelLoadError) as e:
        wt.load_onnx(tmp_path)
    msg = str(e.value)
    assert "no encoder found" in msg and "encoder-<name>.onnx" in msg and "'logprobs'" in msg
    assert "['decoder_joint-model.onnx', 'tokenizer.model']" in msg


def test_nemo_that_is_not_a_tar(tmp_path):
    bad = tmp_path / "model.nemo"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(
        wt.CorruptFileError,
        match=r"model.nemo \(4096 bytes\) is not a readable .nemo archive.*"
        r"model_config.yaml and model_weights.ckpt.*re-download",
    ):
        wt.load_nemo(bad)


def test_truncated_nemo_says_unexpected_end_of_data(tmp_path):
    data = (HYBRID / "model.nemo").read_bytes()
    bad = tmp_path / "model.nemo"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(wt.CorruptFileError) as e:
        wt.load_nemo(bad)
    msg = str(e.value)
    assert f"model.nemo ({len(data) // 2} bytes) is a truncated .nemo archive" in msg
    assert "unexpected end of data" in msg and "re-download" in msg


def test_nemo_without_weights_lists_its_members(tmp_path):
    bad = tmp_path / "model.nemo"
    with tarfile.open(HYBRID / "model.nemo") as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            if not m.name.endswith("model_weights.ckpt"):
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    with pytest.raises(
        wt.CorruptFileError,
        match=r"expected one model_weights.ckpt in the .nemo archive, found 0 "
        r"\(members: \[.*'model_config.yaml'\]\)",
    ):
        wt.load_nemo(bad)


def test_encoder_without_cache_cannot_stream():
    config, _ = wt.load_onnx(HYBRID / "nocache")
    assert config.encoder.has_cache_io is False
    with pytest.raises(wt.NoCacheSupportError) as e:
        wt.load_onnx(HYBRID / "nocache", require_cache=True)
    msg = str(e.value)
    assert "nocache/encoder-model.onnx was exported without cache support" in msg
    assert "cache_last_channel" in msg and "cannot stream" in msg
    assert wt.NoCacheSupportError.HOW_TO_FIX in msg and "cache_support" in msg


def test_decoder_joint_of_another_model(tmp_path):
    shutil.copy(HYBRID / "att-70-13" / "encoder-model.onnx", tmp_path)
    shutil.copy(FIXTURES / "variant" / "att-24-3" / "decoder_joint-model.onnx", tmp_path)
    with pytest.raises(wt.IncompatibleModelError) as e:
        wt.load_onnx(tmp_path)
    msg = str(e.value)
    assert "decoder_joint-model.onnx does not fit encoder-model.onnx" in msg
    assert "encoder outputs of size 48" in msg and "d_model is 64" in msg and "same .nemo" in msg


def test_ctc_and_rnnt_vocabularies_must_agree(tmp_path):
    """An encoder + decoder_joint folder with a CTC graph whose head has another vocabulary."""
    for f in ("encoder-model.onnx", "decoder_joint-model.onnx"):
        shutil.copy(HYBRID / "att-70-13" / f, tmp_path)
    ctc = onnx.load(str(HYBRID / "ctc-att-70-13" / "model.onnx"))
    for init in ctc.graph.initializer:
        if init.name.startswith("ctc_decoder.decoder_layers.0."):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:65], init.name))
    onnx.save(ctc, str(tmp_path / "model.onnx"))
    with pytest.raises(
        wt.IncompatibleModelError,
        match=r"decoder_joint-model.onnx \(RNNT\) has a vocabulary of 128 "
        r"but model.onnx \(CTC\) has 64",
    ):
        wt.load_onnx(tmp_path)


def test_tokenizer_of_another_model(tmp_path):
    d = copy_export(HYBRID / "att-70-13", tmp_path / "m")
    (d / "tokenizer.model").unlink()
    shutil.copy(FIXTURES / "variant" / "tokenizer.model", d / "tokenizer.model")
    with pytest.raises(
        wt.IncompatibleModelError,
        match=r"tokenizer.model: the tokenizer has 64 pieces, but the "
        r"model's vocabulary is 128",
    ):
        wt.load_onnx(d)


def test_nemo_of_another_model():
    with pytest.raises(wt.IncompatibleModelError) as e:
        wt.load_onnx(HYBRID / "att-70-13", nemo=FIXTURES / "variant" / "model.nemo")
    msg = str(e.value)
    assert "encoder-model.onnx does not match" in msg and "variant/model.nemo" in msg
    assert "'d_model': (64, 48)" in msg and "'rnnt.vocab_size': (128, 64)" in msg


def test_contradicting_lookahead_constants(tmp_path):
    """Change the output Slice length (valid_out_len) of an [70, 13] encoder to 7: the mask still says 14."""
    d = copy_export(HYBRID / "att-70-13", tmp_path / "m")
    model = onnx.load(str(d / "encoder-model.onnx"))
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    ends = producer[producer["outputs"].input[2]]
    ends.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array([7], np.int64)))
    onnx.save(model, str(d / "encoder-model.onnx"))
    with pytest.raises(wt.IncompatibleModelError) as e:
        wt.load_onnx(d)
    msg = str(e.value)
    assert "encoder-model.onnx: cannot tell the look-ahead" in msg and "disagree" in msg and "[7, 14]" in msg


def test_unexpected_initializer_is_reported(tmp_path):
    d = copy_export(HYBRID / "att-70-13", tmp_path / "m")
    model = onnx.load(str(d / "encoder-model.onnx"))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((4, 4), np.float32), "extra.weight"))
    onnx.save(model, str(d / "encoder-model.onnx"))
    with pytest.raises(
        wt.ModelLoadError,
        match=r"1 initializer\(s\) that look like parameters were not matched "
        r"to any NeMo weight: \['extra.weight \[4, 4\]'\]",
    ):
        wt.load_onnx(d)


def test_missing_weight_is_named(tmp_path):
    d = copy_export(HYBRID / "att-70-13", tmp_path / "m")
    model = onnx.load(str(d / "encoder-model.onnx"))
    for init in model.graph.initializer:
        if init.name == "layers.1.norm_out.weight":
            init.name = "renamed"
    for node in model.graph.node:
        node.input[:] = ["renamed" if i == "layers.1.norm_out.weight" else i for i in node.input]
    onnx.save(model, str(d / "encoder-model.onnx"))
    with pytest.raises(
        wt.WeightNotFoundError,
        match=r"encoder.layers.1.norm_out.weight not found: expected an "
        r"initializer named 'layers.1.norm_out.weight'",
    ):
        wt.load_onnx(d)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def _checkpoint_zip(obj) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
    buf.seek(0)
    return buf


def test_restricted_unpickler_refuses_other_globals():
    with pytest.raises(wt.UnsafeCheckpointError) as e:
        load_state_dict(_checkpoint_zip({"x": _RunsCode()}), "evil.ckpt")
    msg = str(e.value)
    assert "evil.ckpt" in msg and f"{os.system.__module__}.system" in msg and "refusing to load it" in msg
    assert "torch._utils._rebuild_tensor_v2" in msg


def test_load_nemo_refuses_a_malicious_checkpoint(tmp_path):
    bad = tmp_path / "model.nemo"
    payload = _checkpoint_zip({"encoder.x": _RunsCode()}).getvalue()
    with tarfile.open(HYBRID / "model.nemo") as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            if m.name.endswith("model_weights.ckpt"):
                m.size = len(payload)
                dst.addfile(m, io.BytesIO(payload))
            else:
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    with pytest.raises(
        wt.UnsafeCheckpointError,
        match=r"model.nemo:model_weights.ckpt: the checkpoint pickle asks "
        r"for the global .*system",
    ):
        wt.load_nemo(bad)


def test_checkpoint_that_is_not_a_zip():
    with pytest.raises(wt.CorruptFileError, match=r"old.ckpt is not a torch zip checkpoint.*legacy"):
        load_state_dict(io.BytesIO(b"\x80\x02legacy torch.save bytes"), "old.ckpt")


def test_a_weight_matched_twice_is_an_error(tmp_path):
    """Point layer 0's linear_k MatMul at linear_q's weight (and drop the orphaned one)."""
    d = copy_export(HYBRID / "att-70-13", tmp_path / "m")
    model = onnx.load(str(d / "encoder-model.onnx"))
    nodes = {n.name: n for n in model.graph.node}
    q_w = nodes["/layers.0/self_attn/linear_q/MatMul"].input[1]
    k_node = nodes["/layers.0/self_attn/linear_k/MatMul"]
    orphan = k_node.input[1]
    k_node.input[1] = q_w
    keep = [i for i in model.graph.initializer if i.name != orphan]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.save(model, str(d / "encoder-model.onnx"))
    with pytest.raises(
        wt.WeightNotFoundError,
        match=rf"initializer '{q_w}' matches both "
        r"encoder.layers.0.self_attn.linear_q.weight and "
        r"encoder.layers.0.self_attn.linear_k.weight",
    ):
        wt.load_onnx(d)
