"""``model_config.yaml`` of a .nemo -> ModelConfig. Keys the YAML leaves out take the defaults of NeMo's own
classes (AudioToMelSpectrogramPreprocessor, ConformerEncoder), which are spelled out here."""

from __future__ import annotations

import re

import numpy as np
import yaml

from .config import CTCConfig, EncoderConfig, ModelConfig, PreprocessorConfig, RNNTConfig
from .errors import ModelLoadError

# AudioToMelSpectrogramPreprocessor.__init__ defaults (NeMo 3.0)
PREPROCESSOR_DEFAULTS = dict(
    sample_rate=16000,
    window_size=0.02,
    window_stride=0.01,
    n_window_size=None,
    n_window_stride=None,
    window="hann",
    normalize="per_feature",
    n_fft=None,
    preemph=0.97,
    features=64,
    lowfreq=0,
    highfreq=None,
    log=True,
    log_zero_guard_type="add",
    log_zero_guard_value=2**-24,
    dither=1e-5,
    pad_to=16,
    frame_splicing=1,
    exact_pad=False,
    pad_value=0,
    mag_power=2.0,
    mel_norm="slaney",
)
# ConformerEncoder.__init__ defaults (NeMo 3.0) for the keys refimpl reads
ENCODER_DEFAULTS = dict(
    causal_downsampling=False,
    subsampling="striding",
    subsampling_factor=4,
    subsampling_conv_channels=-1,
    ff_expansion_factor=4,
    self_attention_model="rel_pos",
    n_heads=4,
    att_context_size=None,
    att_context_style="regular",
    xscaling=True,
    untie_biases=True,
    pos_emb_max_len=5000,
    conv_kernel_size=31,
    conv_norm_type="batch_norm",
    conv_context_size=None,
    use_bias=True,
)
_INTERP = re.compile(r"\$\{([^}]+)\}")


def parse_yaml(text: str, where: str) -> dict:
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ModelLoadError(f"{where}: model_config.yaml is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{where}: model_config.yaml holds a {type(cfg).__name__}, expected a mapping")
    return _resolve(cfg, cfg, where)


def _resolve(node, root: dict, where: str, depth: int = 0):
    """Resolve OmegaConf ``${a.b.c}`` references to other keys (absolute paths only)."""
    if depth > 20:
        raise ModelLoadError(f"{where}: model_config.yaml interpolations nest too deeply (a cycle?)")
    if isinstance(node, dict):
        return {k: _resolve(v, root, where, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, where, depth) for v in node]
    if isinstance(node, str) and "${" in node:
        whole = _INTERP.fullmatch(node.strip())
        if whole:
            return _resolve(_lookup(root, whole.group(1), where), root, where, depth + 1)
        return _INTERP.sub(lambda m: str(_resolve(_lookup(root, m.group(1), where), root, where, depth + 1)), node)
    return node


def _lookup(root: dict, path: str, where: str):
    node = root
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ModelLoadError(
                f"{where}: model_config.yaml refers to ${{{path}}}, which this reader cannot "
                f"resolve (only references to other keys are supported)"
            )
        node = node[part]
    return node


def model_config(cfg: dict, where: str, tokenizer_model: bytes | None) -> ModelConfig:
    enc = encoder_config(_section(cfg, "encoder", where), where)
    rnnt, ctc = _heads(cfg, where)
    return ModelConfig(
        preprocessor=preprocessor_config(_section(cfg, "preprocessor", where), where),
        encoder=enc,
        rnnt=rnnt,
        ctc=ctc,
        source=f"nemo:{where}",
        tokenizer_model=tokenizer_model,
    )


def _section(cfg: dict, key: str, where: str) -> dict:
    if not isinstance(cfg.get(key), dict):
        raise ModelLoadError(f"{where}: model_config.yaml has no '{key}' section (found {sorted(cfg)})")
    return cfg[key]


