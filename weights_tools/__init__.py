"""weights_tools: the only producer of refimpl's weights.

``load_onnx(model_dir)`` and ``load_nemo(path)`` both return ``(config, weights)``: a frozen, validated
``ModelConfig`` and a nested dict of read-only float32 NumPy arrays keyed by NeMo's own state_dict names, in
NeMo's own layouts. ``fold_batch_norm`` turns a .nemo's BatchNorm conv norm into the folded form ONNX exports
carry; ``io_contract`` describes every input and output of an export.
"""

from .batchnorm import fold_batch_norm
from .config import ConfigError, CTCConfig, EncoderConfig, ModelConfig, PreprocessorConfig, RNNTConfig
from .contract import io_contract, streaming_numbers
from .errors import (
    CorruptFileError,
    IncompatibleModelError,
    ModelLoadError,
    NoCacheSupportError,
    UnsafeCheckpointError,
    WeightNotFoundError,
)
from .nemo_load import load_nemo, read_nemo_config
from .onnx_export import find_export
from .onnx_load import load_onnx, plan_onnx
from .streaming import StreamingParams, streaming_params, subsampled_length
from .tree import flatten, get, unflatten

__all__ = [
    "CTCConfig",
    "ConfigError",
    "EncoderConfig",
    "ModelConfig",
    "PreprocessorConfig",
    "RNNTConfig",
    "CorruptFileError",
    "IncompatibleModelError",
    "ModelLoadError",
    "NoCacheSupportError",
    "UnsafeCheckpointError",
    "WeightNotFoundError",
    "flatten",
    "get",
    "unflatten",
    "find_export",
    "load_onnx",
    "plan_onnx",
    "load_nemo",
    "read_nemo_config",
    "fold_batch_norm",
    "io_contract",
    "streaming_numbers",
    "StreamingParams",
    "streaming_params",
    "subsampled_length",
]
