"""refimpl: a readable NumPy/Numba reference runtime for NeMo cache-aware streaming FastConformer models."""

__version__ = "0.1.0"
