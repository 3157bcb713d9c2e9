"""Errors that name what was expected, what was found, and how to fix it."""


class ModelLoadError(ValueError):
    """A model file or folder that cannot be read as a NeMo export or checkpoint."""


class WeightNotFoundError(ModelLoadError):
    """A parameter could not be recovered from the graph (or matched more than once)."""


class NoCacheSupportError(ModelLoadError):
    """An ONNX encoder exported without cache support: it cannot stream."""

    HOW_TO_FIX = (
        "re-export it with cache support: model.set_export_config({'cache_support': 'True'}) before "
        "model.export(...), after model.encoder.set_default_att_context_size([L, R]) for the look-ahead "
        "you deploy (one ONNX encoder serves exactly one look-ahead)"
    )


class CorruptFileError(ModelLoadError):
    """A file that is truncated, corrupted, or not of the expected format (ONNX protobuf, tar, torch zip)."""


class IncompatibleModelError(ModelLoadError):
    """Files (or a file and its .nemo) that do not belong to the same model, or a look-ahead baked into a graph
    that contradicts itself."""


class UnsafeCheckpointError(ModelLoadError):
    """A checkpoint pickle that asks for something other than the tensor-rebuild globals."""
