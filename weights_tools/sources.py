"""Where each NeMo parameter comes from in an ONNX file, and the layout change that turns it back into NeMo's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .onnx_file import TensorRef

# ONNX LSTM stacks its gates as i, o, f, c; PyTorch as i, f, g(=c), o. Block k of PyTorch's order is block
# _ONNX_GATE_OF_TORCH[k] of ONNX's.
_ONNX_GATE_OF_TORCH = (0, 2, 3, 1)


@dataclass(frozen=True)
class Source:
    """``transform``: ``copy`` (stored in NeMo's layout), ``transpose`` (a Linear weight stored [in, out] for
    MatMul), ``lstm_w`` (ONNX LSTM W or R [1, 4H, X] -> [4H, X]), ``lstm_b_ih`` / ``lstm_b_hh`` (the first / second
    half of ONNX LSTM B [1, 8H] -> [4H])."""

    ref: TensorRef
    transform: str = "copy"

    @property
    def shape(self) -> tuple:
        d = self.ref.dims
        if self.transform == "transpose":
            return (d[1], d[0])
        if self.transform == "lstm_w":
            return d[1:]
        if self.transform in ("lstm_b_ih", "lstm_b_hh"):
            return (d[1] // 2,)
        return d

    def read(self) -> np.ndarray:
        a = self.ref.read()
        if self.transform == "transpose":
            a = np.ascontiguousarray(a.T)
        elif self.transform == "lstm_w":
            a = _torch_gate_order(a[0])
        elif self.transform in ("lstm_b_ih", "lstm_b_hh"):
            half = a.shape[1] // 2
            a = _torch_gate_order(a[0, :half] if self.transform == "lstm_b_ih" else a[0, half:])
        if a.dtype != np.float32:
            a = a.astype(np.float32)
        a.flags.writeable = False
        return a


def _torch_gate_order(a: np.ndarray) -> np.ndarray:
    """[4H, ...] in ONNX gate order (i, o, f, c) -> PyTorch order (i, f, g, o)."""
    h = a.shape[0] // 4
    return np.concatenate([a[g * h : (g + 1) * h] for g in _ONNX_GATE_OF_TORCH], axis=0)


def materialize(sources: dict) -> dict:
    """name -> Source  ->  name -> read-only float32 array (read one tensor at a time)."""
    return {name: src.read() for name, src in sources.items()}
