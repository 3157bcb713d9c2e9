"""weights_tools: the only producer of refimpl's weights.

``load_onnx(model_dir)`` and ``load_nemo(path)`` both return ``(config, weights)``: a frozen, validated
``ModelConfig`` and a nested dict of NumPy arrays keyed by NeMo's own state_dict names, in NeMo's own layouts.
"""
from .config import CTCConfig, ConfigError, EncoderConfig, ModelConfig, PreprocessorConfig, RNNTConfig
from .errors import ModelLoadError, NoCacheSupportError, WeightNotFoundError
from .tree import flatten, get, unflatten

__all__ = [
    "CTCConfig", "ConfigError", "EncoderConfig", "ModelConfig", "PreprocessorConfig", "RNNTConfig",
    "ModelLoadError", "NoCacheSupportError", "WeightNotFoundError", "flatten", "get", "unflatten",
]
