"""Audio in, features out: a file or a waveform becomes NeMo's log-mel, with the checkpoint's own filterbank
and window when the weights carry them (a .nemo does; ONNX graphs hold no preprocessor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from weights_tools import ModelConfig

from ..model.audio import as_audio, load_audio
from ..model.preprocessing import log_mel


def featurizer_of(weights: dict | None) -> dict | None:
    """The checkpoint's ``preprocessor.featurizer`` arrays (``fb``, ``window``) when the weights hold them."""
    return (weights or {}).get("preprocessor", {}).get("featurizer")


def features(
    audio, config: ModelConfig, featurizer: dict | None = None, *, legacy: bool = False, notices: list | None = None
) -> tuple:
    """(log-mel [1, feat_in, F] float32, seconds of audio) of a file path or a 1-D float waveform.
    ``featurizer``: the checkpoint's filterbank and window (``featurizer_of(weights)``), else refimpl's own."""
    x = (
        load_audio(audio, sample_rate=config.preprocessor.sample_rate, notices=notices)
        if isinstance(audio, (str, Path))
        else as_audio(audio, notices=notices)
    )
    feat = featurizer or {}
    mel, _ = log_mel(x, None, config.preprocessor, fb=feat.get("fb"), window=feat.get("window"), legacy=legacy)
    return np.asarray(mel, np.float32), len(x) / config.preprocessor.sample_rate