def preprocessor_config(c: dict, where: str) -> PreprocessorConfig:
    v = {**PREPROCESSOR_DEFAULTS, **{k: c[k] for k in c if k in PREPROCESSOR_DEFAULTS}}
    sr = int(v["sample_rate"])
    win = int(v["window_size"] * sr) if v["window_size"] else int(v["n_window_size"])
    hop = int(v["window_stride"] * sr) if v["window_stride"] else int(v["n_window_stride"])
    n_fft = int(v["n_fft"]) if v["n_fft"] else 2 ** int(np.ceil(np.log2(win)))
    guard = v["log_zero_guard_value"]
    if isinstance(guard, str):  # NeMo accepts "tiny" / "eps" of float32
        if guard not in ("tiny", "eps"):
            raise ModelLoadError(
                f"{where}: preprocessor.log_zero_guard_value {guard!r} is not a number, 'tiny' or 'eps'"
            )
        guard = float(getattr(np.finfo(np.float32), guard))
    return PreprocessorConfig(
        sample_rate=sr,
        features=int(v["features"]),
        n_window_size=win,
        n_window_stride=hop,
        n_fft=n_fft,
        window=str(v["window"]),
        preemph=v["preemph"],
        lowfreq=float(v["lowfreq"] or 0),
        highfreq=None if v["highfreq"] is None else float(v["highfreq"]),
        log=bool(v["log"]),
        log_zero_guard_type=str(v["log_zero_guard_type"]),
        log_zero_guard_value=float(guard),
        mag_power=float(v["mag_power"]),
        mel_norm=v["mel_norm"],
        normalize=str(v["normalize"]),
        dither=float(v["dither"]),
        pad_to=int(v["pad_to"]),
        pad_value=float(v["pad_value"]),
        exact_pad=bool(v["exact_pad"]),
        frame_splicing=int(v["frame_splicing"]),
        source=f"{where}: model_config.yaml 'preprocessor' (NeMo's AudioToMelSpectrogramPreprocessor defaults for "
        f"keys it leaves out)",
    )


def att_context_list(value) -> list[tuple]:
    """NeMo's att_context_size: one [L, R] or a list of them -> list of (L, R)."""
    if not value:
        return [(-1, -1)]
    if isinstance(value[0], int):
        value = [value]
    return [tuple(int(x) for x in a) for a in value]


def encoder_config(c: dict, where: str) -> EncoderConfig:
    v = {**ENCODER_DEFAULTS, **c}
    for key in ("feat_in", "n_layers", "d_model"):
        if key not in c:
            raise ModelLoadError(f"{where}: model_config.yaml encoder has no '{key}'")
    d_model, k = int(v["d_model"]), int(v["conv_kernel_size"])
    ctx = v["conv_context_size"]
    if ctx is None:
        ctx = ((k - 1) // 2, (k - 1) // 2)
    elif ctx == "causal":
        ctx = (k - 1, 0)
    att = att_context_list(v["att_context_size"])
    channels = int(v["subsampling_conv_channels"])
    return EncoderConfig(
        feat_in=int(v["feat_in"]),
        d_model=d_model,
        n_layers=int(v["n_layers"]),
        n_heads=int(v["n_heads"]),
        d_ff=int(d_model * v["ff_expansion_factor"]),
        conv_kernel_size=k,
        conv_context_size=tuple(int(x) for x in ctx),
        conv_norm_type=str(v["conv_norm_type"]),
        subsampling=str(v["subsampling"]),
        subsampling_factor=int(v["subsampling_factor"]),
        subsampling_conv_channels=d_model if channels == -1 else channels,
        causal_downsampling=bool(v["causal_downsampling"]),
        att_context_size=att[0],
        att_context_sizes=tuple(att),
        att_context_style=str(v["att_context_style"]),
        self_attention_model=str(v["self_attention_model"]),
        xscaling=bool(v["xscaling"]),
        pos_emb_max_len=int(v["pos_emb_max_len"]),
        untie_biases=bool(v["untie_biases"]),
        use_bias=bool(v["use_bias"]),
    )


def _heads(cfg: dict, where: str):
    """RNNT from decoder/joint (hybrid or RNNT models), CTC from aux_ctc.decoder (hybrid) or decoder (CTC-only)."""
    dec = cfg.get("decoder") or {}
    rnnt = ctc = None
    if "RNNTDecoder" in str(dec.get("_target_", "")):
        joint = _section(cfg, "joint", where)
        prednet, jointnet = dec.get("prednet") or {}, joint.get("jointnet") or {}
        vocab = dec.get("vocab_size", joint.get("num_classes"))
        max_symbols = ((cfg.get("decoding") or {}).get("greedy") or {}).get("max_symbols") or 10
        rnnt = RNNTConfig(
            vocab_size=int(vocab),
            pred_hidden=int(prednet["pred_hidden"]),
            pred_rnn_layers=int(prednet.get("pred_rnn_layers", 1)),
            joint_hidden=int(jointnet["joint_hidden"]),
            max_symbols=int(max_symbols),
        )
        ctc_dec = ((cfg.get("aux_ctc") or {}).get("decoder")) or None
    else:
        ctc_dec = dec
    if ctc_dec and "ConvASRDecoder" in str(ctc_dec.get("_target_", "")):
        n = ctc_dec.get("num_classes", -1)
        ctc = CTCConfig(
            vocab_size=int(n) if n and n > 0 else len(ctc_dec.get("vocabulary") or []),
            module="ctc_decoder" if rnnt is not None else "decoder",  # aux_ctc.decoder of a hybrid, else decoder
        )
    if rnnt is None and ctc is None:
        raise ModelLoadError(
            f"{where}: neither an RNNT decoder nor a CTC decoder found in model_config.yaml "
            f"(decoder._target_ = {dec.get('_target_')!r})"
        )
    return rnnt, ctc
