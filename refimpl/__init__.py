"""refimpl: a readable NumPy/Numba reference runtime for NeMo cache-aware streaming FastConformer models.

import refimpl
model = refimpl.load("tests/fixtures/hybrid/att-70-13")
print(model.transcribe("tests/fixtures/audio/fox.wav").text)
"""

__version__ = "0.1.0"


def load(path, **kwargs):
    """A model folder of NeMo's ONNX export, a .onnx file or a .nemo, loaded once: ``refimpl.runtime.live.Model``
    (``.transcribe(audio_or_paths)``, ``.stream()``, ``.decode_streams(streams)``). Keyword arguments: engine
    ("refimpl" or "onnxruntime"), impl ("fast" or "plain"), backend, att_context_size, dtype, threads."""
    from .runtime.live import Model  # the package imports nothing heavy until a model is loaded

    return Model(path, **kwargs)
