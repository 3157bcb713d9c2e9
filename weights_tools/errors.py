"""Errors that name what was expected, what was found, and how to fix it."""

import functools


def one_line(e: BaseException) -> str:
    """Another library's exception message on one line (YAML, NumPy and libsndfile messages span several), for
    embedding in ours: every error the tools print is one line."""
    return " ".join(str(e).split()) or type(e).__name__


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


def clean_errors(what: str):
    """Decorator for the loaders' entry points (``fn(path, ...)``): a damaged file can make a graph walk or a
    config parse fail anywhere, so any exception that is not already one of ours (or a ConfigError) becomes a
    ModelLoadError naming the file, what it was read as, and the cause (chained, for debugging)."""
    from .config import ConfigError  # config.py is imported by everything; errors.py by config's users

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(path, *args, **kwargs):
            try:
                return fn(path, *args, **kwargs)
            except (ModelLoadError, ConfigError):
                raise
            except OSError as e:
                raise ModelLoadError(f"{path}: cannot be read as {what}: {e.strerror or one_line(e)}") from e
            except Exception as e:
                raise CorruptFileError(
                    f"{path} cannot be read as {what} ({type(e).__name__}: {one_line(e)}): it is corrupted or was "
                    f"not written by NeMo; re-download it, or re-export/re-save it with NeMo"
                ) from e

        return wrapper

    return decorate
