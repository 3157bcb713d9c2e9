"""The one tolerance table: every comparison refimpl makes (tests, crosscheck, golden verify) reads it.

A float tensor passes when max|actual - reference| <= rel * scale, where scale = max|reference| (the tensor's
own magnitude, floored at ``SCALE_FLOOR`` so an all-zero reference does not demand exact zeros). ``max_rel`` in
reports is that same ratio, max_abs / scale. Integer tensors (lengths, cache lengths, token ids) match exactly.

Why 1e-5 for float32: both sides round every product and sum to float32 (unit roundoff 6e-8), in different
orders (BLAS blocking vs. ONNX kernels vs. Numba loops). A d-long dot product then differs by ~sqrt(d)*6e-8
relative to its magnitude; LayerNorm re-normalises each layer, so errors add up over layers instead of
multiplying: measured worst cases are 2e-7..2e-6 relative on the fixtures (see the tests), and 1e-5 leaves
a margin of ~5x for 17-layer models without hiding a real bug (a wrong cache shift, mask or weight moves
outputs by 1e-2 or more relative). float64 refimpl against float32 references sees only the reference's own
float32 rounding, the same size, so the same limits apply. Only when both sides are float64 (refimpl's own
implementations against each other) does an entry's ``rel64`` apply, where it has one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCALE_FLOOR = 1e-3


@dataclass(frozen=True)
class Tolerance:
    rel: float  # max|a - b| / max(max|ref|, SCALE_FLOOR) allowed
    reason: str
    rel64: float | None = None  # the limit when both sides are float64 (None: the same as rel)


# name -> Tolerance (float32 and float64 refimpl share limits: the references are float32; see module doc)
TOLERANCES = {
    "mel": Tolerance(
        2e-5,
        "log amplifies float32 FFT rounding in near-silent bins (|log-mel| up to ~17, "
        "abs error up to ~6e-5 there); median error is ~2e-7",
    ),
    "outputs": Tolerance(1e-5, "encoder output after n_layers of float32 matmuls in another summation order"),
    "logprobs": Tolerance(1e-5, "CTC log_softmax of the encoder output: same error, plus one 1x1 conv"),
    "cache_last_channel_next": Tolerance(1e-5, "post-norm attention inputs: a LayerNorm output per layer"),
    "cache_last_time_next": Tolerance(1e-5, "post-GLU conv inputs per layer: as the layer outputs"),
    "decoder_logits": Tolerance(1e-5, "joint logits from one LSTM step and three small matmuls"),
    "lstm_state": Tolerance(1e-5, "LSTM h and c after one step: sigmoid/tanh of float32 gate sums"),
    "layer": Tolerance(1e-5, "per-layer taps (pre_encode, each layer and sub-block output): as 'outputs'"),
    "pre_encode": Tolerance(1e-5, "conv subsampling: sums of <= 3*3*C products in float32"),
    "engine_state": Tolerance(
        1e-5,
        "the fast path's projected keys/values of cached frames: one d-long float32 "
        "product of a LayerNorm output, computed chunk by chunk or from the cache",
    ),
    "kernel": Tolerance(
        1e-5,
        "a fast-path kernel against its NumPy twin, or a twin against the plain function it "
        "restructures: the same float32 formulas in another summation order (Numba loops "
        "vs BLAS; LayerNorm statistics in float64)",
        rel64=1e-12,
    ),  # float64: unit roundoff 1.1e-16, sums of at most a few thousand terms
    "layer_norm_stats": Tolerance(
        2e-5,
        "LayerNorm of rows whose mean is far larger than their spread (300 vs 1): "
        "the NumPy reference's float32 variance cancels (measured 1.1e-5), the "
        "kernel's float64 statistics do not",
    ),
}
# The worst max_rel measured on the committed fixtures against onnxruntime (every export, look-ahead, clip and
# layer tap: 1.1e-6 at the time of writing). Tests assert it stays below this, so a regression that eats the
# table's margin shows up before it fails the table.
FIXTURE_WORST_REL = 3e-6
# compared exactly: integers, and the chunk inputs a golden file records (the driver rebuilds them from the same
# recorded numbers, so any difference is a change to the file or to the chunking, never rounding)
EXACT = ("encoded_lengths", "cache_last_channel_next_len", "length", "tokens", "prednet_lengths", "audio_signal")

# which table entry a tensor name uses
ALIASES = {
    "cache_last_channel": "cache_last_channel_next",
    "cache_last_time": "cache_last_time_next",
    "output_states_1": "lstm_state",
    "output_states_2": "lstm_state",
    "h": "lstm_state",
    "c": "lstm_state",
    "logits": "decoder_logits",
}


def tolerance_for(name: str) -> Tolerance:
    key = ALIASES.get(name, name)
    if key in TOLERANCES:
        return TOLERANCES[key]
    if key.startswith("encoder.") or "/" in key:  # taps keyed by NeMo module path
        return TOLERANCES["layer"]
    raise KeyError(f"no tolerance for {name!r}; add it to refimpl.tolerances.TOLERANCES with its reason")


@dataclass(frozen=True)
class Comparison:
    name: str
    max_abs: float
    max_rel: float  # max_abs / scale
    scale: float
    limit: float  # allowed max_rel (0 for exact)
    ok: bool
    first_index: tuple | None = None  # index of the first element over the limit (C order), if any
    detail: str = ""

    def as_dict(self) -> dict:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "ok": self.ok}


def compare(name: str, actual, reference, tolerance: Tolerance | None = None) -> Comparison:
    """Compare one tensor against its reference under the table (exact for integer tensors)."""
    a, r = np.asarray(actual), np.asarray(reference)
    if a.shape != r.shape:
        return Comparison(
            name, float("inf"), float("inf"), 0.0, 0.0, False, None, f"shape {a.shape} != reference shape {r.shape}"
        )
    exact = r.dtype.kind in "iub" or name in EXACT
    if r.size == 0:
        return Comparison(name, 0.0, 0.0, 0.0, 0.0, True)
    diff = np.abs(a.astype(np.float64) - r.astype(np.float64))
    max_abs = float(diff.max())
    if exact:
        bad = diff > 0
        return Comparison(
            name,
            max_abs,
            max_abs,
            1.0,
            0.0,
            not bad.any(),
            tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else None,
        )
    tol = tolerance or tolerance_for(name)
    rel = tol.rel64 if tol.rel64 is not None and a.dtype == np.float64 and r.dtype == np.float64 else tol.rel
    scale = max(float(np.abs(r).max()), SCALE_FLOOR)
    bad = ~(diff <= rel * scale)  # NaN counts as bad
    first = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else None
    return Comparison(name, max_abs, max_abs / scale, scale, rel, not bad.any(), first)
