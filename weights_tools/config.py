"""The model configuration: frozen, validated dataclasses parsed once from a model (ONNX export or .nemo).

Field names follow NeMo's config keys (``d_model``, ``n_heads``, ``att_context_size``, ``conv_norm_type`` ...)
so one word finds both codebases. Nothing here is guessed from magic numbers: every value is read from the
model, or is NeMo's documented default and says so in ``source``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

AttContext = tuple  # (left, right) in encoder frames, e.g. (70, 13)


class ConfigError(ValueError):
    """A configuration that NeMo could not have produced, or that refimpl cannot run."""


# ConformerConvolution's norm: NeMo's conv_norm_type, or its BatchNorm folded into the depthwise conv (as ONNX
# exports carry it)
CONV_NORM_TYPES = ("layer_norm", "batch_norm", "folded_batch_norm")


def conv_norm_error(norm_type) -> ConfigError:
    return ConfigError(f"conv_norm_type {norm_type!r} is not supported ({', '.join(CONV_NORM_TYPES)})")


def _check(cond: bool, msg: str):
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class PreprocessorConfig:
    """NeMo ``AudioToMelSpectrogramPreprocessor`` / ``FilterbankFeatures`` settings (window sizes in samples)."""

    sample_rate: int = 16000
    features: int = 80
    n_window_size: int = 400  # window_size 0.025 s
    n_window_stride: int = 160  # window_stride 0.01 s
    n_fft: int = 512
    window: str = "hann"
    preemph: float | None = 0.97
    lowfreq: float = 0.0
    highfreq: float | None = None  # None -> sample_rate / 2
    log: bool = True
    log_zero_guard_type: str = "add"
    log_zero_guard_value: float = 2.0**-24
    mag_power: float = 2.0
    mel_norm: str | None = "slaney"
    normalize: str = "NA"
    dither: float = 1e-5  # training only; inference runs without dither
    pad_to: int = 0
    pad_value: float = 0.0
    exact_pad: bool = False
    frame_splicing: int = 1
    source: str = "NeMo defaults for cache-aware streaming FastConformer (the ONNX graphs hold no preprocessor)"

    def __post_init__(self):
        _check(self.sample_rate > 0, f"sample_rate must be positive, got {self.sample_rate}")
        _check(
            0 < self.n_window_size <= self.n_fft,
            f"n_window_size ({self.n_window_size}) must be in 1..n_fft ({self.n_fft})",
        )
        _check(self.n_window_stride > 0, f"n_window_stride must be positive, got {self.n_window_stride}")
        _check(
            self.window in ("hann", "hamming", "blackman", "bartlett", "ones", "none"),
            f"unknown window {self.window!r}",
        )
        _check(
            self.log_zero_guard_type in ("add", "clamp"),
            f"log_zero_guard_type must be 'add' or 'clamp', got {self.log_zero_guard_type!r}",
        )


@dataclass(frozen=True)
class EncoderConfig:
    """``ConformerEncoder`` with cache-aware streaming (``att_context_style: chunked_limited``)."""

    feat_in: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    conv_kernel_size: int
    conv_context_size: tuple  # (left, right); causal = (kernel-1, 0)
    conv_norm_type: str  # "layer_norm" | "batch_norm" | "folded_batch_norm" (BatchNorm folded into depthwise conv)
    subsampling: str  # "dw_striding"
    subsampling_factor: int
    subsampling_conv_channels: int
    causal_downsampling: bool
    att_context_size: AttContext  # the look-ahead this encoder serves (an ONNX file serves exactly one)
    att_context_sizes: tuple | None  # every look-ahead the model was trained with; None = not known
    att_context_style: str = "chunked_limited"
    self_attention_model: str = "rel_pos"
    xscaling: bool = True
    pos_emb_max_len: int = 5000
    untie_biases: bool = True
    use_bias: bool = True
    has_cache_io: bool = True  # False: an ONNX encoder exported without cache support (cannot stream)

    @property
    def d_k(self) -> int:
        return self.d_model // self.n_heads

    @property
    def cache_last_channel_size(self) -> int:
        """Rows of ``cache_last_channel`` = left attention context."""
        return self.att_context_size[0]

    @property
    def cache_last_time_size(self) -> int:
        """Columns of ``cache_last_time`` = left context of the causal depthwise conv."""
        return self.conv_context_size[0]

    def __post_init__(self):
        _check(
            self.d_model > 0 and self.n_layers > 0,
            f"d_model/n_layers must be positive ({self.d_model}, {self.n_layers})",
        )
        _check(
            self.n_heads > 0 and self.d_model % self.n_heads == 0,
            f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})",
        )
        left, right = self.conv_context_size
        _check(
            left + right + 1 == self.conv_kernel_size,
            f"conv_context_size {self.conv_context_size} does not fit conv_kernel_size {self.conv_kernel_size}",
        )
        if self.conv_norm_type not in CONV_NORM_TYPES:
            raise conv_norm_error(self.conv_norm_type)
        _check(self.subsampling == "dw_striding", f"subsampling {self.subsampling!r} is not supported (dw_striding)")
        f = self.subsampling_factor
        _check(f >= 2 and f & (f - 1) == 0, f"subsampling_factor must be a power of 2, got {f}")
        _check(
            self.self_attention_model == "rel_pos",
            f"self_attention_model {self.self_attention_model!r} is not supported (rel_pos)",
        )
        _check(
            self.att_context_style == "chunked_limited",
            f"att_context_style {self.att_context_style!r} is not supported (chunked_limited)",
        )
        L, R = self.att_context_size
        _check(L > 0 and R >= 0, f"att_context_size must be [left > 0, right >= 0], got {list(self.att_context_size)}")
        if self.att_context_sizes is not None:
            _check(
                tuple(self.att_context_size) in [tuple(a) for a in self.att_context_sizes],
                f"att_context_size {list(self.att_context_size)} is not among the model's look-aheads "
                f"{[list(a) for a in self.att_context_sizes]}",
            )


@dataclass(frozen=True)
class RNNTConfig:
    """``RNNTDecoder`` (LSTM prediction network) + ``RNNTJoint`` and greedy decoding."""

    vocab_size: int  # SentencePiece pieces, without blank
    pred_hidden: int
    pred_rnn_layers: int
    joint_hidden: int
    max_symbols: int = 10

    @property
    def blank_id(self) -> int:
        return self.vocab_size

    def __post_init__(self):
        _check(
            self.vocab_size > 0 and self.pred_hidden > 0 and self.pred_rnn_layers > 0 and self.joint_hidden > 0,
            f"invalid RNNT sizes {self}",
        )
        _check(self.max_symbols > 0, f"max_symbols must be positive, got {self.max_symbols}")


# Where a model's CTC head (``ConvASRDecoder``) lives in its state_dict: ``ctc_decoder`` in a hybrid RNNT + CTC
# model (``decoder`` is its RNNT prediction network there), ``decoder`` in a CTC-only model
# (``EncDecCTCModelBPE``).
CTC_MODULES = ("ctc_decoder", "decoder")


@dataclass(frozen=True)
class CTCConfig:
    """``ConvASRDecoder`` (1x1 conv + log_softmax), greedy CTC. ``module``: the state_dict prefix of its weights
    (``<module>.decoder_layers.0.weight``), named by the loader from the model, never guessed later."""

    vocab_size: int
    module: str = "ctc_decoder"

    @property
    def blank_id(self) -> int:
        return self.vocab_size

    def __post_init__(self):
        _check(self.vocab_size > 0, f"invalid CTC vocabulary size {self.vocab_size}")
        _check(
            self.module in CTC_MODULES,
            f"the CTC head's weights are under {self.module!r}, expected one of {CTC_MODULES} "
            f"(ctc_decoder in hybrid models, decoder in CTC-only ones)",
        )


@dataclass(frozen=True)
class ModelConfig:
    preprocessor: PreprocessorConfig
    encoder: EncoderConfig
    rnnt: RNNTConfig | None
    ctc: CTCConfig | None
    source: str  # e.g. "onnx:path/to/dir" or "nemo:path/to/model.nemo"
    tokenizer_model: bytes | None = field(default=None, repr=False, compare=False)  # SentencePiece proto

    @property
    def heads(self) -> tuple:
        """The decoding heads the model has, by name: "rnnt" (prediction network + joint) and/or "ctc"."""
        return tuple(h for h in ("rnnt", "ctc") if getattr(self, h) is not None)

    @property
    def vocab_size(self) -> int:
        head = self.rnnt if self.rnnt is not None else self.ctc
        assert head is not None  # __post_init__ refuses a model without heads
        return head.vocab_size

    @property
    def blank_id(self) -> int:
        return self.vocab_size

    def __post_init__(self):
        _check(self.rnnt is not None or self.ctc is not None, "the model has neither an RNNT nor a CTC head")
        _check(
            self.rnnt is None or self.ctc is None or self.ctc.module != "decoder",
            "a model with an RNNT head keeps its prediction network under 'decoder': its CTC head must be "
            "'ctc_decoder' (NeMo's hybrid models), not 'decoder'",
        )
        if self.rnnt is not None and self.ctc is not None:
            _check(
                self.rnnt.vocab_size == self.ctc.vocab_size,
                f"RNNT vocab ({self.rnnt.vocab_size}) and CTC vocab ({self.ctc.vocab_size}) differ",
            )
        _check(
            self.encoder.feat_in == self.preprocessor.features,
            f"encoder feat_in ({self.encoder.feat_in}) != preprocessor features ({self.preprocessor.features})",
        )

    def with_att_context_size(self, att_context_size) -> ModelConfig:
        """The same model run at another look-ahead (refimpl computes its masks, so one set of weights serves
        every look-ahead the model was trained with)."""
        enc = dataclasses.replace(self.encoder, att_context_size=tuple(int(a) for a in att_context_size))
        return dataclasses.replace(self, encoder=enc)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("tokenizer_model", None)
        d["has_tokenizer"] = self.tokenizer_model is not None
        d["vocab_size"] = self.vocab_size
        d["blank_id"] = self.blank_id
        return d
