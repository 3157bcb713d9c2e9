"""Shared test data: the NeMo-made fixtures (tests/fixtures/README.md) and cached loaders.

Tests import it as a module (``from fixture_data import ...``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
AUDIO = FIXTURES / "audio"

# model -> look-aheads exported (one folder each), clips with NeMo streaming goldens, the heads the model has, and
# the look-aheads whose fox goldens carry layer taps (chunks 0-2). hybrid/variant: EncDecHybridRNNTCTCBPEModel;
# ctc: EncDecCTCModelBPE (one graph with 'logprobs' per look-ahead, CTC head at 'decoder'); rnnt: EncDecRNNTBPEModel.
MODELS = {
    "hybrid": {
        "modes": [(70, 13), (70, 6), (70, 1), (70, 0)],
        "clips": ["hello", "fox", "north_wind"],
        "heads": ("rnnt", "ctc"),
        "tapped": [(70, 13), (70, 0)],
    },
    "variant": {
        "modes": [(24, 3), (24, 0)],
        "clips": ["hello", "fox"],
        "heads": ("rnnt", "ctc"),
        "tapped": [(24, 3), (24, 0)],
    },
    "ctc": {"modes": [(70, 13), (70, 0)], "clips": ["hello", "fox"], "heads": ("ctc",), "tapped": [(70, 0)]},
    "rnnt": {"modes": [(24, 3), (24, 0)], "clips": ["hello", "fox"], "heads": ("rnnt",), "tapped": [(24, 3)]},
}
STREAMS = [(m, att, clip) for m, spec in MODELS.items() for att in spec["modes"] for clip in spec["clips"]]


def att_dir(att) -> str:
    return f"att-{att[0]}-{att[1]}"


def folder(model: str, att) -> Path:
    return FIXTURES / model / att_dir(att)


@functools.cache
def nemo_model(model: str):
    """(config, weights) of the model's .nemo (serves every look-ahead)."""
    import weights_tools

    return weights_tools.load_nemo(FIXTURES / model / "model.nemo")


@functools.cache
def onnx_model(path: str):
    import weights_tools

    return weights_tools.load_onnx(FIXTURES / path)


@functools.cache
def mel_goldens():
    return dict(np.load(FIXTURES / "hybrid" / "goldens" / "mel.npz"))


@functools.cache
def stream_golden(model: str, att, clip: str) -> dict:
    return dict(np.load(FIXTURES / model / "goldens" / f"stream-{att_dir(att)}-{clip}.npz"))


def golden_chunk_input(model: str, att, clip: str, i: int) -> np.ndarray:
    """NeMo's chunk i as [1, 80, T]: zeros then mel[:, start:stop] (see goldens.json)."""
    g = stream_golden(model, att, clip)
    zeros, start, stop = (int(v) for v in g[f"chunk/{i}/bounds"])
    mel = mel_goldens()[f"{clip}/mel"]
    return np.concatenate([np.zeros((mel.shape[0], zeros), np.float32), mel[:, start:stop]], axis=1)[None]


# refimpl's implementations as test parameters: the plain NumPy reference and the fast twin on both backends
IMPLS = ["plain", "fast-numba", "fast-numpy"]


def impl_args(impl: str) -> dict:
    """'plain' / 'fast-numba' / 'fast-numpy' -> RefimplEngine keyword arguments."""
    name, _, backend = impl.partition("-")
    return {"impl": name, "backend": backend or None}


def encoder_ops(config, weights, att, impl: str):
    """The EncoderOps of one implementation on NeMo-layout weights, at look-ahead ``att``."""
    from refimpl.runtime.engines import RefimplEngine

    return RefimplEngine(config, weights, att_context_size=att, **impl_args(impl)).ops


def layer_first_to_batch_first(cache: np.ndarray) -> np.ndarray:
    """NeMo's internal cache layout [n_layers, B, ...] -> the export's [B, n_layers, ...]."""
    return np.ascontiguousarray(cache.transpose(1, 0, *range(2, cache.ndim)))


@functools.cache
def _ort_engine(path: str, kw: tuple):
    from refimpl.runtime.onnx_engine import OnnxEngine

    return OnnxEngine(path, **dict(kw))


def ort_engine(path, **kw):
    """One onnxruntime session per (export, options) for the whole test run."""
    return _ort_engine(str(path), tuple(sorted(kw.items())))


def assert_close(actual, reference, name: str = "kernel"):
    """actual within the tolerance table's entry ``name`` of reference (its float32 or float64 limit by dtype),
    with the same shape and dtype."""
    from refimpl.tools.tolerances import compare

    a, r = np.asarray(actual), np.asarray(reference)
    assert a.shape == r.shape and a.dtype == r.dtype, (a.shape, r.shape, a.dtype, r.dtype)
    cmp = compare(name, a, r)
    assert cmp.ok, cmp


def collapse_ctc(labels, blank: int) -> list:
    """Greedy CTC tokens from per-frame labels: repeats collapsed, blanks dropped."""
    out, prev = [], blank
    for k in np.asarray(labels).tolist():
        if k != blank and k != prev:
            out.append(k)
        prev = k
    return out


def assert_crosscheck_ok(report, golden=None, blank: int | None = None):
    """No divergence, identical tokens on both engines, and NeMo's RNNT tokens when a golden is given (and NeMo's
    CTC tokens when the exported graph has the CTC head and ``blank`` is given)."""
    assert report.first_divergence is None, report.first_divergence
    assert report.ok
    for d, toks in report.tokens["onnxruntime"].items():
        assert toks == report.tokens["refimpl"][d]
    if golden is not None and "rnnt" in report.tokens["onnxruntime"]:
        assert report.tokens["refimpl"]["rnnt"] == golden["rnnt/tokens"].tolist()
    if golden is not None and blank is not None and "ctc" in report.tokens["onnxruntime"]:
        assert report.tokens["refimpl"]["ctc"] == collapse_ctc(golden["ctc/frame_argmax"], blank)
